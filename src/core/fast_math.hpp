// Private: exp and log as arithmetic and bit operations, branch-free so that loops
// over them vectorise (glibc's calls do not). Cephes' range reductions and minimax
// polynomials: relative error about 1e-7 (≈ 2 ulp).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace m2n2::detail {

// exp(x) for x <= 0; 0 below `lo` (lo >= -86 keeps every result a normal float).
// NaN gives 0.
inline float fast_exp(float x, float lo) {
  const float keep = x > lo ? 1.0f : 0.0f;
  x = std::max(x, lo);
  // Round to nearest with the 1.5·2^23 trick (SSE2 has no vector round).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, 4);
  bits += static_cast<int32_t>(n) * (1 << 23);  // scale by 2^n (no shift of a negative value)
  std::memcpy(&p, &bits, 4);
  return p * keep;
}

// 2^y for y <= 0; 0 below `lo` (lo >= -125 keeps every result a normal float). About
// 1.4 ulp: y = n + f with n = round(y) and |f| <= 1/2, 2^f by a degree-6 polynomial
// (least-squares fit of the relative error on Chebyshev nodes) evaluated by Estrin's
// scheme. Without the two-step reduction of ln 2 and with Estrin's three levels in
// place of Horner's six, the dependency chain is about half of fast_exp's: in the
// bilateral filters' loops that chain, not the arithmetic, sets the speed.
inline float fast_exp2(float y, float lo) {
  const float keep = y > lo ? 1.0f : 0.0f;
  y = std::max(y, lo);
  const float n = (y + 12582912.0f) - 12582912.0f;
  const float f = y - n;
  const float f2 = f * f;
  const float p01 = 1.0f + 0.693147182f * f, p23 = 0.240226462f + 0.0555032901f * f;
  const float p45 = 0.00961851981f + 0.00133998599f * f, p6 = 0.000153375775f;
  float p = (p01 + p23 * f2) + (p45 + p6 * f2) * (f2 * f2);
  int32_t bits;
  std::memcpy(&bits, &p, 4);
  bits += static_cast<int32_t>(n) * (1 << 23);
  std::memcpy(&p, &bits, 4);
  return p * keep;
}

// log(x): 0 -> -inf, negative or NaN -> NaN, +inf -> +inf; subnormals are scaled first.
inline float fast_log(float x) {
  const bool tiny = x < 1.17549435e-38f;  // subnormal (zero and negatives are fixed below)
  const float xs = tiny ? x * 8388608.0f : x;  // 2^23
  uint32_t bits;
  std::memcpy(&bits, &xs, 4);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126) - (tiny ? 23.0f : 0.0f);
  const uint32_t mbits = (bits & 0x007fffffu) | 0x3f000000u;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &mbits, 4);
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  float r = m + y + e * 0.693359375f;
  r = x == std::numeric_limits<float>::infinity() ? x : r;
  r = x == 0.0f ? -std::numeric_limits<float>::infinity() : r;
  return (x < 0.0f || x != x) ? std::numeric_limits<float>::quiet_NaN() : r;
}

}  // namespace m2n2::detail
