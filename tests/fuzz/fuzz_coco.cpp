// libFuzzer target: the COCO instances reader (RLE, compressed RLE and polygons).
#include <cstdint>
#include <string>

#include "m2n2/eval/datasets.hpp"
#include "m2n2/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto instances = m2n2::parse_coco(text, "fuzz.json", "/nonexistent");
    for (const auto& in : instances) {
      try {
        // Keep masks small so that the fuzzer explores the parser, not memset.
        if (static_cast<int64_t>(in.coco_h) * in.coco_w > (1 << 20)) continue;
        if (in.coco.is_object() && in.coco.contains("size") && in.coco["size"].is_array() && in.coco["size"].size() == 2 &&
            in.coco["size"][0].is_number_integer() && in.coco["size"][1].is_number_integer() &&
            in.coco["size"][0].get<int64_t>() * in.coco["size"][1].get<int64_t>() > (1 << 20))
          continue;
        (void)m2n2::load_ground_truth(in);
      } catch (const m2n2::Error&) {
      }
    }
  } catch (const m2n2::Error&) {
  }
  return 0;
}
