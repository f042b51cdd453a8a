#include "m2n2/whole_image/diffseg.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include <opencv2/imgproc.hpp>

#include "libtorch/backend.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/interactive/upsampling.hpp"
#include "core/check.hpp"

namespace m2n2 {

std::vector<double> resolution_weights(const std::vector<int>& sides) {
  double total = 0;
  for (int s : sides) total += s;
  std::vector<double> w;
  for (int s : sides) w.push_back(s / total);
  return w;
}

std::vector<int> anchor_coordinates(int M, int R) {
  if (M < 2) return {(R - 1) / 2};
  const int seg = (R - 1) / (M - 1);
  const int total = seg * (M - 1);
  const int start = (R - 1 - total) / 2;
  std::vector<int> c;
  for (int i = 0; i < M; ++i) {
    // numpy.linspace(start, start+total, M) cast to int
    const double v = start + static_cast<double>(total) * i / (M - 1);
    c.push_back(static_cast<int>(v));
  }
  return c;
}

double symmetric_kl(const float* x, const float* y, int64_t n, double floor) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = std::max(static_cast<double>(x[i]), floor), b = std::max(static_cast<double>(y[i]), floor);
    s += (a - b) * (std::log(a) - std::log(b));
  }
  return 0.5 * s;
}

AttentionMap aggregate_resolutions(const std::vector<AttentionMap>& maps) {
  if (maps.empty()) throw Error("diffseg: no attention maps");
  if (maps.size() == 1) return maps[0];
  int R = 0;
  for (const auto& m : maps) {
    if (m.h != m.w) throw Error("diffseg: square token grids expected");
    R = std::max(R, m.h);
  }
  std::vector<int> sides;
  for (const auto& m : maps) sides.push_back(m.h);
  const auto weights = resolution_weights(sides);
  AttentionMap out;
  out.name = "aggregated";
  out.h = out.w = R;
  const int64_t N = static_cast<int64_t>(R) * R;
  out.data.assign(static_cast<size_t>(N * N), 0.0f);
  for (size_t k = 0; k < maps.size(); ++k) {
    const auto& m = maps[k];
    const int s = m.h;
    if (R % s) throw Error("diffseg: grid " + std::to_string(s) + " does not divide " + std::to_string(R));
    const int delta = R / s;
    const int64_t n = static_cast<int64_t>(s) * s;
    const float w = static_cast<float>(weights[k]);
    for (int64_t q = 0; q < n; ++q) {
      cv::Mat key(s, s, CV_32F, const_cast<float*>(m.data.data() + q * n));
      cv::Mat up = s == R ? key.clone() : upsample_bilinear(key, R, R);
      const double sum = cv::sum(up)[0];
      if (sum > 0) up /= sum;
      const int qy = static_cast<int>(q / s), qx = static_cast<int>(q % s);
      for (int dy = 0; dy < delta; ++dy)
        for (int dx = 0; dx < delta; ++dx) {
          const int64_t Q = static_cast<int64_t>(qy * delta + dy) * R + (qx * delta + dx);
          float* row = out.data.data() + Q * N;
          const float* u = up.ptr<float>();
          for (int64_t j = 0; j < N; ++j) row[j] += w * u[j];
        }
    }
  }
  return out;
}

std::vector<std::vector<float>> merge_proposals(const std::vector<std::vector<float>>& L, double threshold,
                                                double floor) {
  std::vector<std::vector<float>> out;
  std::vector<char> matched(L.size(), 0);
  for (size_t j = 0; j < L.size(); ++j) {
    if (matched[j]) continue;
    matched[j] = 1;
    std::vector<size_t> S;
    for (size_t k = 0; k < L.size(); ++k)
      if (symmetric_kl(L[j].data(), L[k].data(), static_cast<int64_t>(L[j].size()), floor) < threshold) S.push_back(k);
    for (size_t k : S) matched[k] = 1;
    if (S.empty()) continue;
    std::vector<double> acc(L[j].size(), 0.0);
    for (size_t k : S)
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += L[k][i];
    std::vector<float> mean(acc.size());
    for (size_t i = 0; i < acc.size(); ++i) mean[i] = static_cast<float>(acc[i] / S.size());
    out.push_back(std::move(mean));
  }
  return out;
}

KlPrecision parse_kl_precision(const std::string& s) {
  if (s == "fp16") return KlPrecision::Fp16;
  if (s == "fp32") return KlPrecision::Fp32;
  check::not_one_of("kl_precision", s, {"fp16", "fp32"});
}

std::string to_string(KlPrecision p) { return p == KlPrecision::Fp16 ? "fp16" : "fp32"; }

