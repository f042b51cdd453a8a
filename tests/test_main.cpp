#include <gtest/gtest.h>

#include <zlib.h>

#include <filesystem>
#include <random>
#include <stdexcept>

#include "m2n2/core/device.hpp"
#include "test_util.hpp"

namespace m2n2::test {

std::string temp_dir() {
  static int counter = 0;
  std::random_device rd;
  auto p = std::filesystem::temp_directory_path() /
           ("m2n2-test-" + std::to_string(rd()) + "-" + std::to_string(counter++));
  std::filesystem::create_directories(p);
  return p.string();
}

bool have_shared() { return std::filesystem::is_directory(std::filesystem::path(shared_dir()) / "testdata" / "m2n2"); }

std::string read_maybe_gz(const std::string& path) {
  if (path.size() < 3 || path.compare(path.size() - 3, 3, ".gz") != 0) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error(path + ": cannot open");
    std::string out;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
    return out;
  }
  gzFile g = gzopen(path.c_str(), "rb");
  if (!g) throw std::runtime_error(path + ": cannot open");
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(g, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  const bool bad = n < 0;
  gzclose(g);
  if (bad) throw std::runtime_error(path + ": corrupt gzip");
  return out;
}

cv::Mat paint(const cv::Mat& labels, const std::vector<cv::Vec3b>& colours, double noise, int seed) {
  cv::Mat out(labels.size(), CV_8UC3);
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, noise > 0 ? noise : 1.0);
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x) {
      cv::Vec3b c = colours[labels.at<uint8_t>(y, x)];
      if (noise > 0)
        for (int k = 0; k < 3; ++k) c[k] = cv::saturate_cast<uint8_t>(c[k] + n(rng));
      out.at<cv::Vec3b>(y, x) = c;
    }
  return out;
}

}  // namespace m2n2::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  m2n2::set_num_threads(0);
  return RUN_ALL_TESTS();
}
