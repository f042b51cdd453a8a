#include "m2n2/interactive/markov_operator.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"
#include "attention/device_values.hpp"
#include "core/torch_device.hpp"

namespace m2n2 {

namespace {
// acc[b][:] += Σ_{i in [i0,i1)} x[b][i] · K[i][:]
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void rows_times_chains(const float* __restrict k, const float* __restrict x, float* __restrict acc, int64_t i0,
                       int64_t i1, int64_t B, int64_t N) {
  // Column blocks keep the B accumulator slices in L1 while K streams by.
  const int64_t block = std::max<int64_t>(256, 8192 / std::max<int64_t>(1, B));
  for (int64_t j0 = 0; j0 < N; j0 += block) {
    const int64_t j1 = std::min(N, j0 + block);
    for (int64_t i = i0; i < i1; ++i) {
      const float* kr = k + i * N;
      for (int64_t b = 0; b < B; ++b) {
        const float xv = x[b * N + i];
        if (xv == 0.0f) continue;
        float* ab = acc + b * N;
        for (int64_t j = j0; j < j1; ++j) ab[j] += xv * kr[j];
      }
    }
  }
}
// One Sinkhorn pass over rows [i0, i1) of K: r_i = 1 / (K_i · c), and, when
// `accumulate`, s += r_i K_i (this range's share of Kᵀ r) while the row is in cache.
// Four rows at a time: c is loaded once for four dot products (four independent
// vector chains hide the FMA latency) and s is read and written once for four rows.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void sinkhorn_rows(const float* __restrict k, const float* __restrict c, float* __restrict r, float* __restrict s,
                   int64_t i0, int64_t i1, int64_t N, bool accumulate) {
  constexpr int L = 16;  // independent partial sums per row: lets the dot products vectorise
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const float* k0 = k + i * N;
    const float* k1 = k0 + N;
    const float* k2 = k1 + N;
    const float* k3 = k2 + N;
    float a0[L] = {0}, a1[L] = {0}, a2[L] = {0}, a3[L] = {0};
    int64_t j = 0;
    for (; j + L <= N; j += L)
      for (int l = 0; l < L; ++l) {
        const float cj = c[j + l];
        a0[l] += k0[j + l] * cj;
        a1[l] += k1[j + l] * cj;
        a2[l] += k2[j + l] * cj;
        a3[l] += k3[j + l] * cj;
      }
    float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
    for (; j < N; ++j) {
      d0 += k0[j] * c[j];
      d1 += k1[j] * c[j];
      d2 += k2[j] * c[j];
      d3 += k3[j] * c[j];
    }
    for (int l = 0; l < L; ++l) {
      d0 += a0[l];
      d1 += a1[l];
      d2 += a2[l];
      d3 += a3[l];
    }
    const float r0 = 1.0f / d0, r1 = 1.0f / d1, r2 = 1.0f / d2, r3 = 1.0f / d3;
    r[i] = r0;
    r[i + 1] = r1;
    r[i + 2] = r2;
    r[i + 3] = r3;
    if (accumulate)
      for (j = 0; j < N; ++j) s[j] += (r0 * k0[j] + r1 * k1[j]) + (r2 * k2[j] + r3 * k3[j]);
  }
  for (; i < i1; ++i) {
    const float* row = k + i * N;
    float acc[L] = {0};
    int64_t j = 0;
    for (; j + L <= N; j += L)
      for (int l = 0; l < L; ++l) acc[l] += row[j + l] * c[j + l];
    float d = 0;
    for (; j < N; ++j) d += row[j] * c[j];
    for (int l = 0; l < L; ++l) d += acc[l];
    const float ri = 1.0f / d;
    r[i] = ri;
    if (accumulate)
      for (j = 0; j < N; ++j) s[j] += ri * row[j];
  }
}

