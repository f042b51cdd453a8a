// m2n2 — min-max (bottleneck) flood fill.
#pragma once
#include <opencv2/core.hpp>

namespace m2n2 {

// value(p) = min over 4-connected paths start->p of max over the path of
// |h(q) - h(start)|; value(start) = 0. h: CV_32F. Returns CV_32F.
// A radix heap on the values' bit patterns: O(P · 32) at worst, linear in practice.
cv::Mat minimax_flood_fill(const cv::Mat& h, cv::Point start);

}  // namespace m2n2
