// The linear algebra of random-walk Normalized Cuts in LibTorch (part of the LibTorch
// backend): the power walk and the bipartition by the walk's second eigenvector.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "whole_image/linear_algebra.hpp"

namespace m2n2::detail {

namespace {

// NCut bipartition of a symmetric graph Wm with degrees deg: the second eigenvector of
// the normalised Laplacian (sign: largest |y| positive), then a sweep of thresholds
// minimising cut/vol(A) + cut/vol(B).
Bipartition cut_graph(const at::Tensor& Wm_in, const at::Tensor& deg, int sweep) {
  Bipartition b;
  const int n = static_cast<int>(deg.size(0));
  at::Tensor dis = deg.rsqrt();
  at::Tensor M = dis.unsqueeze(1) * Wm_in * dis.unsqueeze(0);
  M = 0.5 * (M + M.t());
  auto eig = at::linalg_eigh(M, "L");
  at::Tensor vecs = std::get<1>(eig);
  // Largest eigenvalue of M = smallest of I - M; the second largest is column n-2.
  at::Tensor y = vecs.select(1, n - 2) * dis;
  const auto ya = y.accessor<double, 1>();
  int64_t imax = 0;
  for (int i = 1; i < n; ++i)
    if (std::fabs(ya[i]) > std::fabs(ya[imax])) imax = i;
  if (ya[imax] < 0) y = -y;
  std::vector<double> yv(y.data_ptr<double>(), y.data_ptr<double>() + n);
  const double lo = 0.99 * *std::min_element(yv.begin(), yv.end());
  const double hi = 0.99 * *std::max_element(yv.begin(), yv.end());
  const auto Wa = Wm_in.contiguous();
  const auto da = deg.contiguous();
  const double* w = Wa.data_ptr<double>();
  const double* pv = da.data_ptr<double>();
  for (int s = 0; s < sweep; ++s) {
    const double theta = sweep > 1 ? lo + (hi - lo) * s / (sweep - 1) : 0.5 * (lo + hi);
    double cut = 0, volA = 0, volB = 0;
    for (int i = 0; i < n; ++i) (yv[i] > theta ? volA : volB) += pv[i];
    if (volA <= 0 || volB <= 0) {
      b.sweep_ncut.push_back(1e300);
      continue;
    }
    for (int i = 0; i < n; ++i) {
      if (!(yv[i] > theta)) continue;
      const double* wr = w + static_cast<size_t>(i) * n;
      for (int j = 0; j < n; ++j)
        if (!(yv[j] > theta)) cut += wr[j];
    }
    const double nc = cut / volA + cut / volB;
    b.sweep_ncut.push_back(nc);
    if (nc < b.ncut) {
      b.ncut = nc;
      b.side.assign(n, 0);
      for (int i = 0; i < n; ++i) b.side[i] = yv[i] > theta;
    }
  }
  return b;
}

}  // namespace

Bipartition rw_ncut_bipartition_libtorch(const std::vector<double>& Pv, int n, int sweep) {
  if (n < 2) return {};
  at::Tensor P = at::from_blob(const_cast<double*>(Pv.data()), {n, n}, at::kDouble).clone();
  P = P / P.sum(1, true).clamp_min(1e-300);
  // Stationary distribution by power iteration from uniform.
  at::Tensor pi = at::full({n}, 1.0 / n, at::kDouble);
  // (Capped: on nearly decomposable walks π converges slowly and is ill-conditioned
  // anyway; the cut only needs the degrees roughly right.)
  at::Tensor Pt = P.t().contiguous();
  for (int it = 0; it < 500; ++it) {
    at::Tensor next = at::mv(Pt, pi);
    next = next / next.sum();
    const double delta = (next - pi).abs().sum().item<double>();
    pi = next;
    if (delta < 1e-10) break;
  }
  pi = pi.clamp_min(1e-15);
  // W = ½(ΠP + PᵀΠ); degrees = π.
  return cut_graph(0.5 * (pi.unsqueeze(1) * P + P.t() * pi.unsqueeze(0)), pi, sweep);
}

Bipartition graph_ncut_bipartition_libtorch(const std::vector<double>& Wv, int n, int sweep) {
  if (n < 2) return {};
  at::Tensor Wm = at::from_blob(const_cast<double*>(Wv.data()), {n, n}, at::kDouble).clone();
  return cut_graph(Wm, Wm.sum(1).clamp_min(1e-300), sweep);
}

std::vector<double> cosine_affinity_libtorch(const std::vector<double>& Fv, int n, int dim, double alpha) {
  at::Tensor F = at::from_blob(const_cast<double*>(Fv.data()), {n, dim}, at::kDouble);
  F = F / F.norm(2, 1, true).clamp_min(1e-300);
  at::Tensor S = at::mm(F, F.t());
  const double lo = S.min().item<double>(), hi = S.max().item<double>();
  S = hi > lo ? (S - lo) / (hi - lo) : at::ones_like(S);
  S = at::pow(S.clamp_min(0), alpha).contiguous();
  return std::vector<double>(S.data_ptr<double>(), S.data_ptr<double>() + S.numel());
}

std::vector<double> power_walk_libtorch(const std::vector<float>& Pf, int n, int power) {
  // Power walk P^k by repeated squaring, rows renormalised.
  at::Tensor P = at::from_blob(const_cast<float*>(Pf.data()), {n, n}, at::kFloat).to(at::kDouble);
  P = P / P.sum(1, true).clamp_min(1e-300);
  at::Tensor Pk = at::eye(n, at::kDouble), base = P;
  for (int k = std::max(1, power); k > 0; k >>= 1) {
    if (k & 1) Pk = at::mm(Pk, base);
    if (k > 1) base = at::mm(base, base);
    Pk = Pk / Pk.sum(1, true).clamp_min(1e-300);
  }
  Pk = Pk.contiguous();
  return std::vector<double>(Pk.data_ptr<double>(), Pk.data_ptr<double>() + Pk.numel());
}

}  // namespace m2n2::detail