// Sinkhorn/IPF on the CPU with one pass over K per iteration (instead of two
// matrix-vector products): the pass that computes r = 1/(K c) also sums Kᵀ r for the
// next c. The same iterates as c = 1/(Kᵀ r), r = 1/(K c) from r = 1.
void sinkhorn_cpu(const at::Tensor& K, int iterations, at::Tensor& r_out, at::Tensor& c_out) {
  const int64_t N = K.size(0);
  const float* k = K.data_ptr<float>();
  const int T = std::max(1, at::get_num_threads());
  std::vector<float> r(static_cast<size_t>(N), 1.0f), c(static_cast<size_t>(N), 1.0f);
  std::vector<float> s(static_cast<size_t>(T) * N);
  // c = 1 / (Kᵀ 1): a pass with c = 1 whose r is discarded.
  for (int it = 0; it <= iterations; ++it) {
    const bool first = it == 0, last = it == iterations;
    std::fill(s.begin(), s.end(), 0.0f);
#pragma omp parallel for num_threads(T) schedule(static)
    for (int t = 0; t < T; ++t) {
      const int64_t i0 = N * t / T, i1 = N * (t + 1) / T;
      if (first) {
        // Column sums: s += 1 · K_i.
        float* st = s.data() + static_cast<int64_t>(t) * N;
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = 0; j < N; ++j) st[j] += k[i * N + j];
      } else {
        sinkhorn_rows(k, c.data(), r.data(), s.data() + static_cast<int64_t>(t) * N, i0, i1, N, !last);
      }
    }
    if (last) break;
    for (int64_t j = 0; j < N; ++j) {
      float sum = 0;
      for (int t = 0; t < T; ++t) sum += s[static_cast<size_t>(t) * N + j];
      c[static_cast<size_t>(j)] = 1.0f / sum;
    }
  }
  r_out = at::from_blob(r.data(), {N}, at::kFloat).clone();
  c_out = at::from_blob(c.data(), {N}, at::kFloat).clone();
}

}  // namespace

struct MarkovOperator::Impl {
  OperatorParams params;
  int h = 0, w = 0;
  int64_t n = 0;
  at::Tensor K;  // N×N sharpened attention, storage dtype, on device
  at::Tensor r;  // N, fp32: row scaling
  at::Tensor c;  // N, fp32: column scaling

  // S (B×N) -> S·A, with A = diag(r) K diag(c).
  at::Tensor apply(const at::Tensor& S) const {
    at::Tensor in = (S * r.unsqueeze(0)).to(K.scalar_type());
    at::Tensor out;
    if (S.size(0) == 1) out = at::mv(K.t(), in.squeeze(0)).unsqueeze(0);
    else if (K.device().is_cpu() && K.scalar_type() == at::kFloat) out = several_chains_cpu(in.contiguous());
    else out = at::mm(in, K);
    return out.to(at::kFloat) * c.unsqueeze(0);
  }

  // X (B×N) · K on the CPU, reading K once for all chains: OpenBLAS's GEMM with a
  // few-row left operand is slower here than B separate GEMVs. Each thread streams a
  // range of K's rows into its own accumulators; the partial sums are added at the end.
  at::Tensor several_chains_cpu(const at::Tensor& X) const {
    const int64_t B = X.size(0), N = n;
    const int T = std::max(1, at::get_num_threads());
    at::Tensor partial = at::zeros({T, B, N}, at::kFloat);
    const float* k = K.data_ptr<float>();
    const float* x = X.data_ptr<float>();
    float* p = partial.data_ptr<float>();
#pragma omp parallel for num_threads(T) schedule(static)
    for (int t = 0; t < T; ++t) {
      const int64_t i0 = N * t / T, i1 = N * (t + 1) / T;
      rows_times_chains(k, x, p + static_cast<int64_t>(t) * B * N, i0, i1, B, N);
    }
    return partial.sum(0);
  }
};

double operator_memory_bytes(int64_t tokens) {
  // An upper bound beyond the map itself: a copy of it in fp32 on another device,
  // plus a reduced-precision copy of K (the sharpening itself runs in place).
  return 2.0 * 4.0 * static_cast<double>(tokens) * static_cast<double>(tokens);
}

