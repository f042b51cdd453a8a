// libFuzzer target: the PNG/JPEG structure check that runs before every decode
// (crafted IHDR sizes, chunk lengths, markers), at a small and a huge pixel limit.
#include <cstdint>
#include <string>

#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (int64_t limit : {int64_t{4096}, int64_t{400000000}, INT64_MAX}) {
    try {
      m2n2::check_image_bytes("fuzz.png", bytes, limit);
    } catch (const m2n2::Error&) {
    }
  }
  return 0;
}
