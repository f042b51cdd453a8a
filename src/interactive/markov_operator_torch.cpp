// The Markov operator where LibTorch holds it (part of the LibTorch backend): on a
// CUDA device in the storage dtype chosen in core/device, or on the CPU when asked
// for (OperatorParams::libtorch). The same algebra as markov_operator.cpp:
// A = diag(r)·K·diag(c), K the sharpened attention, Sinkhorn on r and c.
#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "attention/device_values.hpp"
#include "core/torch_device.hpp"
#include "interactive/operator_errors.hpp"
#include "interactive/operator_kernel.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/interactive/markov_operator.hpp"

namespace m2n2::detail {
namespace {

class LibTorchKernel final : public OperatorKernel {
 public:
  LibTorchKernel(AttentionMap&& att, const OperatorParams& params) {
    n_ = att.tokens();
    const std::string att_name = att.name;
    const int att_w = att.w;
    const at::Device dev = torch_device(params.device);
    const at::ScalarType dtype = storage_dtype(params.device, params.precision);

    // The map's own storage becomes A (no copy where it already lives on `dev`).
    at::Tensor A = take_tensor(std::move(att)).view({n_, n_});
    if (A.device() != dev) A = A.to(dev);
    // Temperature: softmax over keys of log(A)/T (zeros stay zero), a block of rows at
    // a time, written back in place: the map's buffer becomes K, and the only other
    // buffer is one block (no second N×N buffer: 1 GiB less at grid 128). On a GPU
    // large blocks save launches.
    {
      const int64_t target = A.is_cuda() ? (int64_t{64} << 20) : (int64_t{1} << 20);
      const int64_t rows = std::min(n_, std::max<int64_t>(1, target / (n_ * static_cast<int64_t>(A.element_size()))));
      at::Tensor out;
      for (int64_t i = 0; i < n_; i += rows) {
        at::Tensor block = A.narrow(0, i, std::min(rows, n_ - i));
        block.log_().div_(params.temperature);
        if (!out.defined() || out.size(0) != block.size(0)) out = at::empty_like(block);
        at::softmax_out(out, block, 1);
        block.copy_(out);
      }
    }
    // Sinkhorn/IPF on the scaling vectors. The reference divides columns by their
    // sums, then rows by theirs; with A = diag(r) K diag(c) that is c = 1/(Kᵀ r),
    // r = 1/(K c).
    at::Tensor r = at::ones({n_}, A.options());
    at::Tensor c = at::ones({n_}, A.options());
    const at::Tensor At = A.t();
    for (int it = 0; it < params.ipf_iterations; ++it) {
      c = at::reciprocal(at::mv(At, r));
      r = at::reciprocal(at::mv(A, c));
    }
    // One device-to-host sync for both vectors.
    if (!(at::isfinite(r).all() & at::isfinite(c).all()).item<bool>()) {
      const at::Tensor empty = (A != 0).sum(0).eq(0).nonzero();
      const int64_t column = empty.numel() > 0 ? empty[0][0].item<int64_t>() : -1;
      throw Error(unbalanced_message(att_name, att_w, column));
    }
    r_ = r;
    c_ = c;
    K_ = A.to(dtype).contiguous();
  }

  void apply(const float* in, float* out, int64_t batch) const override {
    at::Tensor S = at::from_blob(const_cast<float*>(in), {batch, n_}, at::kFloat).to(r_.device());
    at::Tensor x = (S * r_.unsqueeze(0)).to(K_.scalar_type());
    at::Tensor y = batch == 1 ? at::mv(K_.t(), x.squeeze(0)).unsqueeze(0) : at::mm(x, K_);
    y = (y.to(at::kFloat) * c_.unsqueeze(0)).to(at::kCPU).contiguous();
    std::copy(y.data_ptr<float>(), y.data_ptr<float>() + y.numel(), out);
  }

  std::vector<float> dense() const override {
    at::Tensor D = (r_.unsqueeze(1) * K_.to(at::kFloat) * c_.unsqueeze(0)).to(at::kCPU).contiguous();
    return std::vector<float>(D.data_ptr<float>(), D.data_ptr<float>() + D.numel());
  }

  int64_t bytes_per_step() const override { return K_.numel() * static_cast<int64_t>(K_.element_size()); }
  Device device() const override { return K_.is_cuda() ? Device::Cuda : Device::Cpu; }

 private:
  int64_t n_ = 0;
  at::Tensor K_;  // N×N sharpened attention, storage dtype, on the device
  at::Tensor r_;  // N, fp32: row scaling
  at::Tensor c_;  // N, fp32: column scaling
};

}  // namespace

std::unique_ptr<OperatorKernel> make_libtorch_operator(AttentionMap&& att, const OperatorParams& params) {
  return std::make_unique<LibTorchKernel>(std::move(att), params);
}

}  // namespace m2n2::detail
