// libFuzzer target: the default source's settings string ("grid=64,floor=0.1,...").
// Whatever parses must also survive validation and print back to a string that parses
// to the same settings.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto s = m2n2::DefaultSourceSettings::parse(text);
    s.validate();
    (void)m2n2::default_source_memory_bytes(s);
    const auto t = m2n2::DefaultSourceSettings::parse(s.to_string());
    if (t.to_string() != s.to_string()) std::abort();
  } catch (const m2n2::Error&) {
  }
  return 0;
}
