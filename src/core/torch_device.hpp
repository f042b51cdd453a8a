// Private: maps m2n2's device/precision choices onto LibTorch. Include only from
// files that already depend on LibTorch.
#pragma once
#include <ATen/ATen.h>

#include "m2n2/core/device.hpp"

namespace m2n2::detail {

at::Device torch_device(Device d);
// The dtype the operator is stored in on that device (fp32 on CPU always).
at::ScalarType storage_dtype(Device d, Precision p);

}  // namespace m2n2::detail
