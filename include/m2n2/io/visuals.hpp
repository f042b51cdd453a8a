// m2n2 — pictures and encodings of results, shared by the command line and the server.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/interactive/segmenter.hpp"

namespace m2n2 {

// COCO RLE of a 0/255 mask: {"size": [h, w], "counts": "..."}.
nlohmann::json rle_json(const cv::Mat& mask);
// The soft map as 16-bit, 32768 at the decision boundary of the positive clicks.
cv::Mat soft_png(const cv::Mat& soft);
// The mask tinted over the image (RGB), its outline, and the clicks as dots.
cv::Mat overlay_image(const cv::Mat& rgb, const cv::Mat& mask, const std::vector<Click>& clicks);
// A CV_32F map as an RGB jet heatmap (low = red).
cv::Mat heatmap_png(const cv::Mat& map);
// A 16-bit label map coloured over the image (RGB), with white label borders.
cv::Mat label_overlay(const cv::Mat& rgb, const cv::Mat& labels);

}  // namespace m2n2
