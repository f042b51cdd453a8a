// Attention values that stay on their device: checks, combination and the hand-over to
// the Markov operator, all as LibTorch reductions where the values live (part of the
// LibTorch backend; attention.cpp reaches these through libtorch/backend.hpp).
#include "attention/device_values.hpp"

#include <algorithm>

#include "m2n2/core/error.hpp"

namespace m2n2 {

namespace detail {

int64_t device_values_count(const AttentionMap& m) { return m.device_values->values.numel(); }

void device_to_host(AttentionMap& m) {
  at::Tensor t = m.device_values->values.to(at::kCPU).to(at::kFloat).contiguous();
  m.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  m.device_values.reset();
}

AttentionMap device_map(std::string name, int h, int w, float weight, at::Tensor t) {
  AttentionMap m;
  m.name = std::move(name);
  m.h = h;
  m.w = w;
  m.weight = weight;
  m.device_values = std::make_shared<DeviceValues>();
  m.device_values->values = t.to(at::kFloat).contiguous();
  return m;
}

at::Tensor take_tensor(AttentionMap&& m) {
  if (m.device_values) {
    at::Tensor t = m.device_values.use_count() == 1 ? m.device_values->values : m.device_values->values.clone();
    m.device_values.reset();
    return t.contiguous();
  }
  // The vector moves into the tensor's deleter: the tensor owns the host buffer.
  auto* owned = new std::vector<float>(std::move(m.data));
  m.data = std::vector<float>();
  return at::from_blob(
      owned->data(), {static_cast<int64_t>(owned->size())}, [owned](void*) { delete owned; },
      at::TensorOptions().dtype(at::kFloat));
}

void validate_tensor(const at::Tensor& t, int h, int w, const std::string& what, float tol) {
  const int64_t n = static_cast<int64_t>(h) * w;
  if (h <= 0 || w <= 0) throw Error(what + ": empty token grid");
  if (t.numel() != n * n)
    throw Error(what + ": expected " + std::to_string(n) + "x" + std::to_string(n) + " values for a " +
                std::to_string(h) + "x" + std::to_string(w) + " grid, got " + std::to_string(t.numel()));
  const at::Tensor A = t.view({n, n});
  // One small transfer: three verdicts; positions are looked up only on failure.
  const at::Tensor finite = at::isfinite(A).all();
  const at::Tensor nonneg = (A >= 0).all();
  const at::Tensor sums = A.sum(1, false, at::kDouble);
  const at::Tensor worst = (sums - 1.0).abs().max();
  const at::Tensor verdict = at::stack({finite.to(at::kDouble), nonneg.to(at::kDouble), worst}).to(at::kCPU);
  const double* v = verdict.data_ptr<double>();
  auto first = [&](const at::Tensor& bad) {
    const int64_t k = bad.view({-1}).to(at::kByte).argmax().item<int64_t>();
    return "row " + std::to_string(k / n) + ", column " + std::to_string(k % n);
  };
  if (v[0] == 0) throw Error(what + ": non-finite value at " + first(~at::isfinite(A)));
  if (v[1] == 0) throw Error(what + ": negative value at " + first(A < 0));
  if (!(v[2] <= tol)) {
    const int64_t i = (sums - 1.0).abs().argmax().item<int64_t>();
    throw Error(what + ": row " + std::to_string(i) + " sums to " + std::to_string(sums[i].item<double>()) +
                ", not 1 (attention must be row-stochastic)");
  }
}

AttentionMap combine_on_device(const std::vector<const AttentionMap*>& maps, double wsum) {
  const at::Device dev = maps[0]->device_values ? maps[0]->device_values->values.device() : at::Device(at::kCPU);
  at::Tensor out;
  for (const auto* m : maps) {
    at::Tensor v = m->device_values ? m->device_values->values
                                    : at::from_blob(const_cast<float*>(m->data.data()),
                                                    {static_cast<int64_t>(m->data.size())}, at::kFloat);
    v = v.to(dev).view({-1});
    const float w = static_cast<float>(m->weight / wsum);
    if (!out.defined()) out = v * w;
    else out.add_(v, w);
  }
  const int64_t n = maps[0]->tokens();
  at::Tensor A = out.view({n, n});
  at::Tensor s = A.sum(1, true);
  A.div_(at::where(s > 0, s, at::ones_like(s)));
  return device_map("combined", maps[0]->h, maps[0]->w, 1.0f, A);
}

void round_device_to_fp16(AttentionMap& m) {
  at::Tensor& t = m.device_values->values;
  t.copy_(t.to(at::kHalf));
}

}  // namespace detail
}  // namespace m2n2
