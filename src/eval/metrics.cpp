#include "m2n2/eval/metrics.hpp"

#include "m2n2/core/error.hpp"

namespace m2n2 {

double iou(const cv::Mat& pred, const cv::Mat& gt, const cv::Mat& ignore) {
  if (pred.size() != gt.size()) throw Error("iou: prediction and GT differ in size");
  int64_t inter = 0, uni = 0;
  for (int y = 0; y < gt.rows; ++y) {
    const uint8_t* p = pred.ptr<uint8_t>(y);
    const uint8_t* g = gt.ptr<uint8_t>(y);
    const uint8_t* ig = ignore.empty() ? nullptr : ignore.ptr<uint8_t>(y);
    for (int x = 0; x < gt.cols; ++x) {
      if (ig && ig[x]) continue;
      const bool a = p[x] != 0, b = g[x] != 0;
      inter += a && b;
      uni += a || b;
    }
  }
  return uni == 0 ? 1.0 : static_cast<double>(inter) / static_cast<double>(uni);
}

int number_of_clicks(const std::vector<double>& ious, double tau, int max_clicks) {
  for (size_t k = 0; k < ious.size() && static_cast<int>(k) < max_clicks; ++k)
    if (ious[k] >= tau) return static_cast<int>(k) + 1;
  return max_clicks;
}

Summary summarize(const std::vector<InstanceResult>& results, int max_clicks) {
  Summary s;
  s.instances = static_cast<int>(results.size());
  s.miou_per_click.assign(max_clicks, 0.0);
  if (results.empty()) return s;
  for (const auto& r : results) {
    const int n85 = number_of_clicks(r.ious, 0.85, max_clicks);
    const int n90 = number_of_clicks(r.ious, 0.90, max_clicks);
    const int n95 = number_of_clicks(r.ious, 0.95, max_clicks);
    s.noc85 += n85;
    s.noc90 += n90;
    s.noc95 += n95;
    auto reached = [&](double tau) {
      for (size_t k = 0; k < r.ious.size() && static_cast<int>(k) < max_clicks; ++k)
        if (r.ious[k] >= tau) return true;
      return false;
    };
    s.nof85 += !reached(0.85);
    s.nof90 += !reached(0.90);
    s.nof95 += !reached(0.95);
    for (int k = 0; k < max_clicks; ++k) {
      double v = 0;
      if (!r.ious.empty()) v = r.ious[std::min<size_t>(static_cast<size_t>(k), r.ious.size() - 1)];
      s.miou_per_click[k] += v;
    }
  }
  const double n = static_cast<double>(results.size());
  s.noc85 /= n;
  s.noc90 /= n;
  s.noc95 /= n;
  for (auto& v : s.miou_per_click) v /= n;
  return s;
}

}  // namespace m2n2
