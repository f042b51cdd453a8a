// m2n2 — the Markov transition operator built from attention: temperature
// sharpening and Sinkhorn/IPF balancing, and the Markov-map iteration on it.
#pragma once
#include <memory>
#include <vector>

#include "m2n2/attention/attention.hpp"
#include "m2n2/core/device.hpp"

namespace m2n2 {

struct OperatorParams {
  double temperature = 0.65;  // A <- softmax_row(log A / T)
  int ipf_iterations = 200;   // each: columns to sum 1, then rows to sum 1
  Device device = Device::Cpu;
  Precision precision = Precision::Float32;
  // CPU: the two matrix-vector products per iteration of the first implementation
  // instead of the one-pass kernel (same iterates, other summation order); for checks.
  bool two_pass_sinkhorn = false;
  // Build and apply the operator in LibTorch even on the CPU: the code path a CUDA
  // device takes (on the CPU it loads LibTorch and is slower); for checks.
  bool libtorch = false;
};

struct MarkovParams {
  float threshold = 0.3f;  // relative probability threshold
  int max_iterations = 1000;
  bool linear_interpolation = true;
};

// The doubly stochastic operator A = diag(r)·K·diag(c), K the sharpened attention.
// Sinkhorn iterates only the scaling vectors r and c; K is never rewritten, and Markov
// steps apply the same factors. On the CPU it is plain C++ (no LibTorch); on a CUDA
// device LibTorch holds and applies it.
class MarkovOperator {
 public:
  MarkovOperator(const AttentionMap& attention, const OperatorParams& params);
  // Takes over the map's storage (host or device): no copy of the N×N values on the
  // device that already holds them.
  MarkovOperator(AttentionMap&& attention, const OperatorParams& params);
  ~MarkovOperator();
  MarkovOperator(const MarkovOperator&) = delete;
  MarkovOperator& operator=(const MarkovOperator&) = delete;

  int h() const;
  int w() const;
  int64_t tokens() const;
  const OperatorParams& params() const;
  Device device() const;  // where K lives

  // The dense doubly stochastic matrix (N*N floats, CPU), for tests and export.
  std::vector<float> dense() const;

  // Markov-maps (first-crossing iteration counts, N floats each) for several start
  // states at once: the chains advance together as one matrix-matrix product.
  std::vector<std::vector<float>> markov_maps(const std::vector<std::vector<float>>& starts,
                                              const MarkovParams& params) const;

  // One Markov step s <- s·A / max(s·A) for a batch of states (B*N floats); for benchmarks.
  void step(std::vector<float>& states, int batch) const;

  // Bytes of operator storage read by one step.
  int64_t bytes_per_step() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bytes the operator of a grid with N tokens needs while it is being built.
double operator_memory_bytes(int64_t tokens);

}  // namespace m2n2
