// Private: constructors of the concrete attention sources.
#pragma once
#include <memory>
#include <string>

#include "m2n2/attention.hpp"

namespace m2n2::detail {

std::unique_ptr<AttentionSource> make_default_source(const std::string& settings, const SourceOptions& opt);
std::unique_ptr<AttentionSource> make_file_source(const std::string& path, const SourceOptions& opt);
std::unique_ptr<AttentionSource> make_torchscript_source(const std::string& path, const SourceOptions& opt);

}  // namespace m2n2::detail
