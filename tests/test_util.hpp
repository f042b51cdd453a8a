// Helpers shared by the unit tests.
#pragma once
#include <string>

#include <opencv2/core.hpp>

namespace m2n2::test {

inline std::string shared_dir() { return M2N2_SHARED_DIR; }
inline std::string source_dir() { return M2N2_SOURCE_DIR; }
std::string temp_dir();  // a fresh folder per call

// A synthetic RGB image with flat regions given by a label map and colours.
cv::Mat paint(const cv::Mat& labels, const std::vector<cv::Vec3b>& colours, double noise = 0, int seed = 1);

}  // namespace m2n2::test
