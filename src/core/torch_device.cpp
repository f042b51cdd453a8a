// The LibTorch side of device.hpp's choices (part of the LibTorch backend).
#include "core/torch_device.hpp"

namespace m2n2::detail {

at::Device torch_device(Device d) {
  return resolve(d) == Device::Cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}

at::ScalarType storage_dtype(Device d, Precision p) {
  if (resolve(d) != Device::Cuda) return at::kFloat;  // see Precision in device.hpp
  switch (p) {
    case Precision::Float16: return at::kHalf;
    case Precision::BFloat16: return at::kBFloat16;
    default: return at::kFloat;
  }
}

}  // namespace m2n2::detail
