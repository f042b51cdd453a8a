// Pictures and encodings of results: mask overlays, soft maps, heatmaps, label maps, RLE.
#include "m2n2/io/visuals.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <opencv2/imgproc.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/rle.hpp"

namespace m2n2 {

nlohmann::json rle_json(const cv::Mat& mask) {
  return {{"size", {mask.rows, mask.cols}}, {"counts", rle_to_string(rle_counts(mask))}};
}

// Soft map: 16-bit, 32768 at the decision boundary of the positive clicks' distance.
cv::Mat soft_png(const cv::Mat& soft) {
  cv::Mat out(soft.size(), CV_16U);
  for (int y = 0; y < soft.rows; ++y)
    for (int x = 0; x < soft.cols; ++x) {
      const float v = soft.at<float>(y, x);
      const double s = std::isfinite(v) ? std::min(65535.0, std::round(static_cast<double>(v) * 32768.0)) : 65535.0;
      out.at<uint16_t>(y, x) = static_cast<uint16_t>(s);
    }
  return out;
}

cv::Mat overlay_image(const cv::Mat& rgb, const cv::Mat& mask, const std::vector<Click>& clicks) {
  cv::Mat out = rgb.clone();
  for (int y = 0; y < out.rows; ++y)
    for (int x = 0; x < out.cols; ++x)
      if (mask.at<uint8_t>(y, x)) {
        auto& p = out.at<cv::Vec3b>(y, x);
        p = cv::Vec3b(static_cast<uint8_t>(0.5 * p[0] + 0.5 * 30), static_cast<uint8_t>(0.5 * p[1] + 0.5 * 144),
                      static_cast<uint8_t>(0.5 * p[2] + 0.5 * 255));
      }
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
  cv::drawContours(out, contours, -1, cv::Scalar(255, 255, 255), 1);
  const int r = std::max(3, std::min(out.rows, out.cols) / 80);
  for (const auto& c : clicks) {
    const cv::Point p = click_pixel(c);
    cv::circle(out, p, r + 1, cv::Scalar(255, 255, 255), cv::FILLED, cv::LINE_AA);
    cv::circle(out, p, r, c.positive ? cv::Scalar(40, 200, 40) : cv::Scalar(220, 40, 40), cv::FILLED, cv::LINE_AA);
  }
  return out;
}

cv::Mat heatmap_png(const cv::Mat& m) {
  double lo, hi;
  cv::minMaxLoc(m, &lo, &hi);
  cv::Mat u8;
  m.convertTo(u8, CV_8U, hi > lo ? 255.0 / (hi - lo) : 0.0, hi > lo ? -lo * 255.0 / (hi - lo) : 0.0);
  cv::Mat bgr, rgb;
  cv::applyColorMap(255 - u8, bgr, cv::COLORMAP_JET);
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat label_overlay(const cv::Mat& rgb, const cv::Mat& labels) {
  cv::Mat out = rgb.clone();
  for (int y = 0; y < out.rows; ++y)
    for (int x = 0; x < out.cols; ++x) {
      const uint32_t l = labels.at<uint16_t>(y, x);
      uint32_t h = (l + 1) * 2654435761u;
      const cv::Vec3b col(static_cast<uint8_t>(64 + (h & 0xbf)), static_cast<uint8_t>(64 + ((h >> 8) & 0xbf)),
                          static_cast<uint8_t>(64 + ((h >> 16) & 0xbf)));
      auto& p = out.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(0.45 * p[c] + 0.55 * col[c]);
    }
  // label borders
  for (int y = 0; y + 1 < out.rows; ++y)
    for (int x = 0; x + 1 < out.cols; ++x)
      if (labels.at<uint16_t>(y, x) != labels.at<uint16_t>(y, x + 1) || labels.at<uint16_t>(y, x) != labels.at<uint16_t>(y + 1, x))
        out.at<cv::Vec3b>(y, x) = cv::Vec3b(255, 255, 255);
  return out;
}

nlohmann::json save_result(const std::string& mask_path, const Segmenter::Result& res, const cv::Mat& rgb,
                           const std::vector<Click>& clicks, const SaveOptions& o) {
  auto write = [&](const std::string& path, const cv::Mat& img) {
    std::error_code ec;
    if (!o.overwrite && std::filesystem::exists(path, ec)) throw Error(path + ": exists (use --overwrite)");
    write_png_atomic(path, img);
  };
  write(mask_path, res.mask);
  nlohmann::json j = {{"mask", mask_path}, {"area", cv::countNonZero(res.mask)}};
  const std::filesystem::path p(mask_path);
  const std::string stem = (p.parent_path() / p.stem()).string();
  if (o.rle) j["rle"] = rle_json(res.mask);
  if (o.soft) {
    write(stem + "_soft.png", soft_png(res.soft));
    j["soft"] = stem + "_soft.png";
  }
  if (o.overlay) {
    write(stem + "_overlay.png", overlay_image(rgb, res.mask, clicks));
    j["overlay"] = stem + "_overlay.png";
  }
  return j;
}

}  // namespace m2n2
