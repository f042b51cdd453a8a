// The fuzz targets link attention.cpp for validate_attention(); the concrete
// sources (LibTorch) are not part of them.
#include "attention_sources.hpp"
#include "m2n2/error.hpp"

namespace m2n2::detail {
#ifndef M2N2_FUZZ_HAS_DEFAULT_SOURCE
std::unique_ptr<AttentionSource> make_default_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
#endif
std::unique_ptr<AttentionSource> make_file_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
std::unique_ptr<AttentionSource> make_torchscript_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
}  // namespace m2n2::detail
