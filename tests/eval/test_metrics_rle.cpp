#include <gtest/gtest.h>

#include <random>

#include "m2n2/eval/metrics.hpp"
#include "m2n2/io/rle.hpp"

using namespace m2n2;

TEST(Metrics, IouWithIgnore) {
  cv::Mat p = cv::Mat::zeros(4, 4, CV_8U), g = cv::Mat::zeros(4, 4, CV_8U), ig = cv::Mat::zeros(4, 4, CV_8U);
  p(cv::Rect(0, 0, 2, 2)).setTo(255);
  g(cv::Rect(1, 0, 2, 2)).setTo(1);
  EXPECT_DOUBLE_EQ(iou(p, g), 2.0 / 6.0);
  ig.at<uint8_t>(0, 0) = 1;
  ig.at<uint8_t>(1, 0) = 1;
  EXPECT_DOUBLE_EQ(iou(p, g, ig), 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(iou(cv::Mat::zeros(2, 2, CV_8U), cv::Mat::zeros(2, 2, CV_8U)), 1.0);
}

TEST(Metrics, NocArithmetic) {
  const std::vector<double> a = {0.5, 0.86, 0.91, 0.96}, b = {0.2, 0.3};
  EXPECT_EQ(number_of_clicks(a, 0.85, 20), 2);
  EXPECT_EQ(number_of_clicks(a, 0.90, 20), 3);
  EXPECT_EQ(number_of_clicks(a, 0.95, 20), 4);
  EXPECT_EQ(number_of_clicks(b, 0.85, 20), 20);
  std::vector<InstanceResult> r = {{"a", a, 0, 0}, {"b", b, 0, 0}};
  Summary s = summarize(r, 4);
  EXPECT_DOUBLE_EQ(s.noc85, (2 + 4) / 2.0);  // b never reaches: counts as the limit (4)
  EXPECT_DOUBLE_EQ(s.noc90, (3 + 4) / 2.0);
  EXPECT_EQ(s.nof90, 1);
  ASSERT_EQ(s.miou_per_click.size(), 4u);
  EXPECT_DOUBLE_EQ(s.miou_per_click[0], 0.35);
  EXPECT_DOUBLE_EQ(s.miou_per_click[3], (0.96 + 0.3) / 2);  // b padded with its last IoU
}

// An independent column-major decoder, written from the COCO definition.
static cv::Mat decode_reference(const std::vector<uint32_t>& counts, int h, int w) {
  std::vector<uint8_t> flat(static_cast<size_t>(h) * w, 0);
  size_t pos = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    for (uint32_t k = 0; k < counts[i]; ++k) flat[pos + k] = (i % 2) ? 255 : 0;
    pos += counts[i];
  }
  cv::Mat m(h, w, CV_8U);
  for (int x = 0; x < w; ++x)
    for (int y = 0; y < h; ++y) m.at<uint8_t>(y, x) = flat[static_cast<size_t>(x) * h + y];
  return m;
}

TEST(Rle, ColumnMajorCountsStartWithZeros) {
  cv::Mat m = cv::Mat::zeros(3, 2, CV_8U);
  m.at<uint8_t>(0, 0) = 255;  // first pixel set: counts start with a 0 run
  m.at<uint8_t>(2, 0) = 255;
  m.at<uint8_t>(0, 1) = 255;
  EXPECT_EQ(rle_counts(m), (std::vector<uint32_t>{0, 1, 1, 2, 2}));
}

TEST(Rle, RoundTripsAgainstIndependentDecoder) {
  std::mt19937 rng(2);
  for (int t = 0; t < 20; ++t) {
    const int h = 1 + static_cast<int>(rng() % 40), w = 1 + static_cast<int>(rng() % 40);
    cv::Mat m(h, w, CV_8U);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) m.at<uint8_t>(y, x) = (rng() % 5 == 0) ? 255 : 0;
    const auto counts = rle_counts(m);
    EXPECT_EQ(cv::countNonZero(decode_reference(counts, h, w) != m), 0);
    EXPECT_EQ(cv::countNonZero(rle_decode(counts, h, w) != m), 0);
    const std::string s = rle_to_string(counts);
    EXPECT_EQ(rle_from_string(s), counts);
  }
}

TEST(Rle, KnownCompressedString) {
  // pycocotools: counts [0, 1, 1, 2, 2] -> each delta-coded (i > 2), 5 bits a char + 48.
  // 0, 1, 1, then 2-1 = 1 and 2-1 = 1.
  EXPECT_EQ(rle_to_string({0, 1, 1, 2, 2}), "01111");
  EXPECT_EQ(rle_from_string("01111"), (std::vector<uint32_t>{0, 1, 1, 2, 2}));
  EXPECT_THROW(rle_decode({3, 4}, 2, 2), std::exception);
}

TEST(Rle, PolygonRasterisation) {
  const cv::Mat m = polygons_to_mask({{2, 2, 8, 2, 8, 8, 2, 8}}, 10, 10);
  EXPECT_GT(cv::countNonZero(m), 30);
  EXPECT_LT(cv::countNonZero(m), 50);
  EXPECT_EQ(m.at<uint8_t>(5, 5), 255);
  EXPECT_EQ(m.at<uint8_t>(0, 0), 0);
}
