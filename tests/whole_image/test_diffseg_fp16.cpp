// DiffSeg's iteration 0 in the reference's float16 arithmetic against a NumPy port of
// the reference (tests/whole_image/diffseg_reference.py, run here with the system
// Python), on a synthetic tensor whose sharpest maps underflow in float16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/core/half.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/whole_image/diffseg.hpp"
#include "test_util.hpp"

using namespace m2n2;

namespace {

constexpr int kAnchors = 4;

// Runs the port; false (and the reason) when the system Python or NumPy is missing.
bool run_port(const std::string& dir, int kGrid, std::string* why) {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
    *why = "/usr/bin/python3 with NumPy not available";
    return false;
  }
  const std::string cmd = "/usr/bin/python3 " + test::source_dir() + "/tests/whole_image/diffseg_reference.py " + dir +
                          " " + std::to_string(kGrid) + " " + std::to_string(kAnchors) + " 1";
  if (std::system(cmd.c_str()) != 0) {
    *why = "port failed: " + cmd;
    return false;
  }
  return true;
}

std::vector<int64_t> anchor_tokens(int kGrid) {
  std::vector<int64_t> a;
  for (int y : anchor_coordinates(kAnchors, kGrid))
    for (int x : anchor_coordinates(kAnchors, kGrid)) a.push_back(static_cast<int64_t>(y) * kGrid + x);
  return a;
}

// The port's tensor at grid kGrid (16: N = 256; 9: N = 81, not a multiple of the 8 lanes).
void check_against_port(int kGrid) {
  const std::string dir = test::temp_dir();
  std::string why;
  if (!run_port(dir, kGrid, &why)) GTEST_SKIP() << why;
  const NpyArray A = read_npy(dir + "/A.npy"), D = read_npy(dir + "/D.npy"), P0 = read_npy(dir + "/P0.npy"),
                 L = read_npy(dir + "/labels.npy");
  const auto info = nlohmann::json::parse(read_file(dir + "/info.json"));
  const int64_t N = kGrid * kGrid;
  ASSERT_EQ(A.size(), N * N);
  const auto anchors = anchor_tokens(kGrid);
  // Every divergence bit for bit, NaN where the port has NaN (underflowing maps).
  const Fp16Maps m = round_maps_to_fp16(A.data.data(), N, N);
  int underflow = 0, nan = 0;
  for (char z : m.underflow) underflow += z;
  EXPECT_EQ(underflow, info["underflow_maps"].get<int>());
  EXPECT_GT(underflow, 0);
  for (size_t a = 0; a < anchors.size(); ++a)
    for (int64_t p = 0; p < N; ++p) {
      const float want = D.data[a * N + p];
      if (std::isnan(want)) {
        ++nan;
        EXPECT_TRUE(m.underflow[anchors[a]] || m.underflow[p]) << a << "," << p;
        continue;
      }
      ASSERT_FALSE(m.underflow[anchors[a]] || m.underflow[p]) << a << "," << p;
      const int64_t ai = anchors[a];
      EXPECT_EQ(fp16_symmetric_kl(m.values.data() + ai * N, m.logs.data() + ai * N, m.values.data() + p * N,
                                  m.logs.data() + p * N, N),
                want)
          << a << "," << p;
    }
  EXPECT_GT(nan, 0);
  // Pairs at float16's 1.1 (1.0996) exist and are not matched: they are in the proposals of neither.
  if (kGrid == 16) EXPECT_GT(info["at_rounded_threshold"].get<int>(), 0);
  EXPECT_EQ(float_to_half(1.1f), float_to_half(1.099609375f));
  // Iteration-0 proposals: NaN rows in the same places, values to float32 rounding.
  int64_t underflow_maps = -1;
  const auto P = diffseg_anchor_proposals_fp16(A.data.data(), N, anchors, 1.1, &underflow_maps);
  EXPECT_EQ(underflow_maps, underflow);
  int nan_rows = 0;
  for (size_t a = 0; a < anchors.size(); ++a) {
    const bool want_nan = std::isnan(P0.data[a * N]);
    nan_rows += want_nan;
    EXPECT_EQ(std::isnan(P[a * N]), want_nan) << "anchor " << a;
    if (want_nan) continue;
    for (int64_t j = 0; j < N; ++j) EXPECT_NEAR(P[a * N + j], P0.data[a * N + j], 1e-6f * P0.data[a * N + j] + 1e-12f);
  }
  if (kGrid == 16) EXPECT_GT(nan_rows, 0) << "the synthetic tensor should have an underflowing anchor";
  // The whole method at grid size: the same raw labels, pixel for pixel.
  Attention att;
  att.maps.push_back(AttentionMap{"synthetic", kGrid, kGrid, 1.0f, A.data, nullptr});
  DiffSegParams params;
  params.anchors = kAnchors;
  const AutoResult r = diffseg(att, kGrid, kGrid, params);
  EXPECT_EQ(r.meta.at("kl_precision"), "fp16");
  EXPECT_EQ(r.meta.at("fp16_underflow_maps"), std::to_string(underflow) + " of " + std::to_string(N));
  for (int y = 0; y < kGrid; ++y)
    for (int x = 0; x < kGrid; ++x) EXPECT_EQ(r.labels.at<uint16_t>(y, x), L.data[y * kGrid + x]) << y << "," << x;
  EXPECT_EQ(r.meta.at("proposals"), std::to_string(info["proposals"].get<int>()));
}

}  // namespace