void check_params(const DiffSegParams& p) {
  check::in_range("anchors", p.anchors, 1, 64);
  if (p.kl_thresholds.empty()) throw InvalidArgument("kl_thresholds needs at least one value");
  for (double k : p.kl_thresholds) check::non_negative("kl_thresholds", k);
}

cv::Mat center_crop_resize(const cv::Mat& image, int size) {
  if (image.empty() || size < 1) throw InvalidArgument("center crop: empty image or size");
  const int c = std::min(image.rows, image.cols);
  const cv::Mat square = image(cv::Rect((image.cols - c) / 2, (image.rows - c) / 2, c, c));
  if (c == size) return square.clone();
  cv::Mat out;
  cv::resize(square, out, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  return out;
}

AutoResult diffseg(const Attention& att, int H, int W, const DiffSegParams& p) {
  check_params(p);
  auto levels = maps_by_resolution(att);
  AutoResult res;
  std::string used;
  for (const auto& l : levels) used += (used.empty() ? "" : ",") + l.name;
  res.meta["resolutions"] = used;
  res.meta["aggregation"] = levels.size() == 1 ? "single resolution (used alone)" : "weighted by side length";
  AttentionMap A = aggregate_resolutions(levels);
  const int R = A.h;
  const int64_t N = A.tokens();
  if (p.kl_thresholds.empty()) throw Error("diffseg: at least one KL threshold is needed");
  const auto coords = anchor_coordinates(p.anchors, R);
  std::vector<int64_t> anchor_idx;
  for (int y : coords)
    for (int x : coords) anchor_idx.push_back(static_cast<int64_t>(y) * A.w + x);

  // Iteration 0 (anchors against every token's map): the reference's float16, or
  // float32 in LibTorch's GEMM form.
  const bool fp16 = p.kl_precision == KlPrecision::Fp16;
  int64_t underflow = 0;
  const std::vector<float> P =
      fp16 ? diffseg_anchor_proposals_fp16(A.data.data(), N, anchor_idx, p.kl_thresholds[0], &underflow)
           : detail::torch_backend().diffseg_anchor_proposals(A.data.data(), N, anchor_idx, p.log_floor,
                                                               p.kl_thresholds[0]);
  res.meta["kl_precision"] = to_string(p.kl_precision);
  if (fp16) res.meta["fp16_underflow_maps"] = std::to_string(underflow) + " of " + std::to_string(N);
  // A NaN proposal matches nothing in iteration 1 (NaN < τ is false), so the reference
  // drops it there; it is dropped here at once.
  std::vector<std::vector<float>> props;
  for (size_t a = 0; a < anchor_idx.size(); ++a) {
    const float* r = P.data() + a * static_cast<size_t>(N);
    bool ok = true;
    for (int64_t j = 0; j < N && ok; ++j) ok = std::isfinite(r[j]);
    if (ok) props.emplace_back(r, r + N);
  }
  // Later iterations in float64 as the reference; with fp16 its logs are unclamped
  // (a proposal with a zero entry then matches nothing, as there).
  const double floor = fp16 ? 0.0 : p.log_floor;
  for (size_t it = 1; it < p.kl_thresholds.size(); ++it) props = merge_proposals(props, p.kl_thresholds[it], floor);
  // Upsample each proposal to the image and assign pixels by argmax.
  cv::Mat best(H, W, CV_32F, cv::Scalar(-1.0f));
  cv::Mat labels = cv::Mat::zeros(H, W, CV_16U);
  for (size_t k = 0; k < props.size(); ++k) {
    cv::Mat m(A.h, A.w, CV_32F, props[k].data());
    cv::Mat up = upsample_bilinear(m, H, W);
    for (int y = 0; y < H; ++y) {
      const float* u = up.ptr<float>(y);
      float* b = best.ptr<float>(y);
      uint16_t* l = labels.ptr<uint16_t>(y);
      for (int x = 0; x < W; ++x)
        if (u[x] > b[x]) {
          b[x] = u[x];
          l[x] = static_cast<uint16_t>(k);
        }
    }
  }
  // Raw: the proposal indices, gaps included (the reference). Compact: 0..K-1 in
  // order of first appearance of each used proposal.
  std::map<uint16_t, uint16_t> remap;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      uint16_t& l = labels.at<uint16_t>(y, x);
      auto it = remap.find(l);
      if (it == remap.end()) it = remap.emplace(l, static_cast<uint16_t>(remap.size())).first;
      if (!p.raw_labels) l = it->second;
    }
  res.meta["labels"] = p.raw_labels ? "raw" : "compact";
  res.labels = labels;
  res.segments = static_cast<int>(remap.size());
  res.meta["proposals"] = std::to_string(props.size());
  return res;
}

}  // namespace m2n2
