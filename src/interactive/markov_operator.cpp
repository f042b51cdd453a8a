#include "m2n2/interactive/markov_operator.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "m2n2/core/error.hpp"
#include "m2n2/core/half.hpp"
#include "core/fast_math.hpp"
#include "interactive/operator_errors.hpp"
#include "libtorch/backend.hpp"
#include "core/check.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

namespace m2n2 {

namespace {
template <typename T>
struct FourRows {
  const T *r0, *r1, *r2, *r3;
};
// Rows i … i+3 of the N-column matrix k.
template <typename T>
inline FourRows<T> four_rows(const T* k, int64_t i, int64_t N) {
  const T* p = k + i * N;
  return {p, p + N, p + 2 * N, p + 3 * N};
}

// The operator's two storages on the CPU: fp32, and fp16 (--precision fp16) as the
// bits of a binary16 number. Only zero and normal fp16 numbers are stored (see
// half_storage): shifted into a float's bit positions they are normal floats 2^112
// (raw_unit) times too small. The kernels fold that factor into the chains' weights,
// which is exact (a power of two), so a widened value costs a shift and no multiply.
inline float raw_at(const float* k, int64_t j) { return k[j]; }
inline float raw_at(const uint16_t* k, int64_t j) {
  const uint32_t bits = static_cast<uint32_t>(k[j]) << 13;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
constexpr float raw_unit(const float*) { return 1.0f; }
constexpr float raw_unit(const uint16_t*) { return 0x1p112f; }
template <typename T>
inline float value_at(const T* k, int64_t j) {
  return raw_at(k, j) * raw_unit(k);
}

// ab[t] += x0·k0[t] + x1·k1[t] + x2·k2[t] + x3·k3[t] for t < n.
template <typename T>
[[gnu::always_inline]] inline void add_four_rows(float* __restrict ab, const T* __restrict k0, const T* __restrict k1,
                                                 const T* __restrict k2, const T* __restrict k3, float x0, float x1,
                                                 float x2, float x3, int64_t n) {
  const float u = raw_unit(k0);
  x0 *= u, x1 *= u, x2 *= u, x3 *= u;
  for (int64_t t = 0; t < n; ++t)
    ab[t] += (x0 * raw_at(k0, t) + x1 * raw_at(k1, t)) + (x2 * raw_at(k2, t) + x3 * raw_at(k3, t));
}

// The column block of the chain kernel: the B accumulator slices (and four widened
// rows, where there are) stay in L1.
inline int64_t chain_block(int64_t B, bool widened) {
  return std::max<int64_t>(256, 8192 / (std::max<int64_t>(1, B) + (widened ? 4 : 0)));
}

// acc[b][:] += Σ_{i in [i0,i1)} x[b][i] · K[i][:]
// Four rows at a time: each accumulator element is read and written once for four
// rows of K (one load and one store per four multiply-adds), and column blocks keep
// the B accumulator slices in L1 while K streams by. Rows whose four weights are all
// zero (most of them in a chain's first steps) are skipped. With fp16 storage and
// several chains, the four rows' block is widened to floats once (into `wide`,
// 4 × chain_block(B, true) floats) rather than once per chain.
template <typename T>
[[gnu::always_inline]] inline void rows_times_chains_body(const T* __restrict k, const float* __restrict x,
                                                          float* __restrict acc, int64_t i0, int64_t i1, int64_t B,
                                                          int64_t N, float* __restrict wide) {
  const int64_t block = chain_block(B, wide != nullptr);
  for (int64_t j0 = 0; j0 < N; j0 += block) {
    const int64_t n = std::min(N, j0 + block) - j0;
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4) {
      const auto [k0, k1, k2, k3] = four_rows(k + j0, i, N);
      bool widened = false;
      for (int64_t b = 0; b < B; ++b) {
        const float* xb = x + b * N + i;
        const float x0 = xb[0], x1 = xb[1], x2 = xb[2], x3 = xb[3];
        if (x0 == 0.0f && x1 == 0.0f && x2 == 0.0f && x3 == 0.0f) continue;
        float* ab = acc + b * N + j0;
        if (wide) {
          if (!widened) {
            for (int64_t t = 0; t < n; ++t) {
              wide[t] = value_at(k0, t);
              wide[block + t] = value_at(k1, t);
              wide[2 * block + t] = value_at(k2, t);
              wide[3 * block + t] = value_at(k3, t);
            }
            widened = true;
          }
          add_four_rows(ab, wide, wide + block, wide + 2 * block, wide + 3 * block, x0, x1, x2, x3, n);
        } else {
          add_four_rows(ab, k0, k1, k2, k3, x0, x1, x2, x3, n);
        }
      }
    }
    for (; i < i1; ++i) {
      const T* kr = k + i * N + j0;
      for (int64_t b = 0; b < B; ++b) {
        const float xv = x[b * N + i];
        if (xv == 0.0f) continue;
        float* ab = acc + b * N + j0;
        const float xu = xv * raw_unit(kr);
        for (int64_t t = 0; t < n; ++t) ab[t] += xu * raw_at(kr, t);
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void rows_times_chains(const float* k, const float* x, float* acc, int64_t i0, int64_t i1, int64_t B, int64_t N) {
  rows_times_chains_body(k, x, acc, i0, i1, B, N, static_cast<float*>(nullptr));
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void rows_times_chains(const uint16_t* k, const float* x, float* acc, int64_t i0, int64_t i1, int64_t B,
                       int64_t N) {
  std::vector<float> wide(B > 1 ? static_cast<size_t>(4 * chain_block(B, true)) : 0);
  rows_times_chains_body(k, x, acc, i0, i1, B, N, wide.empty() ? nullptr : wide.data());
}

// The end of a group of four rows in the Sinkhorn pass: their r from the dot products
// d, and the group becomes the one whose Kᵀr share the next group's loop adds (weights
// r·raw_unit, or 0 when the pass does not accumulate).
template <typename T>
[[gnu::always_inline]] inline void finish_group(float* r, int64_t i, float d0, float d1, float d2, float d3,
                                                FourRows<T> k, bool accumulate, float u, const T*& p0,
                                                const T*& p1, const T*& p2, const T*& p3, float& q0, float& q1,
                                                float& q2, float& q3) {
  r[i] = 1.0f / d0;
  r[i + 1] = 1.0f / d1;
  r[i + 2] = 1.0f / d2;
  r[i + 3] = 1.0f / d3;
  p0 = k.r0, p1 = k.r1, p2 = k.r2, p3 = k.r3;
  if (accumulate) q0 = r[i] * u, q1 = r[i + 1] * u, q2 = r[i + 2] * u, q3 = r[i + 3] * u;
}

// s += the last group's Kᵀr share.
template <typename T>
inline void add_group(float* __restrict s, int64_t N, const T* p0, const T* p1, const T* p2, const T* p3, float q0,
                      float q1, float q2, float q3) {
  for (int64_t j = 0; j < N; ++j)
    s[j] += (q0 * raw_at(p0, j) + q1 * raw_at(p1, j)) + (q2 * raw_at(p2, j) + q3 * raw_at(p3, j));
}

// One Sinkhorn pass over rows [i0, i1) of K: r_i = 1 / (K_i · c), and, when
// `accumulate`, s += r_i K_i (this range's share of Kᵀ r) while the row is in cache.
// Four rows at a time: c is loaded once for four dot products (four independent
// vector chains hide the FMA latency) and s is read and written once for four rows.
// Software-pipelined: the loop over columns that takes the dot products of rows
// i … i+3 (streamed from memory) also adds rows i-4 … i-1, whose r is now known
// (still in cache), into s, so the stream from memory never waits for a pass that
// only reads the cache.
template <typename T>
[[gnu::always_inline]] inline void sinkhorn_rows_body(const T* __restrict k, const float* __restrict c,
                                                      float* __restrict r, float* __restrict s, int64_t i0,
                                                      int64_t i1, int64_t N, bool accumulate) {
  constexpr int L = 16;  // independent partial sums per row: lets the dot products vectorise
  const float u = raw_unit(k);
  // The previous group of four rows, to be added into s, and its weights in Kᵀr: the
  // first group has none (weights 0; adding 0·K leaves s as it is), nor does a pass
  // that does not accumulate.
  const T *p0 = k + i0 * N, *p1 = p0, *p2 = p0, *p3 = p0;
  float q0 = 0, q1 = 0, q2 = 0, q3 = 0;
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const auto [k0, k1, k2, k3] = four_rows(k, i, N);
    float a0[L] = {0}, a1[L] = {0}, a2[L] = {0}, a3[L] = {0};
    int64_t j = 0;
    for (; j + L <= N; j += L)
      for (int l = 0; l < L; ++l) {
        const float cj = c[j + l];
        a0[l] += raw_at(k0, j + l) * cj;
        a1[l] += raw_at(k1, j + l) * cj;
        a2[l] += raw_at(k2, j + l) * cj;
        a3[l] += raw_at(k3, j + l) * cj;
        s[j + l] += (q0 * raw_at(p0, j + l) + q1 * raw_at(p1, j + l)) + (q2 * raw_at(p2, j + l) + q3 * raw_at(p3, j + l));
      }
    for (int64_t t = j; t < N; ++t)
      s[t] += (q0 * raw_at(p0, t) + q1 * raw_at(p1, t)) + (q2 * raw_at(p2, t) + q3 * raw_at(p3, t));
    float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
    for (; j < N; ++j) {
      d0 += raw_at(k0, j) * c[j];
      d1 += raw_at(k1, j) * c[j];
      d2 += raw_at(k2, j) * c[j];
      d3 += raw_at(k3, j) * c[j];
    }
    for (int l = 0; l < L; ++l) {
      d0 += a0[l];
      d1 += a1[l];
      d2 += a2[l];
      d3 += a3[l];
    }
    finish_group(r, i, d0, d1, d2, d3, {k0, k1, k2, k3}, accumulate, u, p0, p1, p2, p3, q0, q1, q2, q3);
  }
  if (accumulate && i > i0) add_group(s, N, p0, p1, p2, p3, q0, q1, q2, q3);
  for (; i < i1; ++i) {
    const T* row = k + i * N;
    float acc[L] = {0};
    int64_t j = 0;
    for (; j + L <= N; j += L)
      for (int l = 0; l < L; ++l) acc[l] += raw_at(row, j + l) * c[j + l];
    float d = 0;
    for (; j < N; ++j) d += raw_at(row, j) * c[j];
    for (int l = 0; l < L; ++l) d += acc[l];
    const float ri = 1.0f / d;
    r[i] = ri;
    if (accumulate)
      for (j = 0; j < N; ++j) s[j] += (ri * u) * raw_at(row, j);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void sinkhorn_rows(const float* k, const float* c, float* r, float* s, int64_t i0, int64_t i1, int64_t N,
                   bool accumulate) {
  sinkhorn_rows_body(k, c, r, s, i0, i1, N, accumulate);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define M2N2_HALF_SINKHORN_AVX512 1
// GCC 12 reports its own _mm512_undefined_* inside the intrinsics as uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 16 stored values as raw floats (raw_at).
__attribute__((target("avx512f"), always_inline)) inline __m512 widen16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 13));
}

// The same pass over fp16 storage written for AVX-512 (the compiler's vectorisation of
// the body above widens 8 values per instruction and has no FMA there): 16 stored
// values widened per instruction, fused multiply-adds; the four rows' dot products
// take 16 partial sums each, as above, added in a tree at the end.
__attribute__((target("avx512f"))) void sinkhorn_rows_half_avx512(const uint16_t* __restrict k,
                                                                  const float* __restrict c, float* __restrict r,
                                                                  float* __restrict s, int64_t i0, int64_t i1,
                                                                  int64_t N, bool accumulate) {
  const float u = raw_unit(k);
  const uint16_t *p0 = k + i0 * N, *p1 = p0, *p2 = p0, *p3 = p0;
  float q0 = 0, q1 = 0, q2 = 0, q3 = 0;
  const int64_t N16 = N / 16 * 16;
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const auto [k0, k1, k2, k3] = four_rows(k, i, N);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const __m512 Q0 = _mm512_set1_ps(q0), Q1 = _mm512_set1_ps(q1), Q2 = _mm512_set1_ps(q2), Q3 = _mm512_set1_ps(q3);
    for (int64_t j = 0; j < N16; j += 16) {
      const __m512 cj = _mm512_loadu_ps(c + j);
      a0 = _mm512_fmadd_ps(widen16(k0 + j), cj, a0);
      a1 = _mm512_fmadd_ps(widen16(k1 + j), cj, a1);
      a2 = _mm512_fmadd_ps(widen16(k2 + j), cj, a2);
      a3 = _mm512_fmadd_ps(widen16(k3 + j), cj, a3);
      const __m512 t = _mm512_add_ps(_mm512_fmadd_ps(Q0, widen16(p0 + j), _mm512_mul_ps(Q1, widen16(p1 + j))),
                                     _mm512_fmadd_ps(Q2, widen16(p2 + j), _mm512_mul_ps(Q3, widen16(p3 + j))));
      _mm512_storeu_ps(s + j, _mm512_add_ps(_mm512_loadu_ps(s + j), t));
    }
    float d0 = _mm512_reduce_add_ps(a0), d1 = _mm512_reduce_add_ps(a1), d2 = _mm512_reduce_add_ps(a2),
          d3 = _mm512_reduce_add_ps(a3);
    for (int64_t j = N16; j < N; ++j) {
      d0 += raw_at(k0, j) * c[j];
      d1 += raw_at(k1, j) * c[j];
      d2 += raw_at(k2, j) * c[j];
      d3 += raw_at(k3, j) * c[j];
      s[j] += (q0 * raw_at(p0, j) + q1 * raw_at(p1, j)) + (q2 * raw_at(p2, j) + q3 * raw_at(p3, j));
    }
    finish_group(r, i, d0, d1, d2, d3, {k0, k1, k2, k3}, accumulate, u, p0, p1, p2, p3, q0, q1, q2, q3);
  }
  if (accumulate && i > i0) add_group(s, N, p0, p1, p2, p3, q0, q1, q2, q3);
  // The last rows (fewer than four), as the portable body does them.
  if (i < i1) sinkhorn_rows_body(k, c, r, s, i, i1, N, accumulate);
}
#pragma GCC diagnostic pop
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void sinkhorn_rows_half_portable(const uint16_t* k, const float* c, float* r, float* s, int64_t i0, int64_t i1,
                                 int64_t N, bool accumulate) {
  sinkhorn_rows_body(k, c, r, s, i0, i1, N, accumulate);
}

void sinkhorn_rows(const uint16_t* k, const float* c, float* r, float* s, int64_t i0, int64_t i1, int64_t N,
                   bool accumulate) {
#ifdef M2N2_HALF_SINKHORN_AVX512
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) return sinkhorn_rows_half_avx512(k, c, r, s, i0, i1, N, accumulate);
#endif
  sinkhorn_rows_half_portable(k, c, r, s, i0, i1, N, accumulate);
}

// Sinkhorn/IPF on the CPU with one pass over K per iteration (instead of two
// matrix-vector products): the pass that computes r = 1/(K c) also sums Kᵀ r for the
// next c. The same iterates as c = 1/(Kᵀ r), r = 1/(K c) from r = 1. With fp16 storage
// r and c scale the stored values; the kernel reads c times raw_unit (exact).
template <typename Value>
void sinkhorn_one_pass(const Value* k, int64_t N, int iterations, std::vector<float>& r, std::vector<float>& c) {
  const int T = std::max(1, num_threads());
  const float u = raw_unit(k);
  r.assign(static_cast<size_t>(N), 1.0f);
  c.assign(static_cast<size_t>(N), 1.0f);
  std::vector<float> ck(static_cast<size_t>(N), u);  // c · raw_unit, what the kernel reads
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
          for (int64_t j = 0; j < N; ++j) st[j] += value_at(k, i * N + j);
      } else {
        sinkhorn_rows(k, ck.data(), r.data(), s.data() + static_cast<int64_t>(t) * N, i0, i1, N, !last);
      }
    }
    if (last) break;
    for (int64_t j = 0; j < N; ++j) {
      float sum = 0;
      for (int t = 0; t < T; ++t) sum += s[static_cast<size_t>(t) * N + j];
      c[static_cast<size_t>(j)] = 1.0f / sum;
      ck[static_cast<size_t>(j)] = c[static_cast<size_t>(j)] * u;
    }
  }
}

// acc (B×N) = X (B×N) · K, reading K once for all chains: each thread streams a range
// of K's rows into its own accumulators; the partial sums are added at the end.
template <typename Value>
void chains_times_k(const Value* k, const float* x, float* out, int64_t B, int64_t N) {
  const int T = std::max(1, num_threads());
  std::vector<float> partial(static_cast<size_t>(T) * B * N, 0.0f);
#pragma omp parallel for num_threads(T) schedule(static)
  for (int t = 0; t < T; ++t) {
    const int64_t i0 = N * t / T, i1 = N * (t + 1) / T;
    rows_times_chains(k, x, partial.data() + static_cast<int64_t>(t) * B * N, i0, i1, B, N);
  }
  const int64_t total = B * N;
  std::copy(partial.begin(), partial.begin() + total, out);
  for (int t = 1; t < T; ++t) {
    const float* p = partial.data() + static_cast<int64_t>(t) * total;
    for (int64_t e = 0; e < total; ++e) out[e] += p[e];
  }
}

// The two matrix-vector products per iteration of the first implementation:
// c = 1/(Kᵀ r), then r = 1/(K c). Same iterates as the one-pass form, other
// summation order; kept to check it.
void sinkhorn_two_pass(const float* k, int64_t N, int iterations, std::vector<float>& r, std::vector<float>& c) {
  r.assign(static_cast<size_t>(N), 1.0f);
  c.assign(static_cast<size_t>(N), 1.0f);
  std::vector<float> colsum(static_cast<size_t>(N));
  std::vector<float> unused(static_cast<size_t>(N));
  for (int it = 0; it < iterations; ++it) {
    chains_times_k(k, r.data(), colsum.data(), 1, N);
    for (int64_t j = 0; j < N; ++j) c[static_cast<size_t>(j)] = 1.0f / colsum[static_cast<size_t>(j)];
    const int T = std::max(1, num_threads());
#pragma omp parallel for num_threads(T) schedule(static)
    for (int t = 0; t < T; ++t)
      sinkhorn_rows(k, c.data(), r.data(), unused.data(), N * t / T, N * (t + 1) / T, N, false);
  }
}

// Temperature: each row becomes softmax(log(row) / T), in place (zeros stay zero).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void sharpen_row(float* __restrict row, int64_t N, float t) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < N; ++j) {
    const float v = detail::fast_log(row[j]) / t;
    row[j] = v;
    mx = std::max(mx, v);
  }
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < N; ++j) {
    // Weights under e^-86 of the row's largest become 0 (not subnormals).
    const float e = detail::fast_exp(row[j] - mx, -86.0f);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < N; ++j) row[j] *= inv;
}

