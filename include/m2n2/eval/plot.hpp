// mIoU-per-click curves drawn with OpenCV (axes, ticks, labels, legend).
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

struct Curve {
  std::string label;
  std::vector<double> values;  // mIoU after click 1..n
};

cv::Mat plot_curves(const std::vector<Curve>& curves, const std::string& title);

}  // namespace m2n2
