#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "m2n2/interactive/threshold_scoring.hpp"

using namespace m2n2;

// Brute force: for each k, the segment = first k+1 pixels in stable order; the
// boundary = pixels outside with a 4-neighbour inside; edge = mean of G there.
TEST(ThresholdScoring, CurveMatchesBruteForce) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> u(0, 6);  // many ties on purpose
  cv::Mat d(7, 9, CV_32F);
  for (int y = 0; y < d.rows; ++y)
    for (int x = 0; x < d.cols; ++x) d.at<float>(y, x) = u(rng) / 6.0f;
  const cv::Mat G = integer_sobel(d, 1024);
  const auto c = threshold_curve(d, 1024);
  const int P = d.rows * d.cols;
  ASSERT_EQ(static_cast<int>(c.thresholds.size()), P - 1);
  std::vector<int> order(P);
  std::iota(order.begin(), order.end(), 0);
  const float* dv = d.ptr<float>();
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return dv[a] < dv[b]; });
  for (int k = 0; k < P - 1; ++k) {
    std::vector<char> in(P, 0);
    for (int i = 0; i <= k; ++i) in[order[i]] = 1;
    int64_t sum = 0, len = 0;
    for (int p = 0; p < P; ++p) {
      if (in[p]) continue;
      const int y = p / d.cols, x = p % d.cols;
      const bool b = (y > 0 && in[p - d.cols]) || (y + 1 < d.rows && in[p + d.cols]) || (x > 0 && in[p - 1]) ||
                     (x + 1 < d.cols && in[p + 1]);
      if (b) {
        sum += G.ptr<int>()[p];
        ++len;
      }
    }
    EXPECT_FLOAT_EQ(c.thresholds[k], dv[order[k]]);
    EXPECT_FLOAT_EQ(c.edge[k], static_cast<float>(sum) / static_cast<float>(len)) << k;
  }
}

TEST(ThresholdScoring, IntegerSobelOfARamp) {
  // d = x on a 3×4 ramp: interior |Gx| = 8, borders (reflect) smaller.
  cv::Mat d(3, 4, CV_32F);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x) d.at<float>(y, x) = static_cast<float>(x);
  const cv::Mat G = integer_sobel(d, 1024);
  EXPECT_EQ(G.at<int>(1, 1), 1024);
  EXPECT_EQ(G.at<int>(1, 2), 1024);
  EXPECT_EQ(G.at<int>(1, 0), 0);  // reflect: d(-1) = d(1)
}

// A disk of low distance in a far background: the best threshold lies on the disk's
// edge (the ring just inside the jump scores as high as the jump itself), a negative
// click caps it, and the area prior forbids large segments.
TEST(ThresholdScoring, PicksTheStrongestBoundary) {
  cv::Mat d(40, 40, CV_32F);
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 40; ++x) {
      const float r = std::hypot(x - 20.0f, y - 20.0f);
      d.at<float>(y, x) = r < 8 ? r / 80.0f : 0.5f + r / 100.0f;
    }
  const auto c = threshold_curve(d, 1024);
  ScoringParams p;
  const auto ch = choose_threshold(c, {0.0f}, {}, 1.0f, p);
  const int inside = cv::countNonZero(d <= ch.threshold);
  int disk = 0;
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 40; ++x) disk += std::hypot(x - 20.0f, y - 20.0f) < 8;
  EXPECT_LE(inside, disk);
  EXPECT_GE(inside, disk * 8 / 10);
  // A negative click at distance 0.05 caps the threshold below it.
  const auto ch2 = choose_threshold(c, {0.0f}, {0.05f}, 1.0f, p);
  EXPECT_LT(ch2.threshold, 0.05f);
  // The area prior forbids segments over max_area of the image.
  p.max_area = 0.01f;
  const auto ch3 = choose_threshold(c, {0.0f}, {}, 1.0f, p);
  EXPECT_LE(cv::countNonZero(d <= ch3.threshold), 16);
}
