// The public header stands alone: it compiles with include/ and OpenCV's headers only
// (no src/, no LibTorch), as an installed package's user compiles it (test header.alone).
#include "m2n2/m2n2.hpp"

int main() {
  m2n2::EngineOptions options;
  options.params.op.temperature = 0.65;
  return options.source.empty() ? 1 : 0;
}
