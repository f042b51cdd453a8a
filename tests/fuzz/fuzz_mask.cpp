// libFuzzer target: the dataset mask loader (any image format OpenCV decodes).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "m2n2/eval/datasets.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/m2n2-fuzz-mask-" + std::to_string(::getpid()) + ".png";
  m2n2::write_file_atomic(path, std::string(reinterpret_cast<const char*>(data), size));
  m2n2::Instance in;
  in.id = "fuzz";
  in.mask_path = path;
  for (auto conv : {m2n2::MaskConvention::GrabCut, m2n2::MaskConvention::Davis}) {
    in.convention = conv;
    try {
      (void)m2n2::load_ground_truth(in);
    } catch (const m2n2::Error&) {
    }
  }
  return 0;
}
