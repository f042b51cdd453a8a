// m2n2 — DiffSeg (Tian et al., CVPR 2024): whole-image segmentation by merging
// attention maps with the symmetric KL divergence (see spec/diffseg.md).
#pragma once
#include <map>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/attention/attention.hpp"

namespace m2n2 {

// Arithmetic of the first merging iteration: the reference's float16 (emulated on the
// CPU, exact) or float32 with logs clamped at log_floor (a departure, faster).
enum class KlPrecision { Fp16, Fp32 };
KlPrecision parse_kl_precision(const std::string& s);  // "fp16" | "fp32"
std::string to_string(KlPrecision p);

struct DiffSegParams {
  int anchors = 16;                         // M: M×M anchor grid
  std::vector<double> kl_thresholds = {1.1, 1.1, 1.1};  // one per merge iteration
  double log_floor = 1e-12;                 // fp32: clamp before log; fp16: later iterations use no clamp
  KlPrecision kl_precision = KlPrecision::Fp16;
  bool raw_labels = true;                   // the reference's proposal indices (gaps kept); false: 0..K-1
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

// Maps rounded to float16 (kept as floats) with their float16 logs; underflow[r] = 1
// when row r has an entry that rounds to 0 (its divergence is NaN in the reference).
struct Fp16Maps {
  int64_t rows = 0, n = 0;
  std::vector<float> values, logs;
  std::vector<char> underflow;
};
Fp16Maps round_maps_to_fp16(const float* maps, int64_t rows, int64_t n);
// The reference's float16 symmetric KL of two rounded maps with their logs (both
// strictly positive); see diffseg_fp16.cpp for the order of the float32 sums.
float fp16_symmetric_kl(const float* x, const float* lx, const float* y, const float* ly, int64_t n);
// Iteration 0 in float16: for each anchor token, the float64 mean of the pixel maps
// (rows of the N×N `attention`) whose float16 divergence is below the float16
// threshold; NaN rows for anchors that match nothing. `underflow_maps` receives how
// many of the N maps have an entry that rounds to 0 in float16.
std::vector<float> diffseg_anchor_proposals_fp16(const float* attention, int64_t N, const std::vector<int64_t>& anchors,
                                                 double kl_threshold, int64_t* underflow_maps = nullptr);

struct AutoResult {
  cv::Mat labels;  // CV_16U at image size: 0..K-1, or proposal indices (DiffSeg's raw labels)
  int segments = 0;
  std::map<std::string, std::string> meta;
};

// The reference's input protocol: the centred square of side min(H, W) (offset
// ((H−c)/2, (W−c)/2)) resized to size×size, bilinear with half-pixel centres, no
// antialiasing (TF's tf.image.resize).
cv::Mat center_crop_resize(const cv::Mat& image, int size = 512);

AutoResult diffseg(const Attention& att, int height, int width, const DiffSegParams& params);

}  // namespace m2n2
