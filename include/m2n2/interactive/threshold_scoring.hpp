// m2n2 — truncated nearest neighbour: choosing, per click, the threshold of its
// distance map with the best boundary score.
#pragma once
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

struct ScoringParams {
  float max_area = 0.4f;  // area prior: segments over this fraction of the image score 0
  int quantization = 1024;
  bool use_prior = true, use_edge = true, use_pos = true, use_neg = true;
};

// floor(q · |Sobel(d)| / max|Sobel(d)|), 3×3 Sobel with reflect padding. CV_32S.
cv::Mat integer_sobel(const cv::Mat& d, int quantization);

// Per candidate threshold k = 0..P-2 (pixels sorted by distance, stable): the
// threshold t_k and the mean quantised gradient over the outer 4-neighbour boundary
// of the segment made of the first k+1 pixels. Independent of the clicks, so it is
// computed once per distance map.
struct ThresholdCurve {
  std::vector<float> thresholds;
  std::vector<float> edge;
};
ThresholdCurve threshold_curve(const cv::Mat& d, int quantization);

struct ThresholdChoice {
  int index = 0;
  float threshold = 0;
  float score = 0;
};

// Picks argmax_k prior·edge·pos·neg. `same` are the distances at the clicks of the
// same label (the click itself included), `opposite` at the other clicks.
ThresholdChoice choose_threshold(const ThresholdCurve& curve, const std::vector<float>& same,
                                 const std::vector<float>& opposite, float max_distance, const ScoringParams& p);

}  // namespace m2n2
