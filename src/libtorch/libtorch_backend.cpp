// The LibTorch backend (libm2n2_torch.so): TorchBackend's methods on LibTorch, each
// handed to the file of its concept.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "attention/device_values.hpp"
#include "attention/sources.hpp"
#include "interactive/operator_kernel.hpp"
#include "libtorch/backend.hpp"
#include "whole_image/linear_algebra.hpp"

namespace m2n2::detail {
namespace {

class LibTorchBackend final : public TorchBackend {
 public:
  bool cuda_available() override { return at::hasCUDA(); }
  void set_num_threads(int n) override { at::set_num_threads(n); }
  void throw_injected(const std::string& kind) override {
    if (kind == "c10") TORCH_CHECK(false, "injected LibTorch error\nException raised from inject_fault (backtrace follows)");
    if (kind == "cuda_oom")
      TORCH_CHECK(false, "CUDA out of memory. Tried to allocate 1.00 GiB (injected)\nbacktrace follows");
  }

  std::unique_ptr<AttentionSource> torchscript_source(const std::string& path, const SourceOptions& opt) override {
    return make_torchscript_source(path, opt);
  }
  int64_t device_values(const AttentionMap& m) override { return device_values_count(m); }
  void to_host(AttentionMap& m) override { device_to_host(m); }
  void validate(const AttentionMap& m, const std::string& what, float tol) override {
    validate_tensor(m.device_values->values, m.h, m.w, what, tol);
  }
  AttentionMap combine(const std::vector<const AttentionMap*>& maps, double weight_sum) override {
    return combine_on_device(maps, weight_sum);
  }
  void round_to_fp16(AttentionMap& m) override { round_device_to_fp16(m); }

  std::unique_ptr<OperatorKernel> operator_kernel(AttentionMap&& att, const OperatorParams& params) override {
    return make_libtorch_operator(std::move(att), params);
  }

  std::vector<float> diffseg_anchor_proposals(const float* attention, int64_t n, const std::vector<int64_t>& anchors,
                                              double log_floor, double kl_threshold) override {
    return diffseg_anchor_proposals_libtorch(attention, n, anchors, log_floor, kl_threshold);
  }
  Bipartition rw_ncut_bipartition(const std::vector<double>& P, int n, int sweep) override {
    return rw_ncut_bipartition_libtorch(P, n, sweep);
  }
  Bipartition graph_ncut_bipartition(const std::vector<double>& W, int n, int sweep) override {
    return graph_ncut_bipartition_libtorch(W, n, sweep);
  }
  std::vector<double> cosine_affinity(const std::vector<double>& F, int n, int dim, double alpha) override {
    return cosine_affinity_libtorch(F, n, dim, alpha);
  }
  std::vector<double> power_walk(const std::vector<float>& P, int n, int power) override {
    return power_walk_libtorch(P, n, power);
  }
};

}  // namespace
}  // namespace m2n2::detail

extern "C" m2n2::detail::TorchBackend* m2n2_torch_backend() {
  static m2n2::detail::LibTorchBackend backend;
  return &backend;
}