TEST(DiffSegFp16, IterationZeroAndLabelsMatchTheNumpyPortOfTheReference) {
  check_against_port(16);
  check_against_port(9);
}

// fp32 (clamped logs) lets underflowing maps join proposals; fp16 never does.
TEST(DiffSegFp16, UnderflowingMapsJoinNoAnchorInFp16ButDoInFp32) {
  // Four maps over 4 entries: 0 and 1 alike, 2 alike but with an entry below fp16's range.
  const std::vector<float> A = {0.4f, 0.3f, 0.2f, 0.1f,       0.38f, 0.32f, 0.2f, 0.1f,
                                0.4f, 0.3f, 0.3f - 1e-9f, 1e-9f, 0.1f, 0.2f, 0.3f, 0.4f};
  const auto P = diffseg_anchor_proposals_fp16(A.data(), 4, {0, 2}, 1.1, nullptr);
  // Anchor 0 (τ 1.1 is wide): maps 0, 1 and 3 match, 2 (underflow) does not.
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(P[j], (A[j] + A[4 + j] + A[12 + j]) / 3.0f, 1e-6f);
  // Anchor 2 underflows: its proposal is NaN.
  EXPECT_TRUE(std::isnan(P[4]));
  // fp32's clamped logs: map 2 is close to anchor 0 and would join it.
  EXPECT_LT(symmetric_kl(A.data(), A.data() + 8, 4, 1e-12), 1.1);
  EXPECT_EQ(parse_kl_precision("fp32"), KlPrecision::Fp32);
  EXPECT_THROW(parse_kl_precision("fp64"), InvalidArgument);
}

TEST(DiffSegFp16, CenterCropIsTheCentredSquareResized) {
  cv::Mat img(30, 50, CV_8UC3, cv::Scalar(0, 0, 0));
  img(cv::Rect(10, 0, 30, 30)).setTo(cv::Scalar(200, 100, 50));  // the centred 30×30 square
  const cv::Mat c = center_crop_resize(img, 60);
  ASSERT_EQ(c.size(), cv::Size(60, 60));
  EXPECT_EQ(cv::countNonZero(c.reshape(1) != 0), 60 * 60 * 3);
  EXPECT_EQ(c.at<cv::Vec3b>(0, 0), cv::Vec3b(200, 100, 50));
  EXPECT_EQ(center_crop_resize(img, 30).size(), cv::Size(30, 30));
}
