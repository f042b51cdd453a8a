#include "m2n2/interactive/threshold_scoring.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "m2n2/core/error.hpp"
#include "core/stable_order.hpp"

namespace m2n2 {

cv::Mat integer_sobel(const cv::Mat& d, int q) {
  CV_Assert(d.type() == CV_32F);
  const int H = d.rows, W = d.cols;
  auto refl = [](int i, int n) {
    if (n == 1) return 0;
    if (i < 0) return -i;
    if (i >= n) return 2 * n - 2 - i;
    return i;
  };
  cv::Mat g(H, W, CV_32F);
  float gmax = 0;
  for (int y = 0; y < H; ++y) {
    const float* r0 = d.ptr<float>(refl(y - 1, H));
    const float* r1 = d.ptr<float>(y);
    const float* r2 = d.ptr<float>(refl(y + 1, H));
    float* o = g.ptr<float>(y);
    for (int x = 0; x < W; ++x) {
      const int xm = refl(x - 1, W), xp = refl(x + 1, W);
      const float gx = (r0[xm] - r0[xp]) + 2.0f * (r1[xm] - r1[xp]) + (r2[xm] - r2[xp]);
      const float gy = (r0[xm] + 2.0f * r0[x] + r0[xp]) - (r2[xm] + 2.0f * r2[x] + r2[xp]);
      o[x] = std::sqrt(gx * gx + gy * gy);
      gmax = std::max(gmax, o[x]);
    }
  }
  cv::Mat out(H, W, CV_32S);
  for (int y = 0; y < H; ++y) {
    const float* gi = g.ptr<float>(y);
    int* o = out.ptr<int>(y);
    for (int x = 0; x < W; ++x) o[x] = gmax > 0 ? static_cast<int>((gi[x] / gmax) * static_cast<float>(q)) : 0;
  }
  return out;
}

ThresholdCurve threshold_curve(const cv::Mat& d, int quantization) {
  CV_Assert(d.type() == CV_32F && d.isContinuous());
  const int H = d.rows, W = d.cols;
  const int P = H * W;
  ThresholdCurve c;
  if (P < 2) return c;
  const cv::Mat G = integer_sobel(d, quantization);
  const float* dv = d.ptr<float>();
  const int* gv = G.ptr<int>();
  const std::vector<int> order = detail::stable_order(dv, P);
  // state: 0 = outside, 1 = on the boundary, 2 = inside the segment
  std::vector<uint8_t> state(P, 0);
  int64_t sum = 0, len = 0;
  c.thresholds.resize(P - 1);
  c.edge.resize(P - 1);
  for (int k = 0; k < P - 1; ++k) {
    const int p = order[k];
    if (state[p] == 1) {
      sum -= gv[p];
      --len;
    }
    state[p] = 2;
    const int y = p / W, x = p - y * W;
    const int nb[4] = {y > 0 ? p - W : -1, y + 1 < H ? p + W : -1, x > 0 ? p - 1 : -1, x + 1 < W ? p + 1 : -1};
    for (int n : nb) {
      if (n >= 0 && state[n] == 0) {
        state[n] = 1;
        sum += gv[n];
        ++len;
      }
    }
    c.thresholds[k] = dv[p];
    // The reference divides int64 sums in float32 (torch true division).
    c.edge[k] = len > 0 ? static_cast<float>(sum) / static_cast<float>(len) : 0.0f;
  }
  return c;
}

ThresholdChoice choose_threshold(const ThresholdCurve& curve, const std::vector<float>& same,
                                 const std::vector<float>& opposite, float max_distance, const ScoringParams& p) {
  const int n = static_cast<int>(curve.thresholds.size());
  ThresholdChoice best;
  if (n == 0) return best;
  float neg_min = max_distance;
  for (float v : opposite) neg_min = std::min(neg_min, v);
  // torch.linspace(0, 1, n) in float32, compared with 0.4 as float32.
  const float step = n > 1 ? 1.0f / static_cast<float>(n - 1) : 0.0f;
  const int half = n / 2;
  const float max_area = p.max_area;
  // Distances at same-label clicks, sorted, to count how many are <= t_k.
  std::vector<float> sv = same;
  std::sort(sv.begin(), sv.end());
  size_t included = 0;
  float best_score = -1.0f;
  // Every score is >= 0, so after k = 0 a score of 0 never wins (first maximum).
  // Thresholds ascend and the prior's ramp rises within each half, so once the
  // negative factor or the prior is 0 it stays 0 to the end (or to the half):
  // those stretches are skipped with the same result.
  for (int k = 0; k < n; ++k) {
    const float t = curve.thresholds[k];
    if (k > 0 && p.use_neg && !(t < neg_min)) break;
    float score = 1.0f;
    if (p.use_prior) {
      const float lin = k < half ? step * static_cast<float>(k) : 1.0f - step * static_cast<float>(n - k - 1);
      if (k > 0 && !(lin < max_area)) {
        if (k >= half) break;
        k = half - 1;
        continue;
      }
      score *= (lin < max_area) ? 1.0f : 0.0f;
    }
    if (p.use_edge) score *= curve.edge[k];
    if (p.use_pos) {
      while (included < sv.size() && sv[included] <= t) ++included;
      score *= sv.empty() ? 0.0f : static_cast<float>(included) / static_cast<float>(sv.size());
    }
    if (p.use_neg) score *= (t < neg_min) ? 1.0f : 0.0f;
    if (score > best_score) {  // first maximum, like torch.argmax
      best_score = score;
      best.index = k;
    }
  }
  best.threshold = curve.thresholds[best.index];
  best.score = best_score;
  return best;
}

}  // namespace m2n2
