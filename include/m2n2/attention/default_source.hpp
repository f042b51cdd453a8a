// m2n2 — the embedded default attention source: self-attention-like maps built
// from the image alone (no weights, CPU, any size).
#pragma once
#include <string>

#include "m2n2/attention/attention.hpp"

namespace m2n2 {

// Global settings of the default source (tuned once on GrabCut; no per-image tuning).
struct DefaultSourceSettings {
  int grid = 64;               // finest token grid (M2N2 uses this one)
  double sigma_color = 0.08;   // colour kernel width (CIE Lab / 100)
  double sigma_position = 0.18;  // spatial kernel width (fraction of the image side)
  double texture_weight = 1.0;   // how much a cell's colour variance widens its colour kernel
  double context_weight = 0.5;   // weight of the blurred neighbourhood colour
  double context_sigma = 1.5;    // neighbourhood blur, in cells
  double edge_weight = 10.0;    // intervening contours: logit -= edge_weight · max edge on the segment i–j
  double edge_sigma = 1.0;      // image blur (pixels) before the edge map
  int radius = 21;              // attention only within this many cells (0 = everywhere)
  double floor = 0.1;           // uniform share of every row (keeps the walk irreducible)
  double region_weight = 0.5;   // share of each row that jumps within the cell's image regions
  double region_k = 20;         // graph-segmentation scale of the finest region level (Lab units · pixels)
  int region_scales = 3;        // region levels: k, 4k, 16k ...
  int region_min = 20;          // smallest region, pixels of the working image
  int smooth = 0;               // bilateral smoothing passes on the Lab image before everything else
  double smooth_sigma = 0.1;    // their colour sigma (Lab / 100)
  double texture_feature = 0.0;  // weight of each cell's Lab standard deviation as a feature
  double texture_sigma = 1.5;    // blur of that texture map, in cells (at grid 64)
  double orient_feature = 0.0;   // weight of 8 oriented texture-energy features (0 = off)
  double lightness_weight = 0.6;  // scale of L* against a*, b* in every colour distance, contour and region (1 = CIE Lab)
  int levels = 4;              // also deliver grids g/2, g/4 ... (weight 0; DiffSeg/NCut use them)

  // "grid=64,sigma_color=0.1,..." -> settings (unknown keys are an Error).
  static DefaultSourceSettings parse(const std::string& s);
  // Range checks (also after --grid overrides the grid); throws Error naming the setting.
  void validate() const;
  static constexpr int kMinGrid = 4, kMaxGrid = 256;
  std::string to_string() const;
};

// The settings `m2n2 auto` (DiffSeg, NCut) gives the default source: a global
// kernel without region jumps, so that attention spans each whole region.
inline constexpr const char* kWholeImageSettings = "grid=48,radius=0,sigma_position=0.5,region_weight=0,lightness_weight=1";

// Bytes of the N×N maps of every level (what default_attention allocates).
double default_source_memory_bytes(const DefaultSourceSettings& s);

// Builds the maps for an RGB image (CV_8UC3).
Attention default_attention(const cv::Mat& rgb, const DefaultSourceSettings& s);

}  // namespace m2n2
