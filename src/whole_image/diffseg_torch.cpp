// DiffSeg's first merging iteration in LibTorch (part of the LibTorch backend).
#include <ATen/ATen.h>

#include "whole_image/linear_algebra.hpp"

namespace m2n2::detail {

std::vector<float> diffseg_anchor_proposals_libtorch(const float* attention, int64_t N,
                                                     const std::vector<int64_t>& anchors, double log_floor,
                                                     double kl_threshold) {
  // Anchors against every token's map, in GEMM form:
  // 2D = rowsum(X∘LX) + rowsum(Y∘LY)ᵀ − X·LYᵀ − LX·Yᵀ.
  at::Tensor Y = at::from_blob(const_cast<float*>(attention), {N, N}, at::kFloat);
  at::Tensor LY = at::log(at::clamp_min(Y, log_floor));
  at::Tensor idx = at::tensor(anchors, at::kLong);
  at::Tensor X = Y.index_select(0, idx), LX = LY.index_select(0, idx);
  at::Tensor sx = (X * LX).sum(1, true), sy = (Y * LY).sum(1).unsqueeze(0);
  at::Tensor D = 0.5 * (sx + sy - at::mm(X, LY.t()) - at::mm(LX, Y.t()));
  at::Tensor B = (D < kl_threshold).to(at::kDouble);
  at::Tensor P = at::mm(B, Y.to(at::kDouble)) / B.sum(1, true);
  P = P.to(at::kFloat).contiguous();
  return std::vector<float>(P.data_ptr<float>(), P.data_ptr<float>() + P.numel());
}

}  // namespace m2n2::detail