MarkovOperator::MarkovOperator(const AttentionMap& att, const OperatorParams& params)
    : MarkovOperator(AttentionMap(att), params) {}

MarkovOperator::MarkovOperator(AttentionMap&& att, const OperatorParams& params) : impl_(std::make_unique<Impl>()) {
  auto& I = *impl_;
  I.params = params;
  I.h = att.h;
  I.w = att.w;
  I.n = att.tokens();
  if (I.n <= 0 || attention_values(att) != I.n * I.n)
    throw Error("attention '" + att.name + "': data size does not match its " + std::to_string(att.h) + "x" +
                std::to_string(att.w) + " grid");
  if (!(params.temperature > 0)) throw Error("--temperature must be > 0");
  if (params.ipf_iterations < 0) throw Error("--ipf-iterations must be >= 0");
  const at::Device dev = detail::torch_device(params.device);
  const at::ScalarType dtype = detail::storage_dtype(params.device, params.precision);

  // The map's own storage becomes A (no copy where it already lives on `dev`).
  at::Tensor A = detail::take_tensor(std::move(att)).view({I.n, I.n});
  if (A.device() != dev) A = A.to(dev);
  // Temperature: softmax over keys of log(A)/T (zeros stay zero), a block of rows at a
  // time, written back in place: the map's buffer becomes K, and the only other
  // buffer is one block (no second N×N buffer: 1 GiB less at grid 128). A CPU block of
  // ~1 MiB stays in cache between the passes; on a GPU larger blocks save launches.
  {
    const int64_t target = A.is_cuda() ? (int64_t{64} << 20) : (int64_t{1} << 20);
    const int64_t rows = std::min(I.n, std::max<int64_t>(1, target / (I.n * static_cast<int64_t>(A.element_size()))));
    at::Tensor out;
    for (int64_t i = 0; i < I.n; i += rows) {
      at::Tensor block = A.narrow(0, i, std::min(rows, I.n - i));
      block.log_().div_(params.temperature);
      if (!out.defined() || out.size(0) != block.size(0)) out = at::empty_like(block);
      at::softmax_out(out, block, 1);
      block.copy_(out);
    }
  }
  at::Tensor K = std::move(A);

  // Sinkhorn/IPF on the scaling vectors. The reference divides columns by their
  // sums, then rows by theirs; with A = diag(r) K diag(c) that is c = 1/(Kᵀ r),
  // r = 1/(K c).
  at::Tensor r = at::ones({I.n}, K.options());
  at::Tensor c = at::ones({I.n}, K.options());
  if (K.device().is_cpu() && K.scalar_type() == at::kFloat && params.ipf_iterations > 0 && !params.two_pass_sinkhorn) {
    sinkhorn_cpu(K.contiguous(), params.ipf_iterations, r, c);
  } else {
    at::Tensor Kt = K.t();
    for (int it = 0; it < params.ipf_iterations; ++it) {
      c = at::reciprocal(at::mv(Kt, r));
      r = at::reciprocal(at::mv(K, c));
    }
  }
  I.r = r;
  I.c = c;
  I.K = K.to(dtype).contiguous();
}

MarkovOperator::~MarkovOperator() = default;

int MarkovOperator::h() const { return impl_->h; }
int MarkovOperator::w() const { return impl_->w; }
int64_t MarkovOperator::tokens() const { return impl_->n; }
const OperatorParams& MarkovOperator::params() const { return impl_->params; }
Device MarkovOperator::device() const { return impl_->K.device().is_cuda() ? Device::Cuda : Device::Cpu; }

int64_t MarkovOperator::bytes_per_step() const {
  return impl_->K.numel() * static_cast<int64_t>(impl_->K.element_size());
}

std::vector<float> MarkovOperator::dense() const {
  const auto& I = *impl_;
  at::Tensor D = (I.r.unsqueeze(1) * I.K.to(at::kFloat) * I.c.unsqueeze(0)).to(at::kCPU).contiguous();
  return std::vector<float>(D.data_ptr<float>(), D.data_ptr<float>() + D.numel());
}


