#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "m2n2/core/half.hpp"

using namespace m2n2;

// The vectorised array conversions must give float_to_half's bits for every finite
// float: random bit patterns over all exponents, ties, half subnormals and overflow.
TEST(Half, ArrayConversionsEqualTheScalarOne) {
  std::vector<float> v;
  std::mt19937 rng(3);
  for (int i = 0; i < 1200000; ++i) {  // over one 2^20 chunk of the threaded form
    uint32_t bits = static_cast<uint32_t>(rng());
    if ((bits & 0x7f800000u) == 0x7f800000u) continue;  // inf/nan: never attention
    float f;
    std::memcpy(&f, &bits, 4);
    v.push_back(f);
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, 6.1035156e-05f, 6.1e-05f, 5.9604645e-08f,
                  2.98e-08f, 2.9802322e-08f, 1e-30f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048})
    v.push_back(f);
  std::vector<uint16_t> h(v.size()), hs(v.size());
  floats_to_halves(v.data(), h.data(), v.size());
  floats_to_halves_serial(v.data(), hs.data(), v.size());
  ASSERT_EQ(h, hs);
  std::vector<float> r = v;
  round_to_half(r.data(), r.size());
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(h[i], float_to_half(v[i])) << v[i];
    const float want = half_to_float(float_to_half(v[i]));
    ASSERT_EQ(std::memcmp(&r[i], &want, 4), 0) << v[i];
  }
}

// Widening every half that is not a NaN gives half_to_float's float, bit for bit.
TEST(Half, WideningEqualsTheScalarOne) {
  std::vector<uint16_t> h;
  for (uint32_t b = 0; b < 65536; ++b)
    if ((b & 0x7c00u) != 0x7c00u || (b & 0x3ffu) == 0) h.push_back(static_cast<uint16_t>(b));
  std::vector<float> f(h.size());
  halves_to_floats(h.data(), f.data(), h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const float want = half_to_float(h[i]);
    ASSERT_EQ(std::memcmp(&f[i], &want, 4), 0) << h[i];
  }
}
