// m2n2 — DiffSeg (Tian et al., CVPR 2024): whole-image segmentation by merging
// attention maps with the symmetric KL divergence (see spec/diffseg.md).
#pragma once
#include <map>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/attention/attention.hpp"

namespace m2n2 {

struct DiffSegParams {
  int anchors = 16;                         // M: M×M anchor grid
  std::vector<double> kl_thresholds = {1.1, 1.1, 1.1};  // one per merge iteration
  double log_floor = 1e-12;                 // clamp before log (fp32 instead of the reference's fp16)
};
// Throws InvalidArgument naming the flag of the first setting out of range.
void check_params(const DiffSegParams& p);

// Side-length weights of the resolutions present (8:4:2:1 for 64/32/16/8).
std::vector<double> resolution_weights(const std::vector<int>& sides);
// The M anchor coordinates along a side of R tokens.
std::vector<int> anchor_coordinates(int M, int R);
// ½ KL(x‖y) + ½ KL(y‖x) over n entries.
double symmetric_kl(const float* x, const float* y, int64_t n, double floor = 1e-12);

// Aggregates maps of several resolutions to the finest grid R: (R², R²) rows that
// sum to 1. Single resolution: returned as is.
AttentionMap aggregate_resolutions(const std::vector<AttentionMap>& by_resolution);

// Greedy merge of proposals (K×n) for iterations >= 1; returns merged K'×n.
std::vector<std::vector<float>> merge_proposals(const std::vector<std::vector<float>>& proposals, double threshold,
                                                double floor = 1e-12);

struct AutoResult {
  cv::Mat labels;  // CV_16U, 0..K-1 at image size
  int segments = 0;
  std::map<std::string, std::string> meta;
};

AutoResult diffseg(const Attention& att, int height, int width, const DiffSegParams& params);

}  // namespace m2n2