void sharpen_rows(float* a, int64_t N, double temperature) {
  const float t = static_cast<float>(temperature);
  const int T = std::max(1, num_threads());
#pragma omp parallel for num_threads(T) schedule(static)
  for (int64_t i = 0; i < N; ++i) sharpen_row(a + i * N, N, t);
}

// fp16 storage on the CPU (--precision fp16). What is stored is M = diag(r) K diag(c)
// for scaling vectors that make it (nearly) doubly stochastic, so that every row and
// every column carries mass about 1. Scaled by a power of two that puts its largest
// entry in [2^14, 2^15), it is rounded to the nearest fp16 (ties to even); entries
// under fp16's smallest normal (2^-14 after scaling, about 1e-9 before) become 0,
// which takes at most N·2^-14/scale of any row's or column's mass. Raw fp16 of K (the
// CUDA path) has no such bound: K's entries sit near 1/N, fp16's subnormal range at
// N = 16384.
//
// M is made after the first Sinkhorn iteration in fp32 (its rows then sum to 1), and
// the other iterations run on M itself: Sinkhorn commutes with diagonal scaling (its
// iterates on diag(r1) K diag(c1) are those on K divided by r1 and c1), so it is the
// same balancing, but 199 of its 200 passes read half the bytes. The Markov steps
// then apply diag(r) M diag(c) with the scaling vectors that this second Sinkhorn
// found. Where M would have a column of zeros (a column whose mass is under the
// flush), the operator falls back to balancing K in fp32 and storing A = diag(r) K
// diag(c) itself (`rescaled` false: A needs only the power of two undone).
struct HalfStorage {
  std::vector<uint16_t> bits;
  float unscale = 1.0f;   // 1 / scale
  bool rescaled = false;  // bits hold M, the operator is diag(r) M diag(c)
};

