// Private: the whole-image methods' dense linear algebra, in LibTorch (part of the
// LibTorch backend; the methods reach it through libtorch/backend.hpp).
#pragma once
#include <cstdint>
#include <vector>

#include "m2n2/whole_image/walk_ncut.hpp"

namespace m2n2::detail {

// diffseg_torch.cpp: see TorchBackend::diffseg_anchor_proposals.
std::vector<float> diffseg_anchor_proposals_libtorch(const float* attention, int64_t n,
                                                     const std::vector<int64_t>& anchors, double log_floor,
                                                     double kl_threshold);
// walk_ncut_torch.cpp
Bipartition rw_ncut_bipartition_libtorch(const std::vector<double>& P, int n, int sweep);
Bipartition graph_ncut_bipartition_libtorch(const std::vector<double>& W, int n, int sweep);
std::vector<double> cosine_affinity_libtorch(const std::vector<double>& F, int n, int dim, double alpha);
// P^power by repeated squaring, rows renormalised (n×n, double).
std::vector<double> power_walk_libtorch(const std::vector<float>& P, int n, int power);

}  // namespace m2n2::detail
