// Issue 19: inputs that used to reach undefined behaviour or unbounded allocations, and
// the per-item error plumbing. Each test failed before its fix (see the comments).
#include <gtest/gtest.h>

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <new>
#include <opencv2/imgproc.hpp>

#include "core/fault_injection.hpp"
#include "m2n2/eval/datasets.hpp"
#include "m2n2/attention/attention.hpp"
#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/io/rle.hpp"
#include "m2n2/interactive/segmenter.hpp"
#include "m2n2/interactive/upsampling.hpp"
#include "test_util.hpp"

using namespace m2n2;
namespace fs = std::filesystem;

namespace {

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string chunk(const std::string& type, const std::string& body) {
  const std::string tb = type + body;
  const uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(tb.data()), static_cast<uInt>(tb.size())));
  return be32(static_cast<uint32_t>(body.size())) + tb + be32(crc);
}

// A structurally complete PNG whose IHDR claims w×h.
std::string png_header(uint32_t w, uint32_t h) {
  std::string ihdr = be32(w) + be32(h) + std::string("\x08\x00\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", std::string("x\x9c\x03\x00\x00\x00\x00\x01", 8)) +
         chunk("IEND", "");
}

// A uniform-ish attention over a g×g grid (rows sum to 1).
AttentionMap smooth_attention(int g) {
  AttentionMap m;
  m.h = m.w = g;
  const int64_t n = m.tokens();
  m.data.resize(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double dy = static_cast<double>(i / g - j / g), dx = static_cast<double>(i % g - j % g);
      s += m.data[i * n + j] = static_cast<float>(std::exp(-(dx * dx + dy * dy) / 4.0));
    }
    for (int64_t j = 0; j < n; ++j) m.data[i * n + j] = static_cast<float>(m.data[i * n + j] / s);
  }
  return m;
}

}  // namespace

// Before: k was allowed up to 55, so the shift (c & 0x1f) << 5k went past 63 bits (UB).
TEST(Hardening, RleStringWithAnOverlongRunIsRejected) {
  const std::string twelve(12, static_cast<char>(48 + 0x20 + 1));  // 12 continuation characters
  EXPECT_NE(message_of([&] { rle_from_string(twelve + "0"); }).find("run too long"), std::string::npos);
  // The longest legal run (a count of 2^32 - 1) still decodes.
  const std::vector<uint32_t> big{0xffffffffu};
  EXPECT_EQ(rle_from_string(rle_to_string(big)), big);
}

// Before: w * h of two 32-bit header fields overflowed int64, went negative and passed.
TEST(Hardening, ImageHeaderWithHugeSidesIsRejectedWithoutOverflow) {
  for (uint32_t side : {0xffffffffu, 0xf0000000u, 0x80000001u}) {
    const std::string msg = message_of([&] { check_image_bytes("crafted.png", png_header(side, side), 400000000); });
    EXPECT_NE(msg.find("crafted.png: image of"), std::string::npos) << side << ": " << msg;
    EXPECT_NE(msg.find("is too large"), std::string::npos) << msg;
  }
  EXPECT_EQ(message_of([] { check_image_bytes("ok.png", png_header(20, 10), 400000000); }), "");
}

// Before: static_cast<int>(1e20) (UB), and --grid was not checked after it replaced the
// settings' grid, so --grid 2000 allocated N² = 1.6e13 floats (std::bad_alloc).
TEST(Hardening, DefaultSourceSettingsAreRangeChecked) {
  EXPECT_NE(message_of([] { DefaultSourceSettings::parse("grid=1e20"); }).find("grid must be an integer"), std::string::npos);
  EXPECT_NE(message_of([] { DefaultSourceSettings::parse("radius=-1e300"); }).find("radius must be an integer"), std::string::npos);
  EXPECT_NE(message_of([] { DefaultSourceSettings::parse("levels=2.5"); }).find("levels must be an integer"), std::string::npos);
  SourceOptions so;
  so.grid = 2000;
  EXPECT_EQ(message_of([&] { make_source("default", so); }), "grid must be in 4..256, got 2000");
  so.grid = -5;
  EXPECT_NE(message_of([&] { make_source("default", so); }).find("got -5"), std::string::npos);
}

// Memory is checked before the N×N maps are allocated.
TEST(Hardening, DefaultSourceChecksMemoryBeforeAllocating) {
  SourceOptions so;
  so.grid = 128;  // 1 GiB per map
  so.max_memory_bytes = 256.0 * 1024 * 1024;
  auto src = make_source("default", so);
  const cv::Mat img(64, 64, CV_8UC3, cv::Scalar(10, 20, 30));
  try {
    src->compute(img);
    FAIL() << "no MemoryError";
  } catch (const MemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("grid 128 needs about"), std::string::npos) << e.what();
  }
}

// Before: static_cast<int>(std::nearbyint(1e20)) (UB).
TEST(Hardening, FarClickCoordinatesStayOutsideEveryImage) {
  for (double v : {1e20, -1e20, 3e9, -3e9, std::nan("")}) {
    const cv::Point p = click_pixel({v, v, true});
    EXPECT_LT(p.x, 0) << v;
    EXPECT_LT(p.y, 0) << v;
  }
  EXPECT_EQ(click_pixel({2.5, 3.5, true}), cv::Point(2, 4));  // half to even, as before
}

