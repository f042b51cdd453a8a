// m2n2 — the embedded default attention source: self-attention-like maps built
// from the image alone (no weights, CPU, any size).
#pragma once
#include <string>

#include "m2n2/attention.hpp"

namespace m2n2 {

// Global settings of the default source (tuned once on GrabCut; no per-image tuning).
struct DefaultSourceSettings {
  int grid = 48;               // finest token grid (M2N2 uses this one)
  double sigma_color = 0.08;   // colour kernel width (CIE Lab / 100)
  double sigma_position = 0.12;  // spatial kernel width (fraction of the image side)
  double texture_weight = 1.0;   // how much a cell's colour variance widens its colour kernel
  double context_weight = 0.5;   // weight of the blurred neighbourhood colour
  double context_sigma = 1.5;    // neighbourhood blur, in cells
  double edge_weight = 10.0;    // intervening contours: logit -= edge_weight · max edge on the segment i–j
  double edge_sigma = 1.0;      // image blur (pixels) before the edge map
  int radius = 16;              // attention only within this many cells (0 = everywhere)
  double floor = 0.1;           // uniform share of every row (keeps the walk irreducible)
  int levels = 4;              // also deliver grids g/2, g/4 ... (weight 0; DiffSeg/NCut use them)

  // "grid=64,sigma_color=0.1,..." -> settings (unknown keys are an Error).
  static DefaultSourceSettings parse(const std::string& s);
  std::string to_string() const;
};

// Builds the maps for an RGB image (CV_8UC3).
Attention default_attention(const cv::Mat& rgb, const DefaultSourceSettings& s);

}  // namespace m2n2
