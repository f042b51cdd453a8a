#include "m2n2/core/half.hpp"

#include <opencv2/core.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "m2n2/core/device.hpp"

namespace m2n2 {

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0);  // inf/nan
  if (absx >= 0x477ff000u) return sign | 0x7c00u;  // overflow -> inf
  if (absx < 0x38800000u) {                         // subnormal or zero in half
    if (absx < 0x33000000u) return sign;            // rounds to zero
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t drop = 126 - e;  // bits of the 24-bit mantissa below the half subnormal unit
    uint32_t res = m >> drop;
    const uint32_t rem = m & ((1u << drop) - 1);
    const uint32_t halfway = 1u << (drop - 1);
    if (rem > halfway || (rem == halfway && (res & 1))) ++res;
    return sign | static_cast<uint16_t>(res);
  }
  // normal
  uint32_t res = ((absx >> 23) - 112) << 10 | ((absx >> 13) & 0x3ff);
  const uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (res & 1))) ++res;
  return sign | static_cast<uint16_t>(res);
}

namespace {
// OpenCV's vectorised conversion of n values from type `from` to type `to`, in
// chunks that keep cv::Mat sizes in int range.
template <typename From, typename To>
void convert(const From* in, int from, To* out, int to, size_t n) {
  constexpr size_t kChunk = size_t{1} << 30;
  for (size_t i = 0; i < n; i += kChunk) {
    const int m = static_cast<int>(std::min(kChunk, n - i));
    cv::Mat dst(1, m, to, out + i);
    cv::Mat(1, m, from, const_cast<From*>(in + i)).convertTo(dst, to);
  }
}
}  // namespace

void floats_to_halves_serial(const float* in, uint16_t* out, size_t n) { convert(in, CV_32F, out, CV_16F, n); }

void halves_to_floats(const uint16_t* in, float* out, size_t n) { convert(in, CV_16F, out, CV_32F, n); }

void floats_to_halves(const float* in, uint16_t* out, size_t n) {
  constexpr size_t kChunk = size_t{1} << 20;
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < static_cast<int64_t>((n + kChunk - 1) / kChunk); ++c) {
    const size_t i = static_cast<size_t>(c) * kChunk;
    floats_to_halves_serial(in + i, out + i, std::min(kChunk, n - i));
  }
}

void round_to_half(float* values, size_t n) {
  constexpr size_t kChunk = size_t{1} << 16;
#pragma omp parallel num_threads(num_threads())
  {
    std::vector<uint16_t> buf(kChunk);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < static_cast<int64_t>((n + kChunk - 1) / kChunk); ++c) {
      const size_t i = static_cast<size_t>(c) * kChunk;
      const size_t m = std::min(kChunk, n - i);
      floats_to_halves_serial(values + i, buf.data(), m);
      halves_to_floats(buf.data(), values + i, m);
    }
  }
}

}  // namespace m2n2
