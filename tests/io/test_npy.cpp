#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "m2n2/attention/attention_file.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"
#include "test_util.hpp"

using namespace m2n2;

TEST(Npy, RoundTripFloat32) {
  const std::string p = test::temp_dir() + "/a.npy";
  std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 1e-8f};
  write_npy(p, v.data(), {2, 3});
  NpyArray a = read_npy(p);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.dtype, "<f4");
  EXPECT_EQ(a.data, v);
}

TEST(Npy, Float16RoundsToNearestEven) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.1f, 3.14159f}) {
    const float back = half_to_float(float_to_half(f));
    EXPECT_NEAR(back, f, std::fabs(f) * 1e-3 + 6e-8) << f;
  }
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // overflow to inf
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);
  const std::string p = test::temp_dir() + "/h.npy";
  std::vector<float> v = {0.5f, 0.25f, 0.125f, 0.125f};
  write_npy(p, v.data(), {2, 2}, NpyDtype::Float16);
  NpyArray a = read_npy(p);
  EXPECT_EQ(a.dtype, "<f2");
  EXPECT_EQ(a.data, v);
}

TEST(Npy, RejectsBadInput) {
  EXPECT_THROW(parse_npy("hello", "x.npy"), Error);
  EXPECT_THROW(parse_npy(std::string("\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'", 24), "x.npy"), Error);
  // Truncated data: header says 4 floats, body has 1.
  std::vector<float> v = {1, 2, 3, 4};
  std::string bytes = encode_npy(v.data(), {4});
  EXPECT_THROW(parse_npy(bytes.substr(0, bytes.size() - 8), "x.npy"), Error);
  try {
    read_npy("/nonexistent/file.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.npy"), std::string::npos);
  }
}

TEST(AttentionFile, ValidatesShapeValuesAndRows) {
  const std::string d = test::temp_dir();
  // (N,N) with N a square is accepted.
  std::vector<float> ok(16 * 16, 1.0f / 16);
  write_npy(d + "/ok.npy", ok.data(), {16, 16});
  AttentionMap m = read_attention_npy(d + "/ok.npy");
  EXPECT_EQ(m.h, 4);
  EXPECT_EQ(m.w, 4);
  // N not a square.
  std::vector<float> bad(12 * 12, 1.0f / 12);
  write_npy(d + "/n12.npy", bad.data(), {12, 12});
  EXPECT_THROW(read_attention_npy(d + "/n12.npy"), Error);
  // Wrong rank.
  write_npy(d + "/r3.npy", ok.data(), {4, 4, 16});
  EXPECT_THROW(read_attention_npy(d + "/r3.npy"), Error);
  // NaN.
  auto nan = ok;
  nan[5] = std::nanf("");
  write_npy(d + "/nan.npy", nan.data(), {16, 16});
  try {
    read_attention_npy(d + "/nan.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos);
  }
  // Rows that do not sum to 1.
  auto rows = ok;
  rows[0] = 0.9f;
  write_npy(d + "/rows.npy", rows.data(), {16, 16});
  EXPECT_THROW(read_attention_npy(d + "/rows.npy"), Error);
  // Negative.
  auto neg = ok;
  neg[0] = -0.1f;
  neg[1] += 0.1f + 1.0f / 16;
  write_npy(d + "/neg.npy", neg.data(), {16, 16});
  EXPECT_THROW(read_attention_npy(d + "/neg.npy"), Error);
}

// read_npy reads float32 and float16 files straight from disk (in chunks for float16);
// both must equal the parse of the whole file, also past a chunk boundary, and a
// truncated file must be refused naming the file.
TEST(Npy, FileReadingEqualsParsingTheBytes) {
  const std::string dir = test::temp_dir();
  std::vector<float> v((1 << 21) + 1234);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::ldexp(static_cast<float>(i % 977) - 488.0f, static_cast<int>(i % 41) - 30);
  for (auto dtype : {NpyDtype::Float32, NpyDtype::Float16}) {
    const std::string p = dir + (dtype == NpyDtype::Float32 ? "/f4.npy" : "/f2.npy");
    write_npy(p, v.data(), {static_cast<int64_t>(v.size())}, dtype);
    const NpyArray a = read_npy(p), b = parse_npy(read_file(p), p);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.dtype, b.dtype);
    ASSERT_EQ(a.data.size(), v.size());
    EXPECT_TRUE(std::equal(a.data.begin(), a.data.end(), b.data.begin(), [](float x, float y) {
      return x == y || (std::isnan(x) && std::isnan(y));
    }));
    const std::string bytes = read_file(p);
    write_file_atomic(p, bytes.substr(0, bytes.size() - 10));
    try {
      read_npy(p);
      FAIL() << "truncated file accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p + ": truncated .npy data"), std::string::npos) << e.what();
    }
  }
}
