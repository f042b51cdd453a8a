// m2n2 — the M2N2 interactive segmenter for one image: per-click distance maps
// (Markov-map, upsampling, flood fill), cached per point, and the truncated
// nearest-neighbour merge of all clicks into one mask.
#pragma once
#include <cmath>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/interactive/threshold_scoring.hpp"
#include "m2n2/interactive/upsampling.hpp"

namespace m2n2 {

struct Click {
  double x = 0, y = 0;  // pixels of the original image
  bool positive = true;
};

struct M2N2Params {
  OperatorParams op;
  MarkovParams markov;
  JbuParams jbu;
  bool flood_fill = true;
  ScoringParams scoring;
  // Upsampling table limit (see JointBilateralUpsampler). An image whose table would
  // exceed it is refused (the untabulated filter costs ~10^12 operations per click
  // there); --max-side makes it fit.
  double max_table_bytes = 2.0e9;
  // Images whose longer side exceeds this are segmented at this side (attention,
  // upsampling, flood fill, scoring); masks and maps come back at full size. 0 = off.
  int max_side = 0;
};

// Throws InvalidArgument naming the flag of the first setting out of range.
void check_params(const M2N2Params& p);

// The image the attention path works on: `rgb` itself, or downscaled (INTER_AREA) so
// that its longer side is `max_side` (0 = never).
cv::Mat fit_max_side(const cv::Mat& rgb, int max_side);

// A coordinate rounded to its pixel like the reference (round half to even). Values
// beyond ±2^30 (or NaN) become -2^30: outside every image, and never an overflowing cast.
inline int pixel_coordinate(double v) {
  constexpr double kFar = 1073741824.0;
  if (!(v > -kFar && v < kFar)) return -static_cast<int>(kFar);
  return static_cast<int>(std::nearbyint(v));
}
inline cv::Point click_pixel(const Click& c) { return {pixel_coordinate(c.x), pixel_coordinate(c.y)}; }

class Segmenter {
 public:
  // rgb: CV_8UC3 RGB, the working image (see fit_max_side). The operator is shared:
  // several sessions (objects) of one image use the same one. `full`: the size of the
  // original image when `rgb` is a downscaled copy of it; clicks are given and results
  // returned in its pixels. Throws Error when the upsampling table would not fit.
  Segmenter(const cv::Mat& rgb, std::shared_ptr<const MarkovOperator> op, const M2N2Params& params,
            cv::Size full = cv::Size());

  int rows() const { return full_.height; }
  int cols() const { return full_.width; }
  cv::Size working_size() const { return rgb_.size(); }

  // The grid Markov-map of a point (iteration counts), h×w CV_32F.
  const cv::Mat& lowres_markov_map(cv::Point p);
  // The final distance map of a point at image size, in [0, 1], CV_32F.
  cv::Mat distance_map(cv::Point p);
  // Builds the upsampling table now (otherwise the first distance map does). When at
  // most one point is expected (expect_points), no table is built: the one map is
  // filtered directly, which costs less than a table; a second point builds it then.
  void prepare_table();
  // How many distinct points will get distance maps, when the caller knows (-1 = unknown).
  void expect_points(int n) { expected_points_ = n; }
  // Computes the maps of several points in one batched Markov run.
  void prepare(const std::vector<cv::Point>& points);

  struct Result {
    cv::Mat mask;  // CV_8U, 0/255
    cv::Mat soft;  // CV_32F, min over positive clicks of d_i / t_i (1 = boundary)
    std::vector<ThresholdChoice> choices;  // per click
  };
  // Segments from all clicks (order matters only for clicks on the same pixel).
  Result segment(const std::vector<Click>& clicks);

  size_t cached_points() const { return cache_.size(); }
  void clear_cache() { cache_.clear(); }
  // Bytes held: the working image, the upsampling table, the cached per-point maps and
  // the operator's storage (shared by sessions of one image, counted here once).
  double memory_bytes() const;

 private:
  struct Entry {
    cv::Mat lowres, distance;
    ThresholdCurve curve;
    float max_distance = 0;
    bool has_distance = false;
  };
  Entry& entry(cv::Point p);
  void finish(Entry& e, cv::Point p);
  void check_point(cv::Point p) const;
  cv::Point to_work(cv::Point p) const;  // original pixel -> working pixel
  bool scaled() const { return full_ != rgb_.size(); }

  cv::Mat rgb_;
  cv::Size full_;
  std::shared_ptr<const MarkovOperator> op_;
  M2N2Params params_;
  std::unique_ptr<JointBilateralUpsampler> jbu_;
  int expected_points_ = -1;
  int upsampled_ = 0;  // distance maps made so far
  bool table_tried_ = false;
  std::map<std::pair<int, int>, Entry> cache_;
};

}  // namespace m2n2