void MarkovOperator::step(std::vector<float>& states, int batch) const {
  const auto& I = *impl_;
  at::Tensor S = at::from_blob(states.data(), {batch, I.n}, at::kFloat).to(I.r.device());
  S = I.apply(S);
  S = S / std::get<0>(S.max(1, true));
  S = S.to(at::kCPU).contiguous();
  std::copy(S.data_ptr<float>(), S.data_ptr<float>() + S.numel(), states.begin());
}

std::vector<std::vector<float>> MarkovOperator::markov_maps(const std::vector<std::vector<float>>& starts,
                                                            const MarkovParams& mp) const {
  const auto& I = *impl_;
  const int64_t B = static_cast<int64_t>(starts.size());
  std::vector<std::vector<float>> out(starts.size());
  if (B == 0) return out;
  const float thr = mp.threshold;
  const float unreached = static_cast<float>(mp.linear_interpolation ? mp.max_iterations : mp.max_iterations + 1);

  // Chains that have not finished, as one batch on the device.
  std::vector<int64_t> active;
  at::Tensor S = at::empty({B, I.n}, at::kFloat);
  for (int64_t b = 0; b < B; ++b) {
    if (static_cast<int64_t>(starts[b].size()) != I.n) throw Error("markov-map: start state has the wrong size");
    std::copy(starts[b].begin(), starts[b].end(), S[b].data_ptr<float>());
    active.push_back(b);
  }
  // Host-side trackers.
  std::vector<std::vector<float>> tracker(B, std::vector<float>(I.n, unreached));
  std::vector<std::vector<uint8_t>> pending(B, std::vector<uint8_t>(I.n, 1));
  std::vector<int64_t> remaining(B, I.n);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < I.n; ++j)
      if (starts[b][j] > thr) {
        tracker[b][j] = 0.f;
        pending[b][j] = 0;
        --remaining[b];
      }
  }
  S = S.to(I.r.device());
  at::Tensor prev_host = S.to(at::kCPU).contiguous();
  for (int it = 0; it < mp.max_iterations; ++it) {
    // Drop finished chains from the batch.
    std::vector<int64_t> keep;
    for (size_t a = 0; a < active.size(); ++a)
      if (remaining[active[a]] > 0) keep.push_back(static_cast<int64_t>(a));
    if (keep.empty()) break;
    if (keep.size() != active.size()) {
      at::Tensor idx = at::tensor(keep, at::kLong);
      S = S.index_select(0, idx.to(S.device()));
      prev_host = prev_host.index_select(0, idx);
      std::vector<int64_t> na;
      for (auto a : keep) na.push_back(active[a]);
      active.swap(na);
    }
    S = I.apply(S);
    S = S / std::get<0>(S.max(1, true));
    at::Tensor host = S.to(at::kCPU).contiguous();
    for (size_t a = 0; a < active.size(); ++a) {
      const int64_t b = active[a];
      const float* s = host[static_cast<int64_t>(a)].data_ptr<float>();
      const float* p = prev_host[static_cast<int64_t>(a)].data_ptr<float>();
      auto& tr = tracker[b];
      auto& pd = pending[b];
      for (int64_t j = 0; j < I.n; ++j) {
        if (!pd[j] || !(s[j] > thr)) continue;
        pd[j] = 0;
        --remaining[b];
        if (mp.linear_interpolation) {
          const float delta = it == 0 ? (1.0f - thr) : (s[j] - p[j]);
          const float grad = 1.0f - (s[j] - thr) / (delta + 1e-6f);
          tr[j] = static_cast<float>(it) + grad;
        } else {
          tr[j] = static_cast<float>(it + 1);
        }
      }
    }
    prev_host = host;
  }
  for (int64_t b = 0; b < B; ++b) out[b] = std::move(tracker[b]);
  return out;
}

}  // namespace m2n2