// True when every column of the stored matrix has a nonzero entry.
bool every_column_nonzero(const std::vector<uint16_t>& bits, int64_t N) {
  const int T = std::max(1, num_threads());
  std::vector<uint16_t> any(static_cast<size_t>(T) * N, 0);
#pragma omp parallel for num_threads(T) schedule(static)
  for (int t = 0; t < T; ++t) {
    uint16_t* a = any.data() + static_cast<int64_t>(t) * N;
    for (int64_t i = N * t / T; i < N * (t + 1) / T; ++i) {
      const uint16_t* row = bits.data() + i * N;
      for (int64_t j = 0; j < N; ++j) a[j] |= row[j];
    }
  }
  for (int64_t j = 0; j < N; ++j) {
    uint16_t v = 0;
    for (int t = 0; t < T; ++t) v |= any[static_cast<size_t>(t) * N + j];
    if (v == 0) return false;
  }
  return true;
}

// diag(r) K diag(c), scaled and rounded to fp16 by OpenCV's conversion (nearest, ties
// to even). Two passes over K, which is only read: the first finds the largest entry;
// the second forms each row, scales it and converts it while it is in cache (scaled
// values under fp16's smallest normal are set to 0 first).
HalfStorage half_storage(const std::vector<float>& K, const std::vector<float>& r, const std::vector<float>& c,
                         int64_t N) {
  const int T = std::max(1, num_threads());
  // A's entry (i, j) from row i of K, the same expression in both passes.
  const auto a_ij = [&](int64_t i, const float* row, int64_t j) { return r[i] * row[j] * c[j]; };
  float mx = 0;
#pragma omp parallel for num_threads(T) schedule(static) reduction(max : mx)
  for (int64_t i = 0; i < N; ++i) {
    const float* row = K.data() + i * N;
    for (int64_t j = 0; j < N; ++j) mx = std::max(mx, a_ij(i, row, j));
  }
  if (!(mx > 0) || !std::isfinite(mx)) throw Error("the Markov operator has no finite positive entry for fp16 storage");
  HalfStorage h;
  int e = 0;
  std::frexp(mx, &e);  // mx in [2^(e-1), 2^e)
  const float scale = std::ldexp(1.0f, 15 - e);
  h.unscale = std::ldexp(1.0f, e - 15);
  h.bits.resize(static_cast<size_t>(N * N));
#pragma omp parallel num_threads(T)
  {
    std::vector<float> a(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const float* row = K.data() + i * N;
      for (int64_t j = 0; j < N; ++j) {
        const float v = a_ij(i, row, j) * scale;  // exact: a power of two
        a[static_cast<size_t>(j)] = v >= 0x1p-14f ? v : 0.0f;
      }
      floats_to_halves_serial(a.data(), h.bits.data() + i * N, static_cast<size_t>(N));
    }
  }
  return h;
}

