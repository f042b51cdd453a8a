// The fuzz targets link attention.cpp for validate_attention(); the concrete
// sources (LibTorch) are not part of them.
#include "attention/sources.hpp"
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
std::unique_ptr<AttentionSource> make_torchscript_source(const std::string&, const SourceOptions&) {
  throw Error("not in fuzz builds");
}
AttentionMap combine_on_device(const std::vector<const AttentionMap*>&, double) { throw Error("not in fuzz builds"); }
void round_device_to_fp16(AttentionMap&) { throw Error("not in fuzz builds"); }
}  // namespace m2n2::detail

namespace m2n2 {
// Fuzz builds see host maps only.
void validate_attention_values(const AttentionMap& m, const std::string& what, float tol) { validate_attention(m, what, tol); }
void to_host(AttentionMap&) {}
void to_host(Attention&) {}
int64_t attention_values(const AttentionMap& m) { return static_cast<int64_t>(m.data.size()); }
}  // namespace m2n2
