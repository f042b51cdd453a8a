// m2n2 — COCO run-length encoding and polygon rasterisation.
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

// Counts of alternating runs, starting with zeros, over the mask in column-major
// (Fortran) order, as the COCO API stores them.
std::vector<uint32_t> rle_counts(const cv::Mat& mask);
cv::Mat rle_decode(const std::vector<uint32_t>& counts, int height, int width);
// COCO's compressed string form of the counts (pycocotools' rleToString).
std::string rle_to_string(const std::vector<uint32_t>& counts);
std::vector<uint32_t> rle_from_string(const std::string& s);
// Rasterises COCO polygons ([x0,y0,x1,y1,...] each) into a CV_8U 0/255 mask. Refuses
// (Error) more than kMaxPolygonVertices vertices in all, or edges crossing more than
// 2 * height * width + 1e7 scanlines in all (the fill's cost).
inline constexpr size_t kMaxPolygonVertices = 100000;
cv::Mat polygons_to_mask(const std::vector<std::vector<double>>& polygons, int height, int width);

}  // namespace m2n2
