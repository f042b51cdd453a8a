#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/diffseg.hpp"
#include "m2n2/whole_image/hungarian.hpp"
#include "m2n2/whole_image/walk_ncut.hpp"
#include "test_util.hpp"

using namespace m2n2;

TEST(DiffSeg, SymmetricKlIsZeroOnIdenticalMapsAndSymmetric) {
  std::vector<float> x = {0.1f, 0.2f, 0.3f, 0.4f}, y = {0.4f, 0.3f, 0.2f, 0.1f};
  EXPECT_DOUBLE_EQ(symmetric_kl(x.data(), x.data(), 4), 0.0);
  EXPECT_DOUBLE_EQ(symmetric_kl(x.data(), y.data(), 4), symmetric_kl(y.data(), x.data(), 4));
  // ½Σ(x−y)(log x − log y) by hand
  double want = 0;
  for (int i = 0; i < 4; ++i) {
    const double a = x[i], b = y[i];
    want += 0.5 * (a - b) * (std::log(a) - std::log(b));
  }
  EXPECT_NEAR(symmetric_kl(x.data(), y.data(), 4), want, 1e-12);
}

TEST(DiffSeg, AnchorGridAndResolutionWeights) {
  const auto c = anchor_coordinates(16, 64);
  ASSERT_EQ(c.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(c[i], 1 + 4 * i);
  const auto c8 = anchor_coordinates(8, 64);
  EXPECT_EQ(c8.front(), 0);
  EXPECT_EQ(c8[1], 9);
  EXPECT_EQ(c8.back(), 63);
  const auto w = resolution_weights({64, 32, 16, 8});
  EXPECT_DOUBLE_EQ(w[0], 8.0 / 15);
  EXPECT_DOUBLE_EQ(w[1], 4.0 / 15);
  EXPECT_DOUBLE_EQ(w[2], 2.0 / 15);
  EXPECT_DOUBLE_EQ(w[3], 1.0 / 15);
}

TEST(DiffSeg, GreedyMergeOnHandMadeMaps) {
  // Two near-identical maps and one different: the first two merge (in order).
  std::vector<std::vector<float>> L = {{0.7f, 0.1f, 0.1f, 0.1f}, {0.68f, 0.12f, 0.1f, 0.1f}, {0.1f, 0.1f, 0.1f, 0.7f}};
  const auto out = merge_proposals(L, 0.1);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NEAR(out[0][0], 0.69f, 1e-6);
  EXPECT_NEAR(out[1][3], 0.7f, 1e-6);
  // A huge threshold merges everything into the mean.
  const auto all = merge_proposals(L, 100.0);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_NEAR(all[0][3], 0.3f, 1e-6);
}

TEST(DiffSeg, AggregationKeepsRowsStochastic) {
  cv::Mat labels(64, 64, CV_8U, cv::Scalar(0));
  const cv::Mat img = test::paint(labels, {{100, 100, 100}}, 20.0);
  DefaultSourceSettings s;
  s.grid = 16;
  const Attention a = default_attention(img, s);
  const AttentionMap A = aggregate_resolutions(maps_by_resolution(a));
  EXPECT_EQ(A.h, 16);
  for (int64_t i = 0; i < A.tokens(); i += 17) {
    double sum = 0;
    for (int64_t j = 0; j < A.tokens(); ++j) sum += A.data[i * A.tokens() + j];
    EXPECT_NEAR(sum, 1.0, 1e-4);
  }
}

// Three diagonal blocks of uniform transitions: every cut inside a block has NCut 1,
// between blocks 0 — the recursion finds the blocks and stops there.
TEST(WalkNcut, RecoversBlocksOfABlockDiagonalMatrixAndStops) {
  const int sizes[3] = {10, 14, 8};
  const int n = 32;
  std::vector<float> P(static_cast<size_t>(n) * n, 0.0f);
  std::vector<int> block(n);
  int off = 0;
  for (int b = 0; b < 3; ++b) {
    for (int i = off; i < off + sizes[b]; ++i) {
      block[i] = b;
      for (int j = off; j < off + sizes[b]; ++j) P[static_cast<size_t>(i) * n + j] = 1.0f / sizes[b];
    }
    off += sizes[b];
  }
  // Shuffle the token order so that the blocks are not contiguous.
  std::vector<int> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(4));
  std::vector<float> Q(P.size());
  std::vector<int> qb(n);
  for (int i = 0; i < n; ++i) {
    qb[i] = block[perm[i]];
    for (int j = 0; j < n; ++j) Q[static_cast<size_t>(i) * n + j] = P[static_cast<size_t>(perm[i]) * n + perm[j]];
  }
  NcutParams p;
  p.power = 2;
  p.min_size = 2;
  const auto labels = recursive_rw_ncut(Q, n, p);
  int K = 0;
  for (int l : labels) K = std::max(K, l + 1);
  EXPECT_EQ(K, 3);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) EXPECT_EQ(labels[i] == labels[j], qb[i] == qb[j]) << i << "," << j;
  // The same with the hyperparameter-free policies.
  for (auto pol : {StopPolicy::Null, StopPolicy::Parent}) {
    p.policy = pol;
    const auto l2 = recursive_rw_ncut(Q, n, p);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) EXPECT_EQ(l2[i] == l2[j], qb[i] == qb[j]) << to_string(pol);
  }
}

