// m2n2 — upsampling of grid maps to the image: bilinear (PyTorch's
// align_corners=False convention) followed by a joint bilateral filter guided by
// the image, as in the M2N2 reference.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

struct JbuParams {
  double spatial_sigma = 1.0;  // in grid cells
  double range_sigma = 0.1;    // RGB in [0, 1], isotropic over the 3 channels
};

// Bilinear resize of a CV_32F map to H×W with PyTorch's half-pixel convention.
cv::Mat upsample_bilinear(const cv::Mat& low, int H, int W);

// The filter is linear in the grid map: out(p) = Σ_cells C_p(cell)·low(cell), where
// C_p folds the bilateral weights of p's window with the bilinear weights. C depends
// only on the image, so it is tabulated once per image (a small block of cells per
// pixel) and every click then costs one short dot product per pixel. When the table
// would exceed `max_table_bytes` the filter runs directly per call instead.
class JointBilateralUpsampler {
 public:
  JointBilateralUpsampler(const cv::Mat& rgb8, int grid_h, int grid_w, const JbuParams& params,
                          double max_table_bytes = 2.0e9);
  // low: grid_h×grid_w CV_32F -> H×W CV_32F (not normalised).
  cv::Mat apply(const cv::Mat& low) const;
  // The reference's arithmetic with no table (window sums in float, in offset order).
  cv::Mat apply_direct(const cv::Mat& low) const;
  // The filter with no table, vectorised like the table's construction (and about as
  // fast as building it): for an image that gets only one map.
  cv::Mat apply_untabulated(const cv::Mat& low) const;
  bool tabulated() const { return table_ != nullptr; }
  double table_bytes() const { return static_cast<double>(table_size_) * sizeof(float); }
  static double estimate_table_bytes(int H, int W, int grid_h, int grid_w, const JbuParams& params);
  // The exact size of the table this upsampler would build.
  static double required_table_bytes(int H, int W, int grid_h, int grid_w, const JbuParams& params);

 private:
  struct Axis {  // bilinear source indices and weights along one axis
    std::vector<int> i0, off;
    std::vector<float> l0, l1;
    int radius = 0;   // loop radius in image pixels
    int cells = 0;    // table block extent in grid cells
    std::vector<int> lo;  // first cell of the block per output coordinate
  };
  struct Row {
    int dy, dx_min, dx_max;
    std::vector<float> spatial;  // per dx
  };
  void build_table();
  static Axis make_axis(int out, int in, double sigma);

  cv::Mat rgb_;
  int H_, W_, h_, w_;
  JbuParams params_;
  Axis ax_, ay_;
  std::vector<Row> rows_;
  float range_lut_[511];
  std::shared_ptr<float[]> table_;  // H*W*cells_y*cells_x, shared by copies (read-only once built)
  std::size_t table_size_ = 0;
};

}  // namespace m2n2