// Throws unless Sinkhorn's scaling vectors are finite, naming the first key token
// whose column of K (N×N, fp32; null where it is gone) is all zero.
void require_finite_scaling(const std::vector<float>& r, const std::vector<float>& c, const float* K, int64_t N,
                            const std::string& name, int w) {
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  if (finite(r) && finite(c)) return;
  int64_t zero_column = -1;
  if (K) {
    std::vector<char> reached(static_cast<size_t>(N), 0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) reached[static_cast<size_t>(j)] |= K[i * N + j] != 0.0f;
    const auto first = std::find(reached.begin(), reached.end(), 0);
    if (first != reached.end()) zero_column = first - reached.begin();
  }
  throw Error(detail::unbalanced_message(name, w, zero_column));
}

}  // namespace

struct MarkovOperator::Impl {
  OperatorParams params;
  int h = 0, w = 0;
  int64_t n = 0;
  // On the host (the CPU path): K (N×N sharpened attention), row and column scaling;
  // or, with fp16 storage, M and its scaling, or A itself (K empty; see HalfStorage).
  std::vector<float> K, r, c;
  HalfStorage A16;
  // Elsewhere: the operator as LibTorch holds it (a GPU, or the CPU when asked for).
  std::unique_ptr<detail::OperatorKernel> kernel;

