// m2n2 — exact Euclidean distance transform (Felzenszwalb & Huttenlocher).
#pragma once
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

// Squared distance of every pixel to the nearest zero pixel of `mask` (CV_8U),
// exact, as int64. A mask without zeros gives a huge value everywhere.
std::vector<int64_t> squared_edt(const cv::Mat& mask);

}  // namespace m2n2
