// m2n2 — pictures and encodings of results, shared by the command line and the server.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
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

struct SaveOptions {
  bool rle = false;        // add the mask's COCO RLE to the returned JSON
  bool soft = false;       // also write STEM_soft.png (soft_png)
  bool overlay = false;    // also write STEM_overlay.png (overlay_image)
  bool overwrite = false;  // else an existing file is an Error("PATH: exists (use --overwrite)")
};
// Writes a segmentation result as `m2n2 segment` does: the 0/255 mask at `mask_path` and,
// as asked, its siblings. Returns {"mask", "area"} plus "rle", "soft", "overlay".
nlohmann::json save_result(const std::string& mask_path, const Segmenter::Result& result, const cv::Mat& rgb,
                           const std::vector<Click>& clicks, const SaveOptions& options);

}  // namespace m2n2
