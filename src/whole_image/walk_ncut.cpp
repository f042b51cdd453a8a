#include "m2n2/whole_image/walk_ncut.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "libtorch/backend.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/interactive/upsampling.hpp"
#include "core/check.hpp"

namespace m2n2 {

StopPolicy parse_stop_policy(const std::string& s) {
  if (s == "constant") return StopPolicy::Constant;
  if (s == "null") return StopPolicy::Null;
  if (s == "sweep-mad") return StopPolicy::SweepMad;
  if (s == "parent") return StopPolicy::Parent;
  check::not_one_of("stop", s, {"constant", "null", "sweep-mad", "parent"});
}

NcutGraph parse_ncut_graph(const std::string& s) {
  if (s == "transition") return NcutGraph::Transition;
  if (s == "similarity") return NcutGraph::Similarity;
  check::not_one_of("graph", s, {"transition", "similarity"});
}

std::string to_string(NcutGraph g) { return g == NcutGraph::Transition ? "transition" : "similarity"; }

void check_params(const NcutParams& p) {
  check::in_range("power", p.power, 1, 1024);
  check::in_range("ncut.grid", p.grid, 1, 256);
  check::in_range("min_size", p.min_size, 1, 1 << 20);
  check::in_range("max_depth", p.max_depth, 0, 64);
  check::non_negative("tau", p.tau);
  check::in_interval("alpha", p.alpha, 0, true, 1000, false);
}

std::string to_string(StopPolicy p) {
  switch (p) {
    case StopPolicy::Constant: return "constant";
    case StopPolicy::Null: return "null";
    case StopPolicy::SweepMad: return "sweep-mad";
    case StopPolicy::Parent: return "parent";
  }
  return "?";
}

Bipartition rw_ncut_bipartition(const std::vector<double>& P, int n, int sweep) {
  return detail::torch_backend().rw_ncut_bipartition(P, n, sweep);
}

Bipartition graph_ncut_bipartition(const std::vector<double>& W, int n, int sweep) {
  return detail::torch_backend().graph_ncut_bipartition(W, n, sweep);
}

std::vector<int> recursive_rw_ncut(const std::vector<float>& Pf, int n, const NcutParams& p) {
  std::vector<double> walk = detail::torch_backend().power_walk(Pf, n, p.power);
  // The similarity graph is computed once over all tokens; a segment's graph is its
  // sub-matrix (DiffCut's painting of the excluded nodes), not re-scaled.
  const bool similarity = p.graph == NcutGraph::Similarity;
  if (similarity) walk = detail::torch_backend().cosine_affinity(walk, n, n, p.alpha);
  const double* pk = walk.data();
  std::vector<int> labels(n, 0);
  int next_label = 1;
  std::function<void(const std::vector<int>&, int, int, double)> rec = [&](const std::vector<int>& nodes, int label,
                                                                          int depth, double parent_ncut) {
    const int m = static_cast<int>(nodes.size());
    if (depth >= p.max_depth || m < 2 * std::max(1, p.min_size)) return;
    std::vector<double> sub(static_cast<size_t>(m) * m);
    for (int a = 0; a < m; ++a)
      for (int c = 0; c < m; ++c) sub[static_cast<size_t>(a) * m + c] = pk[static_cast<size_t>(nodes[a]) * n + nodes[c]];
    Bipartition b = similarity ? graph_ncut_bipartition(sub, m, p.sweep) : rw_ncut_bipartition(sub, m, p.sweep);
    if (b.side.empty()) return;
    std::vector<int> A, B;
    for (int a = 0; a < m; ++a) (b.side[a] ? A : B).push_back(nodes[a]);
    if (static_cast<int>(A.size()) < p.min_size || static_cast<int>(B.size()) < p.min_size) return;
    bool accept = false;
    switch (p.policy) {
      case StopPolicy::Constant: accept = b.ncut < p.tau; break;
      case StopPolicy::Null: accept = b.ncut < 1.0; break;
      case StopPolicy::Parent: accept = b.ncut < 1.0 && b.ncut <= parent_ncut; break;
      case StopPolicy::SweepMad: {
        std::vector<double> v;
        for (double x : b.sweep_ncut)
          if (x < 1e299) v.push_back(x);
        if (v.size() < 3) break;
        std::sort(v.begin(), v.end());
        const double med = v[v.size() / 2];
        std::vector<double> dev;
        for (double x : v) dev.push_back(std::fabs(x - med));
        std::sort(dev.begin(), dev.end());
        accept = b.ncut < med - dev[dev.size() / 2];
        break;
      }
    }
    if (!accept) return;
    const int other = next_label++;
    for (int v : B) labels[v] = other;
    rec(A, label, depth + 1, b.ncut);
    rec(B, other, depth + 1, b.ncut);
  };
  std::vector<int> all(n);
  for (int i = 0; i < n; ++i) all[i] = i;
  rec(all, 0, 0, 1.0);
  // Compact to 0..K-1 in token order.
  std::map<int, int> remap;
  for (int& l : labels) {
    auto it = remap.find(l);
    if (it == remap.end()) it = remap.emplace(l, static_cast<int>(remap.size())).first;
    l = it->second;
  }
  return labels;
}

AutoResult walk_ncut(const Attention& att, int H, int W, const NcutParams& p) {
  check_params(p);
  auto levels = maps_by_resolution(att);
  if (levels.empty()) throw Error("ncut: no attention maps");
  const AttentionMap* m = &levels[0];
  for (const auto& l : levels)
    if (std::abs(l.h - p.grid) < std::abs(m->h - p.grid)) m = &l;
  const int n = static_cast<int>(m->tokens());
  if (n > 4096) throw Error("ncut: grid " + std::to_string(m->h) + "x" + std::to_string(m->w) + " is too large (at most 64x64)");
  auto labels = recursive_rw_ncut(m->data, n, p);
  int K = 0;
  for (int l : labels) K = std::max(K, l + 1);
  AutoResult res;
  res.meta["grid"] = std::to_string(m->h) + "x" + std::to_string(m->w);
  res.meta["power"] = std::to_string(p.power);
  res.meta["stop"] = to_string(p.policy);
  res.meta["graph"] = to_string(p.graph);
  // Per-segment indicator maps, upsampled, argmax.
  cv::Mat best(H, W, CV_32F, cv::Scalar(-1.0f));
  res.labels = cv::Mat::zeros(H, W, CV_16U);
  for (int k = 0; k < K; ++k) {
    cv::Mat ind(m->h, m->w, CV_32F);
    for (int i = 0; i < n; ++i) ind.at<float>(i / m->w, i % m->w) = labels[i] == k ? 1.0f : 0.0f;
    cv::Mat up = upsample_bilinear(ind, H, W);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (up.at<float>(y, x) > best.at<float>(y, x)) {
          best.at<float>(y, x) = up.at<float>(y, x);
          res.labels.at<uint16_t>(y, x) = static_cast<uint16_t>(k);
        }
  }
  res.segments = K;
  return res;
}

}  // namespace m2n2
