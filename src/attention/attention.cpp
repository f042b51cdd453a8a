#include "m2n2/attention/attention.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "attention/sources.hpp"
#include "libtorch/backend.hpp"
#include "m2n2/core/error.hpp"

namespace m2n2 {

// Device maps exist only where the LibTorch backend made them, so it is loaded already.
int64_t attention_values(const AttentionMap& m) {
  return m.on_host() ? static_cast<int64_t>(m.data.size()) : detail::torch_backend().device_values(m);
}

void to_host(AttentionMap& m) {
  if (!m.on_host()) detail::torch_backend().to_host(m);
}

void to_host(Attention& att) {
  for (auto& m : att.maps) to_host(m);
}

void validate_attention_values(const AttentionMap& m, const std::string& what, float tol) {
  if (m.on_host()) return validate_attention(m, what, tol);
  detail::torch_backend().validate(m, what, tol);
}

void validate_attention(const AttentionMap& m, const std::string& what, float tol) {
  if (!m.on_host()) return validate_attention_values(m, what, tol);
  const int64_t n = m.tokens();
  if (m.h <= 0 || m.w <= 0) throw Error(what + ": empty token grid");
  if (static_cast<int64_t>(m.data.size()) != n * n)
    throw Error(what + ": expected " + std::to_string(n) + "x" + std::to_string(n) + " values for a " +
                std::to_string(m.h) + "x" + std::to_string(m.w) + " grid, got " + std::to_string(m.data.size()));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    const float* row = m.data.data() + i * n;
    for (int64_t j = 0; j < n; ++j) {
      const float v = row[j];
      if (!std::isfinite(v)) throw Error(what + ": non-finite value at row " + std::to_string(i) + ", column " + std::to_string(j));
      if (v < 0) throw Error(what + ": negative value at row " + std::to_string(i) + ", column " + std::to_string(j));
      s += v;
    }
    if (std::fabs(s - 1.0) > tol)
      throw Error(what + ": row " + std::to_string(i) + " sums to " + std::to_string(s) +
                  ", not 1 (attention must be row-stochastic)");
  }
}

bool is_feature_kind(const std::string& kind) {
  return kind == "keys" || kind == "patch_tokens" || kind == "cls" || kind == "cls_attention";
}

void validate_feature(const FeatureMap& f, const std::string& what) {
  const std::string w = what + " feature '" + f.name + "'";
  if (!is_feature_kind(f.kind))
    throw Error(w + ": unknown kind '" + f.kind + "' (keys, patch_tokens, cls or cls_attention)");
  if (f.h <= 0 || f.w <= 0 || f.dim <= 0) throw Error(w + ": empty shape");
  if (f.kind == "cls" && f.rows() != 1) throw Error(w + ": a cls feature is one row");
  if (f.kind == "cls_attention" && f.dim != 1) throw Error(w + ": cls_attention has one value per patch");
  const int64_t expect = f.rows() * f.dim;
  if (static_cast<int64_t>(f.data.size()) != expect)
    throw Error(w + ": expected " + std::to_string(f.rows()) + "x" + std::to_string(f.dim) + " values, got " +
                std::to_string(f.data.size()));
  double sum = 0;
  for (size_t i = 0; i < f.data.size(); ++i) {
    if (!std::isfinite(f.data[i])) throw Error(w + ": non-finite value at " + std::to_string(i));
    sum += f.data[i];
  }
  if (f.kind == "cls_attention") {
    if (*std::min_element(f.data.begin(), f.data.end()) < 0) throw Error(w + ": negative attention");
    if (std::fabs(sum - 1.0) > 2e-2) throw Error(w + ": sums to " + std::to_string(sum) + ", not 1");
  }
}

const FeatureMap* find_feature(const Attention& att, const std::string& kind, int layer) {
  for (const auto& f : att.features)
    if (f.kind == kind && (layer < 0 || f.layer == layer)) return &f;
  return nullptr;
}

const FeatureMap& require_feature(const Attention& att, const std::string& kind, const std::string& method, int layer) {
  if (const FeatureMap* f = find_feature(att, kind, layer)) return *f;
  std::string have;
  for (const auto& f : att.features) have += (have.empty() ? "" : ", ") + f.name;
  const auto src = att.meta.find("source");
  throw InvalidArgument(method + " needs '" + kind + "' features" + (layer >= 0 ? " of layer " + std::to_string(layer) : "") +
              ", which the attention source" + (src != att.meta.end() ? " (" + src->second + ")" : std::string()) +
              " does not deliver" + (have.empty() ? " (it has none)" : " (it has " + have + ")") +
              "; export the ViT with --features " + kind + " (format m2n2-attention/2)");
}

