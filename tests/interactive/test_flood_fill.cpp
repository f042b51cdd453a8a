#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "m2n2/interactive/flood_fill.hpp"

using namespace m2n2;

TEST(FloodFill, HandMadeMap) {
  cv::Mat h = (cv::Mat_<float>(3, 3) << 0, 5, 1, 1, 9, 1, 2, 1, 1);
  cv::Mat out = minimax_flood_fill(h, {0, 0});
  cv::Mat want = (cv::Mat_<float>(3, 3) << 0, 5, 2, 1, 9, 2, 2, 2, 2);
  EXPECT_EQ(cv::countNonZero(out != want), 0) << out;
}

TEST(FloodFill, DifferencesAreRelativeToTheStart) {
  cv::Mat h = (cv::Mat_<float>(1, 5) << 0.2f, 0.5f, 0.6f, 0.1f, 0.9f);
  cv::Mat out = minimax_flood_fill(h, {2, 0});  // start value 0.6
  EXPECT_NEAR(out.at<float>(0, 0), 0.4f, 1e-6);  // path max(|0.5-0.6|, |0.2-0.6|)
  EXPECT_NEAR(out.at<float>(0, 1), 0.1f, 1e-6);
  EXPECT_NEAR(out.at<float>(0, 2), 0.0f, 1e-6);
  EXPECT_NEAR(out.at<float>(0, 3), 0.5f, 1e-6);
  EXPECT_NEAR(out.at<float>(0, 4), 0.5f, 1e-6);  // max(0.5, 0.3)
}

namespace {

// An independent fixpoint: relax every pixel from its neighbours until nothing changes.
cv::Mat brute_force_fixpoint(const cv::Mat& h, cv::Point s) {
  const float h0 = h.at<float>(s);
  cv::Mat ref(h.size(), CV_32F, cv::Scalar(1e9));
  ref.at<float>(s) = 0;
  bool changed = true;
  while (changed) {
    changed = false;
    for (int y = 0; y < h.rows; ++y)
      for (int x = 0; x < h.cols; ++x) {
        const int dy[4] = {-1, 1, 0, 0}, dx[4] = {0, 0, -1, 1};
        for (int k = 0; k < 4; ++k) {
          const int ny = y + dy[k], nx = x + dx[k];
          if (ny < 0 || nx < 0 || ny >= h.rows || nx >= h.cols) continue;
          const float v = std::max(ref.at<float>(ny, nx), std::fabs(h.at<float>(y, x) - h0));
          if (v < ref.at<float>(y, x)) {
            ref.at<float>(y, x) = v;
            changed = true;
          }
        }
      }
  }
  return ref;
}

}  // namespace

TEST(FloodFill, MatchesBruteForceFixpoint) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  cv::Mat h(9, 11, CV_32F);
  for (int y = 0; y < h.rows; ++y)
    for (int x = 0; x < h.cols; ++x) h.at<float>(y, x) = u(rng);
  const cv::Point s(4, 3);
  cv::Mat out = minimax_flood_fill(h, s);
  EXPECT_LE(cv::norm(out, brute_force_fixpoint(h, s), cv::NORM_INF), 1e-6);
}

// Larger maps whose values span many binary orders of magnitude (the heap's buckets)
// and repeat (ties): still the exact bottleneck values.
TEST(FloodFill, MatchesBruteForceOnWideRangesAndTies) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> expo(-30, 3);
  std::uniform_int_distribution<int> level(0, 7);
  for (int trial = 0; trial < 3; ++trial) {
    cv::Mat h(37, 53, CV_32F);
    for (int y = 0; y < h.rows; ++y)
      for (int x = 0; x < h.cols; ++x)
        h.at<float>(y, x) = trial == 1 ? level(rng) / 7.0f : std::ldexp(1.0f, static_cast<int>(expo(rng))) * (1 + level(rng));
    const cv::Point s(5 + 20 * trial, 11 + 9 * trial);
    cv::Mat out = minimax_flood_fill(h, s);
    EXPECT_EQ(cv::norm(out, brute_force_fixpoint(h, s), cv::NORM_INF), 0.0) << "trial " << trial;
  }
}