// Eight tokens: X = {0..3} walk only to Y = {4..7} and back (with 0.1 to their own
// community on their side), twice as likely within the communities {0,1,4,5} and
// {2,3,6,7}. The transition graph cuts the flow: communities (NCut 0.645, worked out in
// NumPy). The similarity graph cuts the profiles: X rows all point at Y, Y rows at X, so
// X | Y (NCut 0.045 at alpha 1; at alpha 10 the two top eigenvalues are equal to 1e-14).
TEST(WalkNcut, TransitionAndSimilarityGraphsCutDifferently) {
  const int n = 8, comm[n] = {0, 0, 1, 1, 0, 0, 1, 1};
  std::vector<float> P(n * n, 0.0f);
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int j = 0; j < n; ++j) {
      const bool cross = (i < 4) != (j < 4);
      const double v = cross ? (comm[i] == comm[j] ? 2.0 : 1.0) : (comm[i] == comm[j] ? 0.1 : 0.0);
      P[i * n + j] = static_cast<float>(v);
      sum += v;
    }
    for (int j = 0; j < n; ++j) P[i * n + j] = static_cast<float>(P[i * n + j] / sum);
  }
  NcutParams p;
  p.power = 1;
  p.min_size = 1;
  p.max_depth = 1;
  p.policy = StopPolicy::Null;
  p.alpha = 1;
  const auto t = recursive_rw_ncut(P, n, p);
  p.graph = NcutGraph::Similarity;
  const auto s = recursive_rw_ncut(P, n, p);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      EXPECT_EQ(t[i] == t[j], comm[i] == comm[j]) << "transition " << i << "," << j;
      EXPECT_EQ(s[i] == s[j], (i < 4) == (j < 4)) << "similarity " << i << "," << j;
    }
  EXPECT_EQ(parse_ncut_graph("similarity"), NcutGraph::Similarity);
  EXPECT_THROW(parse_ncut_graph("features"), InvalidArgument);
}

TEST(Hungarian, ToyAssignmentsMatchScipy) {
  // scipy.optimize.linear_sum_assignment([[4,1,3],[2,0,5],[3,2,2]]) -> cols [1,0,2], cost 5
  const auto a = linear_sum_assignment({4, 1, 3, 2, 0, 5, 3, 2, 2}, 3, 3, false);
  EXPECT_EQ(a.cols, (std::vector<int>{1, 0, 2}));
  // maximize on a rectangular 2×3
  const auto b = linear_sum_assignment({1, 5, 2, 4, 6, 3}, 2, 3, true);
  EXPECT_EQ(b.cols, (std::vector<int>{1, 0}));
  // 3×2 (more rows than columns): each column gets the best row
  const auto c = linear_sum_assignment({1, 9, 8, 2, 7, 7}, 3, 2, true);
  EXPECT_EQ(c.rows, (std::vector<int>{0, 1}));
  EXPECT_EQ(c.cols, (std::vector<int>{1, 0}));
}

namespace {
// Three flat colour regions: left band, right-top, right-bottom.
cv::Mat three_regions(cv::Mat& labels) {
  labels = cv::Mat::zeros(96, 128, CV_8U);
  labels(cv::Rect(64, 0, 64, 48)).setTo(1);
  labels(cv::Rect(64, 48, 64, 48)).setTo(2);
  return test::paint(labels, {{200, 40, 40}, {40, 180, 60}, {40, 60, 200}});
}

// Best-match mIoU between a label map and the 3 GT regions.
double best_match_miou(const cv::Mat& pred16, const cv::Mat& gt) {
  int K = 0;
  for (int y = 0; y < pred16.rows; ++y)
    for (int x = 0; x < pred16.cols; ++x) K = std::max(K, static_cast<int>(pred16.at<uint16_t>(y, x)) + 1);
  const int cols = std::max(3, K);
  std::vector<double> inter(3 * cols, 0), gsum(3, 0), psum(cols, 0);
  for (int y = 0; y < gt.rows; ++y)
    for (int x = 0; x < gt.cols; ++x) {
      const int g = gt.at<uint8_t>(y, x), p = pred16.at<uint16_t>(y, x);
      inter[g * cols + p] += 1;
      gsum[g] += 1;
      psum[p] += 1;
    }
  const auto a = linear_sum_assignment(inter, 3, cols, true);
  double m = 0;
  for (size_t i = 0; i < a.rows.size(); ++i) {
    const double in = inter[a.rows[i] * cols + a.cols[i]];
    m += in / (gsum[a.rows[i]] + psum[a.cols[i]] - in);
  }
  return m / 3;
}
}  // namespace

// Both whole-image methods on three flat colour regions, with the default source as
// `m2n2 auto` configures it.
double three_region_miou(bool diffseg_method, int* segments) {
  cv::Mat gt;
  const cv::Mat img = three_regions(gt);
  const Attention a = default_attention(img, DefaultSourceSettings::parse(kWholeImageSettings));
  const AutoResult r = diffseg_method ? diffseg(a, img.rows, img.cols, DiffSegParams{})
                                      : walk_ncut(a, img.rows, img.cols, NcutParams{});
  *segments = r.segments;
  return best_match_miou(r.labels, gt);
}

TEST(AutoSegmentation, DiffSegRecoversThreeFlatRegions) {
  int k = 0;
  EXPECT_GE(three_region_miou(true, &k), 0.9) << "segments " << k;
}

TEST(AutoSegmentation, NcutRecoversThreeFlatRegions) {
  int k = 0;
  EXPECT_GE(three_region_miou(false, &k), 0.9) << "segments " << k;
}