namespace {
void normalise_rows(AttentionMap& m) {
  const int64_t n = m.tokens();
  for (int64_t i = 0; i < n; ++i) {
    float* row = m.data.data() + i * n;
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += row[j];
    if (s > 0)
      for (int64_t j = 0; j < n; ++j) row[j] = static_cast<float>(row[j] / s);
  }
}
}  // namespace

namespace {
// The maps combine_for_m2n2 uses (indices into att.maps) and their weight sum.
std::vector<size_t> chosen_maps(const Attention& att, double& wsum) {
  if (att.maps.empty()) throw Error("attention source delivered no maps");
  // The finest grid among maps with non-zero weight.
  int64_t best = -1;
  for (const auto& m : att.maps)
    if (m.weight > 0) best = std::max(best, m.tokens());
  if (best < 0) throw Error("attention source: every map has weight 0");
  std::vector<size_t> chosen;
  wsum = 0;
  for (size_t i = 0; i < att.maps.size(); ++i)
    if (att.maps[i].weight > 0 && att.maps[i].tokens() == best) {
      chosen.push_back(i);
      wsum += att.maps[i].weight;
    }
  return chosen;
}

AttentionMap combine(const Attention& att, const std::vector<size_t>& idx, double wsum) {
  std::vector<const AttentionMap*> chosen;
  bool device = false;
  for (size_t i : idx) {
    chosen.push_back(&att.maps[i]);
    device = device || !att.maps[i].on_host();
  }
  if (device) return detail::torch_backend().combine(chosen, wsum);
  AttentionMap out;
  out.name = "combined";
  out.h = chosen[0]->h;
  out.w = chosen[0]->w;
  out.data.assign(chosen[0]->data.size(), 0.0f);
  for (const auto* m : chosen) {
    const float w = static_cast<float>(m->weight / wsum);
    for (size_t i = 0; i < out.data.size(); ++i) out.data[i] += w * m->data[i];
  }
  normalise_rows(out);
  return out;
}
}  // namespace

AttentionMap combine_for_m2n2(const Attention& att) {
  double wsum = 0;
  const auto idx = chosen_maps(att, wsum);
  if (idx.size() == 1) return att.maps[idx[0]];
  return combine(att, idx, wsum);
}

AttentionMap combine_for_m2n2(Attention&& att) {
  double wsum = 0;
  const auto idx = chosen_maps(att, wsum);
  if (idx.size() == 1) return std::move(att.maps[idx[0]]);  // no copy of the N×N values
  AttentionMap out = combine(att, idx, wsum);
  att = Attention();
  return out;
}

std::vector<AttentionMap> maps_by_resolution(const Attention& att) {
  // Device maps are brought over one by one; host maps are read where they are.
  std::vector<AttentionMap> brought;
  brought.reserve(att.maps.size());
  std::map<int64_t, std::vector<const AttentionMap*>, std::greater<int64_t>> groups;
  for (const auto& m : att.maps) {
    if (m.on_host()) {
      groups[m.tokens()].push_back(&m);
      continue;
    }
    brought.push_back(m);
    to_host(brought.back());
    groups[m.tokens()].push_back(&brought.back());
  }
  std::vector<AttentionMap> out;
  for (auto& [n, ms] : groups) {
    AttentionMap r;
    r.name = std::to_string(ms[0]->h) + "x" + std::to_string(ms[0]->w);
    r.h = ms[0]->h;
    r.w = ms[0]->w;
    r.data.assign(ms[0]->data.size(), 0.0f);
    const float inv = 1.0f / static_cast<float>(ms.size());
    for (const auto* m : ms)
      for (size_t i = 0; i < r.data.size(); ++i) r.data[i] += inv * m->data[i];
    out.push_back(std::move(r));
  }
  return out;
}

std::unique_ptr<AttentionSource> make_source(const std::string& spec, const SourceOptions& opt) {
  const auto colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "default") return detail::make_default_source(arg, opt);
  if (kind == "file") {
    if (arg.empty()) throw Error("source file:PATH needs a path");
    return detail::make_file_source(arg, opt);
  }
  if (kind == "torchscript") {
    if (arg.empty()) throw Error("source torchscript:PATH needs a path");
    return detail::torch_backend().torchscript_source(arg, opt);
  }
  throw Error("source: unknown source '" + spec + "' (expected default, torchscript:PATH or file:PATH)");
}

}  // namespace m2n2
