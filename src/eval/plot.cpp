#include "m2n2/eval/plot.hpp"

#include <algorithm>
#include <cstdio>
#include <opencv2/imgproc.hpp>

namespace m2n2 {

cv::Mat plot_curves(const std::vector<Curve>& curves, const std::string& title) {
  const int W = 800, H = 520, L = 100, R = 30, T = 50, B = 70;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  size_t n = 1;
  double lo = 1.0;
  for (const auto& c : curves) {
    n = std::max(n, c.values.size());
    for (double v : c.values) lo = std::min(lo, v);
  }
  lo = std::max(0.0, std::floor(lo * 10.0) / 10.0);
  if (lo > 0.9) lo = 0.9;
  const double hi = 1.0;
  auto X = [&](double k) { return L + static_cast<int>((k - 1) / std::max<double>(1, n - 1) * (W - L - R)); };
  auto Y = [&](double v) { return T + static_cast<int>((hi - v) / (hi - lo) * (H - T - B)); };
  const cv::Scalar black(0, 0, 0), grey(220, 220, 220);
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  for (int i = 0; i <= 10; ++i) {
    const double v = lo + (hi - lo) * i / 10.0;
    cv::line(img, {L, Y(v)}, {W - R, Y(v)}, grey, 1);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    cv::putText(img, buf, {L - 42, Y(v) + 5}, font, 0.4, black, 1, cv::LINE_AA);
  }
  for (size_t k = 1; k <= n; ++k) {
    if (n > 10 && k % 2 == 0 && k != n) continue;
    cv::line(img, {X(static_cast<double>(k)), H - B}, {X(static_cast<double>(k)), H - B + 5}, black, 1);
    cv::putText(img, std::to_string(k), {X(static_cast<double>(k)) - 6, H - B + 20}, font, 0.4, black, 1, cv::LINE_AA);
  }
  cv::rectangle(img, {L, T}, {W - R, H - B}, black, 1);
  cv::putText(img, "Number of clicks", {W / 2 - 70, H - 25}, font, 0.55, black, 1, cv::LINE_AA);
  cv::Mat ylabel(30, 200, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(ylabel, "mIoU", {75, 20}, font, 0.55, black, 1, cv::LINE_AA);
  cv::Mat rot;
  cv::rotate(ylabel, rot, cv::ROTATE_90_COUNTERCLOCKWISE);
  rot.copyTo(img(cv::Rect(5, T + (H - T - B) / 2 - 100, 30, 200)));
  cv::putText(img, title, {L, 30}, font, 0.6, black, 1, cv::LINE_AA);
  const cv::Scalar colors[] = {{200, 60, 30}, {30, 120, 220}, {40, 160, 40}, {150, 50, 150}, {20, 20, 20}, {0, 150, 150}};
  for (size_t ci = 0; ci < curves.size(); ++ci) {
    const auto& c = curves[ci];
    const cv::Scalar col = colors[ci % 6];
    for (size_t k = 1; k < c.values.size(); ++k)
      cv::line(img, {X(static_cast<double>(k)), Y(c.values[k - 1])}, {X(static_cast<double>(k + 1)), Y(c.values[k])}, col, 2,
               cv::LINE_AA);
    for (size_t k = 0; k < c.values.size(); ++k) cv::circle(img, {X(static_cast<double>(k + 1)), Y(c.values[k])}, 3, col, cv::FILLED, cv::LINE_AA);
    // legend
    const int ly = T + 20 + 22 * static_cast<int>(ci);
    cv::line(img, {W - R - 260, ly}, {W - R - 230, ly}, col, 2, cv::LINE_AA);
    cv::putText(img, c.label.substr(0, 34), {W - R - 222, ly + 5}, font, 0.45, black, 1, cv::LINE_AA);
  }
  return img;  // BGR-free: colours above are given as RGB and written via encode_png (RGB->BGR)
}

}  // namespace m2n2
