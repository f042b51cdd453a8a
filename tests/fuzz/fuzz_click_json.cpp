// libFuzzer target: the click file parser (whole file and JSON Lines forms).
#include <cstdint>
#include <string>

#include "m2n2/io/click_file.hpp"
#include "m2n2/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto specs = m2n2::parse_click_file(text, "fuzz.json");
    for (const auto& s : specs)
      for (const auto& o : s.objects)
        for (const auto& c : o.clicks) (void)m2n2::click_pixel(c);
  } catch (const m2n2::Error&) {
  }
  (void)m2n2::parse_click_line(text);
  return 0;
}
