// libFuzzer target: the .npy reader and the attention validation behind `file:`.
#include <cmath>
#include <cstdint>
#include <string>

#include "m2n2/attention/attention.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    m2n2::NpyArray a = m2n2::parse_npy(bytes, "fuzz.npy");
    if (a.shape.size() == 4 && a.shape[0] == a.shape[2] && a.shape[1] == a.shape[3] && a.shape[0] > 0 && a.shape[1] > 0) {
      m2n2::AttentionMap m;
      m.h = static_cast<int>(a.shape[0]);
      m.w = static_cast<int>(a.shape[1]);
      m.data = std::move(a.data);
      m2n2::validate_attention(m, "fuzz.npy");
    }
  } catch (const m2n2::Error&) {
  }
  return 0;
}
