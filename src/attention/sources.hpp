// Private: constructors of the concrete attention sources.
#pragma once
#include <memory>
#include <string>

#include "m2n2/attention/attention.hpp"

namespace m2n2::detail {

std::unique_ptr<AttentionSource> make_default_source(const std::string& settings, const SourceOptions& opt);
std::unique_ptr<AttentionSource> make_file_source(const std::string& path, const SourceOptions& opt);
// Part of the LibTorch backend (reached through libtorch/backend.hpp).
std::unique_ptr<AttentionSource> make_torchscript_source(const std::string& path, const SourceOptions& opt);

// The weighted, row-renormalised mean of maps of which some live on a device, computed
// on that device (attention/device_values.cpp, LibTorch backend).
AttentionMap combine_on_device(const std::vector<const AttentionMap*>& maps, double weight_sum);
// Rounds device values to the nearest fp16 and back, in place (LibTorch backend).
void round_device_to_fp16(AttentionMap& m);

}  // namespace m2n2::detail
