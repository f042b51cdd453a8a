// m2n2 — interactive segmentation metrics: IoU, NoC, NoF, mIoU per click.
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

// IoU of non-zero pixels over the scored pixels (ignore non-zero = not scored).
// Two empty masks give IoU 1.
double iou(const cv::Mat& pred, const cv::Mat& gt, const cv::Mat& ignore = cv::Mat());

// First 1-based click k with ious[k-1] >= tau; max_clicks when never reached.
int number_of_clicks(const std::vector<double>& ious, double tau, int max_clicks);

struct InstanceResult {
  std::string id;
  std::vector<double> ious;  // after click 1..n
  double seconds_attention = 0;
  double seconds_clicks = 0;
};

struct Summary {
  int instances = 0;
  double noc85 = 0, noc90 = 0, noc95 = 0;
  int nof85 = 0, nof90 = 0, nof95 = 0;
  std::vector<double> miou_per_click;
};

// Dataset summary; instances shorter than max_clicks are padded with their last IoU.
Summary summarize(const std::vector<InstanceResult>& results, int max_clicks);

}  // namespace m2n2