  // out (B×N) = S·A, A = diag(r) K diag(c).
  void apply(const float* S, float* out, int64_t B) const {
    if (kernel) return kernel->apply(S, out, B);
    if (!A16.bits.empty() && !A16.rescaled) {
      chains_times_k(A16.bits.data(), S, out, B, n);
      for (int64_t e = 0; e < B * n; ++e) out[e] *= A16.unscale;
      return;
    }
    std::vector<float> x(static_cast<size_t>(B * n));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i) x[b * n + i] = S[b * n + i] * r[i];
    if (A16.rescaled) chains_times_k(A16.bits.data(), x.data(), out, B, n);
    else chains_times_k(K.data(), x.data(), out, B, n);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < n; ++j) out[b * n + j] *= c[j];
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
  check::positive("temperature", params.temperature);
  check::at_least("ipf_iterations", params.ipf_iterations, 0);
  if (params.libtorch || resolve(params.device) == Device::Cuda) {
    I.kernel = detail::torch_backend().operator_kernel(std::move(att), params);
    return;
  }
  const std::string name = att.name;
  // The CPU path: the map's own buffer becomes K (sharpened in place), and Sinkhorn
  // iterates only the scaling vectors.
  to_host(att);
  I.K = std::move(att.data);
  att.data = std::vector<float>();
  sharpen_rows(I.K.data(), I.n, params.temperature);
  if (params.precision == Precision::Float16 && !params.two_pass_sinkhorn && params.ipf_iterations >= 2) {
    std::vector<float> r1, c1;
    sinkhorn_one_pass(I.K.data(), I.n, 1, r1, c1);
    require_finite_scaling(r1, c1, I.K.data(), I.n, name, I.w);
    HalfStorage M = half_storage(I.K, r1, c1, I.n);
    if (every_column_nonzero(M.bits, I.n)) {
      I.K = std::vector<float>();
      M.rescaled = true;
      I.A16 = std::move(M);
      sinkhorn_one_pass(I.A16.bits.data(), I.n, params.ipf_iterations - 1, I.r, I.c);
      require_finite_scaling(I.r, I.c, nullptr, I.n, name, I.w);
      return;
    }
  }
  if (params.two_pass_sinkhorn) sinkhorn_two_pass(I.K.data(), I.n, params.ipf_iterations, I.r, I.c);
  else if (params.ipf_iterations > 0) sinkhorn_one_pass(I.K.data(), I.n, params.ipf_iterations, I.r, I.c);
  else {
    I.r.assign(static_cast<size_t>(I.n), 1.0f);
    I.c.assign(static_cast<size_t>(I.n), 1.0f);
  }
  require_finite_scaling(I.r, I.c, I.K.data(), I.n, name, I.w);
  if (params.precision == Precision::Float16) {
    I.A16 = half_storage(I.K, I.r, I.c, I.n);
    I.K = std::vector<float>();
  }
}

