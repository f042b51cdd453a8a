// The library in a few lines: an engine set up once, a session per image, clicks.
//   ./build/m2n2_example examples/images/fruit.png 120 172 apple.png
#include <cstdio>
#include <cstdlib>

#include "m2n2/m2n2.hpp"

int main(int argc, char** argv) {
  if (argc != 5) return std::fprintf(stderr, "usage: %s IMAGE X Y OUT.png\n", argv[0]), 2;
  m2n2::EngineOptions options;  // the embedded default source and the authors' parameters
  options.progress = [](const std::string& stage, double done) { std::fprintf(stderr, "%s %3.0f%%\n", stage.c_str(), 100 * done); };
  try {
  m2n2::Engine engine(options);
  auto session = engine.open(m2n2::read_rgb(argv[1]).rgb, argv[1]);  // attention, operator, table: once
  auto result = session->segment({{std::atof(argv[2]), std::atof(argv[3]), /*positive=*/true}});
  m2n2::write_png_atomic(argv[4], result.mask);  // CV_8U, 0/255; result.soft is the distance map
  std::printf("%d pixels in the mask; image prepared in %.2f s\n", cv::countNonZero(result.mask),
              session->timings().total());
  } catch (const std::exception& e) {  // m2n2::Error messages are one line that names the file
    return std::fprintf(stderr, "%s\n", e.what()), 1;
  }
  return 0;
}