// Before: above the table cap the segmenter silently used the direct filter
// (~10^12 operations per click at 8 MP).
TEST(Hardening, OversizedUpsamplingTableIsRefusedWithMaxSideHint) {
  const cv::Mat img(300, 400, CV_8UC3, cv::Scalar(90, 120, 150));
  auto op = std::make_shared<MarkovOperator>(smooth_attention(8), OperatorParams{});
  M2N2Params p;
  const double need = JointBilateralUpsampler::required_table_bytes(300, 400, 8, 8, p.jbu);
  p.max_table_bytes = need / 4;
  const std::string msg = message_of([&] { Segmenter(img, op, p); });
  EXPECT_NE(msg.find("needs an upsampling table of"), std::string::npos) << msg;
  EXPECT_NE(msg.find("use --max-side"), std::string::npos) << msg;
  p.max_table_bytes = need;
  EXPECT_EQ(message_of([&] { Segmenter(img, op, p); }), "");
}

// --max-side: the segmenter works on a smaller copy and answers at full size; the
// downscaled result agrees with the full-size one.
TEST(Hardening, MaxSideSegmentsAtFullSize) {
  cv::Mat labels(240, 320, CV_8U, cv::Scalar(0));
  cv::circle(labels, {160, 120}, 70, cv::Scalar(1), cv::FILLED);
  const cv::Mat img = test::paint(labels, {{30, 60, 200}, {230, 200, 40}}, 4.0);
  auto src = make_source("default:grid=16", SourceOptions{});
  M2N2Params p;
  const auto full_op = std::make_shared<MarkovOperator>(combine_for_m2n2(src->compute(img)), p.op);
  Segmenter full(img, full_op, p);
  const cv::Mat a = full.segment({{160, 120, true}}).mask;
  p.max_side = 80;
  const cv::Mat work = fit_max_side(img, p.max_side);
  ASSERT_EQ(work.size(), cv::Size(80, 60));
  const auto small_op = std::make_shared<MarkovOperator>(combine_for_m2n2(src->compute(work)), p.op);
  Segmenter small(work, small_op, p, img.size());
  const auto r = small.segment({{160, 120, true}, {5, 5, false}});
  ASSERT_EQ(r.mask.size(), img.size());
  ASSERT_EQ(r.soft.size(), img.size());
  EXPECT_EQ(small.distance_map({160, 120}).size(), img.size());
  EXPECT_EQ(r.mask.at<uint8_t>(5, 5), 0);
  const double inter = cv::countNonZero(a & r.mask), uni = cv::countNonZero(a | r.mask);
  EXPECT_GE(inter / uni, 0.95);
  EXPECT_THROW(small.segment({{320, 10, true}}), Error);  // outside the full image
  EXPECT_EQ(fit_max_side(img, 0).size(), img.size());
  EXPECT_EQ(fit_max_side(img, 1000).data, img.data);
}

// OpenCV and LibTorch messages carry paths and backtraces on further lines.
TEST(Hardening, ExceptionMessagesAreOneLine) {
  ::setenv("M2N2_INJECT_FAULT", "c10@x", 1);
  try {
    inject_fault("x");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_EQ(one_line_message(e).find('\n'), std::string::npos);
    EXPECT_NE(one_line_message(e).find("injected LibTorch error"), std::string::npos);
    EXPECT_FALSE(is_out_of_memory(e));
  }
  ::setenv("M2N2_INJECT_FAULT", "cv@x", 1);
  try {
    inject_fault("x");
    FAIL();
  } catch (const cv::Exception& e) {
    EXPECT_EQ(one_line_message(e).rfind("OpenCV error in", 0), 0u) << one_line_message(e);
    EXPECT_EQ(one_line_message(e).find('\n'), std::string::npos);
  }
  ::setenv("M2N2_INJECT_FAULT", "cuda_oom@x", 1);
  EXPECT_NO_THROW(inject_fault("x", /*on_cpu=*/true));
  try {
    inject_fault("x");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_TRUE(is_out_of_memory(e));
  }
  EXPECT_NO_THROW(inject_fault("y"));
  ::unsetenv("M2N2_INJECT_FAULT");
  EXPECT_NO_THROW(inject_fault("x"));
  EXPECT_EQ(one_line_message(std::bad_alloc()), "out of memory (std::bad_alloc)");
}

// Instances of one image are consecutive whatever the annotation order.
TEST(Hardening, InstancesAreGroupedByImage) {
  std::vector<Instance> v(5);
  const char* imgs[] = {"a", "b", "a", "c", "b"};
  for (int i = 0; i < 5; ++i) {
    v[i].id = std::to_string(i);
    v[i].image_path = imgs[i];
  }
  const auto g = group_by_image(v);
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0].size(), 2u);
  EXPECT_EQ(g[0][1].id, "2");
  EXPECT_EQ(g[1][0].id, "1");
  EXPECT_EQ(g[1][1].id, "4");
  EXPECT_EQ(g[2][0].id, "3");
}

// Upper-case and non-ASCII file names (bytes >= 0x80 went to ::tolower as negative chars).
TEST(Hardening, DatasetFolderWithNonAsciiAndUpperCaseNames) {
  const fs::path d = test::temp_dir();
  fs::create_directories(d / "images");
  fs::create_directories(d / "masks");
  const cv::Mat img(8, 8, CV_8UC3, cv::Scalar(1, 2, 3)), m(8, 8, CV_8U, cv::Scalar(255));
  const std::string name = "\xc3\xa9t\xc3\xa9";  // "été"
  write_png_atomic((d / "images" / (name + ".PNG")).string(), img);
  write_png_atomic((d / "masks" / (name + ".Png")).string(), m);
  const auto in = read_dataset(d.string(), "", MaskConvention::GrabCut);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0].id, name);
  fs::remove_all(d);
}