MarkovOperator::~MarkovOperator() = default;

int MarkovOperator::h() const { return impl_->h; }
int MarkovOperator::w() const { return impl_->w; }
int64_t MarkovOperator::tokens() const { return impl_->n; }
const OperatorParams& MarkovOperator::params() const { return impl_->params; }
Device MarkovOperator::device() const { return impl_->kernel ? impl_->kernel->device() : Device::Cpu; }

int64_t MarkovOperator::bytes_per_step() const {
  if (impl_->kernel) return impl_->kernel->bytes_per_step();
  if (!impl_->A16.bits.empty()) return static_cast<int64_t>(impl_->A16.bits.size() * sizeof(uint16_t));
  return static_cast<int64_t>(impl_->K.size() * sizeof(float));
}

std::vector<float> MarkovOperator::dense() const {
  const auto& I = *impl_;
  if (I.kernel) return I.kernel->dense();
  if (!I.A16.bits.empty() && !I.A16.rescaled) {
    std::vector<float> D(I.A16.bits.size());
    for (size_t e = 0; e < D.size(); ++e) D[e] = value_at(I.A16.bits.data(), static_cast<int64_t>(e)) * I.A16.unscale;
    return D;
  }
  if (I.A16.rescaled) {
    std::vector<float> D(I.A16.bits.size());
    for (int64_t i = 0; i < I.n; ++i)
      for (int64_t j = 0; j < I.n; ++j) D[i * I.n + j] = I.r[i] * value_at(I.A16.bits.data(), i * I.n + j) * I.c[j];
    return D;
  }
  std::vector<float> D(I.K.size());
  for (int64_t i = 0; i < I.n; ++i)
    for (int64_t j = 0; j < I.n; ++j) D[i * I.n + j] = I.r[i] * I.K[i * I.n + j] * I.c[j];
  return D;
}

