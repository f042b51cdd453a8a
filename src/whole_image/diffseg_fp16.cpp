// DiffSeg's first merging iteration with the reference's float16 arithmetic, on the
// CPU (spec diffseg.md §6, "Precision of iteration 0"). Every operand and every
// result of an elementwise operation is rounded to the nearest float16 (ties to
// even): the maps, their logs, the log quotient and both products. The two sums run
// in float32 (eight interleaved partial sums, element i into lane i mod 8, the lanes
// then added in order 0..7) and are rounded to float16; halving, negation and the
// final addition are float16 operations, and the threshold is compared as a float16.
// A float32 result of one operation on float16 operands rounds to the same float16
// as the exact result (24 >= 2·11 + 2 bits), so this is the float16 arithmetic.
// A map with an entry that rounds to 0 has log −inf and a NaN divergence against
// every map: it joins no anchor, and an anchor with such an entry matches nothing.
#include "m2n2/whole_image/diffseg.hpp"

#include <cmath>
#include <limits>

#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/core/half.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define M2N2_F16C_DISPATCH 1
#endif

namespace m2n2 {

namespace {

inline float h(float v) { return half_to_float(float_to_half(v)); }

// Σ fp16(x·q) and Σ fp16(y·q), q = fp16(lx − ly), in the lane order described above:
// elements [from, n) are added to the partial sums a and b, which are then totalled.
void finish_sums(const float* x, const float* lx, const float* y, const float* ly, int64_t from, int64_t n, float* a,
                 float* b, float* s1, float* s2) {
  for (int64_t i = from; i < n; ++i) {
    const float q = h(lx[i] - ly[i]);
    a[i & 7] += h(x[i] * q);
    b[i & 7] += h(y[i] * q);
  }
  float sa = 0, sb = 0;
  for (int l = 0; l < 8; ++l) {
    sa += a[l];
    sb += b[l];
  }
  *s1 = sa;
  *s2 = sb;
}

void fp16_sums_portable(const float* x, const float* lx, const float* y, const float* ly, int64_t n, float* s1,
                        float* s2) {
  float a[8] = {0}, b[8] = {0};
  finish_sums(x, lx, y, ly, 0, n, a, b, s1, s2);
}

#ifdef M2N2_F16C_DISPATCH
__attribute__((target("avx,f16c"))) inline __m256 h8(__m256 v) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

__attribute__((target("avx,f16c"))) void fp16_sums_f16c(const float* x, const float* lx, const float* y,
                                                        const float* ly, int64_t n, float* s1, float* s2) {
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 q = h8(_mm256_sub_ps(_mm256_loadu_ps(lx + i), _mm256_loadu_ps(ly + i)));
    a = _mm256_add_ps(a, h8(_mm256_mul_ps(_mm256_loadu_ps(x + i), q)));
    b = _mm256_add_ps(b, h8(_mm256_mul_ps(_mm256_loadu_ps(y + i), q)));
  }
  alignas(32) float la[8], lb[8];
  _mm256_store_ps(la, a);
  _mm256_store_ps(lb, b);
  finish_sums(x, lx, y, ly, i, n, la, lb, s1, s2);  // the tail into the same lanes
}

bool have_f16c() {
  static const bool yes = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

}  // namespace

float fp16_symmetric_kl(const float* x, const float* lx, const float* y, const float* ly, int64_t n) {
  float s1, s2;
#ifdef M2N2_F16C_DISPATCH
  if (have_f16c())
    fp16_sums_f16c(x, lx, y, ly, n, &s1, &s2);
  else
#endif
    fp16_sums_portable(x, lx, y, ly, n, &s1, &s2);
  const float k1 = h(h(s1) / 2), k2 = h(-h(s2) / 2);
  return h(k1 + k2);
}

Fp16Maps round_maps_to_fp16(const float* maps, int64_t rows, int64_t n) {
  Fp16Maps m;
  m.rows = rows;
  m.n = n;
  const size_t total = static_cast<size_t>(rows) * static_cast<size_t>(n);
  m.values.assign(maps, maps + total);
  round_to_half(m.values.data(), total);
  m.logs.resize(total);
  m.underflow.assign(static_cast<size_t>(rows), 0);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = m.values.data() + r * n;
    float* l = m.logs.data() + r * n;
    char zero = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!(v[i] > 0)) {  // 0 (underflow), negative or NaN: the divergence is NaN
        zero = 1;
        l[i] = 0;
      } else {
        l[i] = h(std::log(v[i]));
      }
    }
    m.underflow[static_cast<size_t>(r)] = zero;
  }
  return m;
}

std::vector<float> diffseg_anchor_proposals_fp16(const float* attention, int64_t N, const std::vector<int64_t>& anchors,
                                                 double kl_threshold, int64_t* underflow_maps) {
  if (N <= 0) throw Error("diffseg: empty attention");
  const Fp16Maps m = round_maps_to_fp16(attention, N, N);
  if (underflow_maps) {
    int64_t c = 0;
    for (char z : m.underflow) c += z;
    *underflow_maps = c;
  }
  const float tau = h(static_cast<float>(kl_threshold));
  const int64_t K = static_cast<int64_t>(anchors.size());
  std::vector<float> out(static_cast<size_t>(K * N), std::numeric_limits<float>::quiet_NaN());
#pragma omp parallel for num_threads(num_threads()) schedule(dynamic, 1)
  for (int64_t a = 0; a < K; ++a) {
    const int64_t ai = anchors[static_cast<size_t>(a)];
    if (ai < 0 || ai >= N || m.underflow[static_cast<size_t>(ai)]) continue;  // NaN proposal (0/0)
    const float* x = m.values.data() + ai * N;
    const float* lx = m.logs.data() + ai * N;
    std::vector<double> acc(static_cast<size_t>(N), 0.0);
    int64_t count = 0;
    for (int64_t p = 0; p < N; ++p) {
      if (m.underflow[static_cast<size_t>(p)]) continue;
      const float d = fp16_symmetric_kl(x, lx, m.values.data() + p * N, m.logs.data() + p * N, N);
      if (!(d < tau)) continue;
      ++count;
      const float* row = attention + p * N;  // the mean is of the maps as given, in float64
      for (int64_t j = 0; j < N; ++j) acc[static_cast<size_t>(j)] += row[j];
    }
    if (count == 0) continue;
    float* o = out.data() + a * N;
    for (int64_t j = 0; j < N; ++j) o[j] = static_cast<float>(acc[static_cast<size_t>(j)] / static_cast<double>(count));
  }
  return out;
}

}  // namespace m2n2
