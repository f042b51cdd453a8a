// The fuzz targets link attention.cpp for validate_attention(); the concrete
// sources and the LibTorch backend are not part of them.
#include "attention/sources.hpp"
#include "libtorch/backend.hpp"
#include "m2n2/core/error.hpp"

namespace m2n2::detail {
#ifndef M2N2_FUZZ_HAS_DEFAULT_SOURCE
std::unique_ptr<AttentionSource> make_default_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
#endif
std::unique_ptr<AttentionSource> make_file_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
// Fuzz builds see host maps only.
TorchBackend& torch_backend() { throw Error("not in fuzz builds"); }
TorchBackend* torch_backend_if_loaded() { return nullptr; }
}  // namespace m2n2::detail