namespace {
// Each of the B rows divided by its maximum.
void normalise_rows(float* s, int64_t B, int64_t n) {
  for (int64_t b = 0; b < B; ++b) {
    float* row = s + b * n;
    const float mx = *std::max_element(row, row + n);
    for (int64_t j = 0; j < n; ++j) row[j] /= mx;
  }
}
}  // namespace

void MarkovOperator::step(std::vector<float>& states, int batch) const {
  const auto& I = *impl_;
  std::vector<float> out(static_cast<size_t>(batch) * I.n);
  I.apply(states.data(), out.data(), batch);
  normalise_rows(out.data(), batch, I.n);
  std::copy(out.begin(), out.end(), states.begin());
}

std::vector<std::vector<float>> MarkovOperator::markov_maps(const std::vector<std::vector<float>>& starts,
                                                            const MarkovParams& mp) const {
  const auto& I = *impl_;
  const int64_t B = static_cast<int64_t>(starts.size());
  const int64_t n = I.n;
  std::vector<std::vector<float>> out(starts.size());
  if (B == 0) return out;
  const float thr = mp.threshold;
  const float unreached = static_cast<float>(mp.linear_interpolation ? mp.max_iterations : mp.max_iterations + 1);

  // The chains that have not finished, one row each (host memory).
  std::vector<int64_t> active;
  std::vector<float> S(static_cast<size_t>(B * n));
  for (int64_t b = 0; b < B; ++b) {
    if (static_cast<int64_t>(starts[b].size()) != n) throw Error("markov-map: start state has the wrong size");
    std::copy(starts[b].begin(), starts[b].end(), S.begin() + b * n);
    active.push_back(b);
  }
  std::vector<std::vector<float>> tracker(B, std::vector<float>(n, unreached));
  std::vector<std::vector<uint8_t>> pending(B, std::vector<uint8_t>(n, 1));
  std::vector<int64_t> remaining(B, n);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < n; ++j)
      if (starts[b][j] > thr) {
        tracker[b][j] = 0.f;
        pending[b][j] = 0;
        --remaining[b];
      }
  }
  std::vector<float> next(S.size());
  for (int it = 0; it < mp.max_iterations; ++it) {
    // Drop finished chains from the batch.
    size_t kept = 0;
    for (size_t a = 0; a < active.size(); ++a) {
      if (remaining[active[a]] == 0) continue;
      if (kept != a) std::copy_n(S.begin() + a * n, n, S.begin() + kept * n);
      active[kept++] = active[a];
    }
    if (kept == 0) break;
    active.resize(kept);
    const int64_t batch = static_cast<int64_t>(kept);
    next.resize(static_cast<size_t>(batch * n));
    I.apply(S.data(), next.data(), batch);
    normalise_rows(next.data(), batch, n);
    for (int64_t a = 0; a < batch; ++a) {
      const int64_t b = active[a];
      const float* s = next.data() + a * n;
      const float* p = S.data() + a * n;  // the previous states
      auto& tr = tracker[b];
      auto& pd = pending[b];
      for (int64_t j = 0; j < n; ++j) {
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
    S.swap(next);
  }
  for (int64_t b = 0; b < B; ++b) out[b] = std::move(tracker[b]);
  return out;
}

}  // namespace m2n2
