// Private: everything m2n2 asks of LibTorch, behind one interface that needs no
// LibTorch headers. The core library (the CPU path from images or .npy files, the
// Markov operator in fp32, segmentation, evaluation) never touches LibTorch; the
// backend lives in libm2n2_torch.so and is loaded on first use: a TorchScript
// source, a CUDA device, DiffSeg's and NCut's linear algebra. A process that never
// needs it never pays LibTorch's start-up (≈ 0.7–1 s of static registration here).
// Programs that link the backend's objects directly (the tests, the benchmarks) get
// it without loading anything.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "m2n2/attention/attention.hpp"
#include "m2n2/core/device.hpp"

namespace m2n2 {
struct OperatorParams;
struct Bipartition;

namespace detail {

// The Markov operator's storage and products where LibTorch holds them (a GPU, or
// the CPU when asked for explicitly): A = diag(r)·K·diag(c), built and balanced there.
class OperatorKernel {
 public:
  virtual ~OperatorKernel() = default;
  // out = in · A for `batch` row states (batch*N floats each, host memory).
  virtual void apply(const float* in, float* out, int64_t batch) const = 0;
  virtual std::vector<float> dense() const = 0;  // N*N, host
  virtual int64_t bytes_per_step() const = 0;
  virtual Device device() const = 0;
};

class TorchBackend {
 public:
  virtual ~TorchBackend() = default;
  virtual bool cuda_available() = 0;
  virtual void set_num_threads(int n) = 0;
  // Throws the LibTorch error that M2N2_INJECT_FAULT=c10@… / cuda_oom@… stand for.
  virtual void throw_injected(const std::string& kind) = 0;

  virtual std::unique_ptr<AttentionSource> torchscript_source(const std::string& path, const SourceOptions& opt) = 0;
  // Maps whose values LibTorch holds on a device (AttentionMap::device_values).
  virtual int64_t device_values(const AttentionMap& m) = 0;
  virtual void to_host(AttentionMap& m) = 0;
  virtual void validate(const AttentionMap& m, const std::string& what, float tol) = 0;
  virtual AttentionMap combine(const std::vector<const AttentionMap*>& maps, double weight_sum) = 0;
  virtual void round_to_fp16(AttentionMap& m) = 0;

  virtual std::unique_ptr<OperatorKernel> operator_kernel(AttentionMap&& att, const OperatorParams& params) = 0;

  // DiffSeg's first iteration: for each anchor token, the mean attention row of the
  // tokens within `kl_threshold` (symmetric KL) of it (anchors × N, row-major).
  virtual std::vector<float> diffseg_anchor_proposals(const float* attention, int64_t n,
                                                      const std::vector<int64_t>& anchors, double log_floor,
                                                      double kl_threshold) = 0;
  virtual Bipartition rw_ncut_bipartition(const std::vector<double>& P, int n, int sweep) = 0;
  // NCut bipartition of a symmetric affinity W (degrees = row sums).
  virtual Bipartition graph_ncut_bipartition(const std::vector<double>& W, int n, int sweep) = 0;
  // DiffCut's affinity of the rows of F (n×dim): cosine, min-max scaled, ^alpha (n×n).
  virtual std::vector<double> cosine_affinity(const std::vector<double>& F, int n, int dim, double alpha) = 0;
  // P^power by repeated squaring with rows renormalised (n×n).
  virtual std::vector<double> power_walk(const std::vector<float>& P, int n, int power) = 0;
};

// The backend: linked in, else loaded from libm2n2_torch.so (beside the executable,
// in ../lib/m2n2 or ../lib, or the path in $M2N2_TORCH_BACKEND). Throws Error with
// the loader's message when it cannot be found or loaded.
TorchBackend& torch_backend();
// The backend if it is linked in or already loaded; never loads it.
TorchBackend* torch_backend_if_loaded();
// Where the backend would be loaded from without loading it: "linked in", a file
// path, or "" when it is not found or not part of this build (for m2n2 --version).
std::string torch_backend_location();
// Whether this build has the backend (-DM2N2_WITH_TORCH), and whether the LibTorch it
// was built against has CUDA.
bool torch_backend_built();
bool torch_backend_has_cuda();
// The thread count set by set_num_threads (0 = not set); core/device.cpp.
int configured_threads();

}  // namespace detail
}  // namespace m2n2

// The backend's single entry point (libm2n2_torch.so exports it).
extern "C" m2n2::detail::TorchBackend* m2n2_torch_backend();
