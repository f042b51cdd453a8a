// Private: what an AttentionMap's DeviceValues hold, and the tensor hand-over to the
// operator. Include only from files that already depend on LibTorch.
#pragma once
#include <ATen/ATen.h>

#include "attention/sources.hpp"

namespace m2n2 {

struct DeviceValues {
  at::Tensor values;  // N×N float32 (contiguous), on any device
};

namespace detail {

int64_t device_values_count(const AttentionMap& m);
// Brings the values to m.data and drops the device copy.
void device_to_host(AttentionMap& m);
// A map whose values are `t` (float32 N×N), left where `t` lives.
AttentionMap device_map(std::string name, int h, int w, float weight, at::Tensor t);
// The map's values as a tensor that owns them and may be written to: host data is
// moved into it (no copy), device values are taken over (copied only when another map
// shares them). `m` is left empty.
at::Tensor take_tensor(AttentionMap&& m);
// Checks of validate_attention, reduced on the tensor's device.
void validate_tensor(const at::Tensor& t, int h, int w, const std::string& what, float row_tolerance);

}  // namespace detail
}  // namespace m2n2
