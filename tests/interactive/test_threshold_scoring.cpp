#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <opencv2/imgproc.hpp>

#include "m2n2/interactive/threshold_scoring.hpp"

using namespace m2n2;

namespace {

// Brute force: for each k, the segment = first k+1 pixels in stable order; the
// boundary = pixels outside with a 4-neighbour inside; edge = mean of G there.
void expect_curve_matches_brute_force(const cv::Mat& d) {
  const cv::Mat G = integer_sobel(d, 1024);
  const auto c = threshold_curve(d, 1024);
  const int P = d.rows * d.cols;
  ASSERT_EQ(static_cast<int>(c.thresholds.size()), P - 1);
  std::vector<int> order(P);
  std::iota(order.begin(), order.end(), 0);
  const float* dv = d.ptr<float>();
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return dv[a] < dv[b]; });
  std::vector<char> in(P, 0);
  for (int k = 0; k < P - 1; ++k) {
    in[order[k]] = 1;
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
    ASSERT_EQ(c.thresholds[k], dv[order[k]]) << k;
    ASSERT_EQ(c.edge[k], static_cast<float>(sum) / static_cast<float>(len)) << k;
  }
}

}  // namespace

TEST(ThresholdScoring, CurveMatchesBruteForce) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> u(0, 6);  // many ties on purpose
  cv::Mat d(7, 9, CV_32F);
  for (int y = 0; y < d.rows; ++y)
    for (int x = 0; x < d.cols; ++x) d.at<float>(y, x) = u(rng) / 6.0f;
  expect_curve_matches_brute_force(d);
}

// The pixels' order is a radix sort of the values' bits: negative values, -0 beside
// +0 (equal, so index order), tiny and large magnitudes all sort as operator< does.
TEST(ThresholdScoring, CurveOrderMatchesStableSortOnAnyFloats) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> expo(-40, 12);
  std::uniform_int_distribution<int> pick(0, 9);
  cv::Mat d(23, 31, CV_32F);
  for (int y = 0; y < d.rows; ++y)
    for (int x = 0; x < d.cols; ++x) {
      const int k = pick(rng);
      const float mag = std::ldexp(1.0f + pick(rng) / 10.0f, static_cast<int>(expo(rng)));
      d.at<float>(y, x) = k == 0 ? 0.0f : k == 1 ? -0.0f : k < 5 ? -mag : mag;
    }
  expect_curve_matches_brute_force(d);
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

// The scan stops where the negative clicks or the area prior make every later score
// 0; the choice must equal the full scan's (the reference's argmax over all k).
TEST(ThresholdScoring, ChoiceMatchesTheFullScan) {
  auto full_scan = [](const ThresholdCurve& c, std::vector<float> same, const std::vector<float>& opposite,
                      float max_distance, const ScoringParams& p) {
    const int n = static_cast<int>(c.thresholds.size());
    float neg_min = max_distance;
    for (float v : opposite) neg_min = std::min(neg_min, v);
    const float step = n > 1 ? 1.0f / static_cast<float>(n - 1) : 0.0f;
    std::sort(same.begin(), same.end());
    int best = 0;
    float best_score = -1.0f;
    for (int k = 0; k < n; ++k) {
      const float t = c.thresholds[k];
      const float lin = k < n / 2 ? step * static_cast<float>(k) : 1.0f - step * static_cast<float>(n - k - 1);
      const float prior = p.use_prior ? (lin < p.max_area ? 1.0f : 0.0f) : 1.0f;
      const float edge = p.use_edge ? c.edge[k] : 1.0f;
      size_t inc = 0;
      while (inc < same.size() && same[inc] <= t) ++inc;
      const float pos = p.use_pos ? (same.empty() ? 0.0f : static_cast<float>(inc) / same.size()) : 1.0f;
      const float neg = p.use_neg ? (t < neg_min ? 1.0f : 0.0f) : 1.0f;
      const float score = 1.0f * prior * edge * pos * neg;
      if (score > best_score) {
        best_score = score;
        best = k;
      }
    }
    return best;
  };
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> u(0, 1);
  int checked = 0;
  for (int trial = 0; trial < 60; ++trial) {
    cv::Mat small(5, 6, CV_32F), d;
    cv::randu(small, 0, 1);
    cv::resize(small, d, {37 + trial, 29}, 0, 0, trial % 2 ? cv::INTER_CUBIC : cv::INTER_NEAREST);
    const auto c = threshold_curve(d, 1024);
    ScoringParams p;
    p.max_area = trial % 3 == 0 ? 1.0f : trial % 3 == 1 ? 0.4f : 0.05f + 0.5f * u(rng);
    p.use_prior = trial % 7 != 1;
    p.use_neg = trial % 5 != 2;
    p.use_pos = trial % 11 != 3;
    std::vector<float> same{u(rng) * 0.3f}, opposite;
    for (int i = trial % 4; i > 0; --i) (i % 2 ? opposite : same).push_back(u(rng));
    const float max_distance = 0.5f + u(rng);
    const auto ch = choose_threshold(c, same, opposite, max_distance, p);
    const int want = full_scan(c, same, opposite, max_distance, p);
    EXPECT_EQ(ch.index, want) << "trial " << trial;
    EXPECT_EQ(ch.threshold, c.thresholds[want]);
    ++checked;
  }
  EXPECT_EQ(checked, 60);
}
