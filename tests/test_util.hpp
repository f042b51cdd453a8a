// Helpers shared by the unit tests.
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2::test {

inline std::string shared_dir() { return M2N2_SHARED_DIR; }
inline std::string source_dir() { return M2N2_SOURCE_DIR; }
// The compact copy of the reference vectors that ships with the repository.
inline std::string data_dir() { return std::string(M2N2_SOURCE_DIR) + "/tests/data"; }
// Whether ../shared (full parity set, GrabCut) is beside the clone.
bool have_shared();
// GTEST_SKIP with one line when ../shared is absent.
#define M2N2_REQUIRE_SHARED() \
  if (!::m2n2::test::have_shared()) GTEST_SKIP() << "needs ../shared (not beside this clone): " << ::m2n2::test::shared_dir()
std::string temp_dir();  // a fresh folder per call
// Reads a file, gunzipping it when its name ends in .gz.
std::string read_maybe_gz(const std::string& path);

// A synthetic RGB image with flat regions given by a label map and colours.
cv::Mat paint(const cv::Mat& labels, const std::vector<cv::Vec3b>& colours, double noise = 0, int seed = 1);

}  // namespace m2n2::test
