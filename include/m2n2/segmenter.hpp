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

#include "m2n2/markov_operator.hpp"
#include "m2n2/threshold_scoring.hpp"
#include "m2n2/upsampling.hpp"

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
  double max_table_bytes = 2.0e9;  // upsampling table limit (see JointBilateralUpsampler)
};

// Rounds a click to its pixel like the reference (round half to even).
inline cv::Point click_pixel(const Click& c) {
  return {static_cast<int>(std::nearbyint(c.x)), static_cast<int>(std::nearbyint(c.y))};
}

class Segmenter {
 public:
  // rgb: CV_8UC3 RGB. The operator is shared: several sessions (objects) of one
  // image use the same one.
  Segmenter(const cv::Mat& rgb, std::shared_ptr<const MarkovOperator> op, const M2N2Params& params);

  int rows() const { return rgb_.rows; }
  int cols() const { return rgb_.cols; }

  // The grid Markov-map of a point (iteration counts), h×w CV_32F.
  const cv::Mat& lowres_markov_map(cv::Point p);
  // The final distance map of a point at image size, in [0, 1], CV_32F.
  const cv::Mat& distance_map(cv::Point p);
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

  cv::Mat rgb_;
  std::shared_ptr<const MarkovOperator> op_;
  M2N2Params params_;
  std::unique_ptr<JointBilateralUpsampler> jbu_;
  std::map<std::pair<int, int>, Entry> cache_;
};

}  // namespace m2n2
