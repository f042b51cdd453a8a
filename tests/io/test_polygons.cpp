#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>
#include <random>

#include "m2n2/core/error.hpp"
#include "m2n2/io/polygons.hpp"

using namespace m2n2;

namespace {

// The pixels whose centres (x+0.5, y+0.5) lie inside `rings` by the even-odd rule, in
// exact integer arithmetic (doubled coordinates), so that a centre on an edge walked
// twice (a bridge) counts the same for both walks.
cv::Mat rasterize(const std::vector<std::vector<cv::Point>>& rings, int h, int w) {
  cv::Mat m = cv::Mat::zeros(h, w, CV_8U);
  for (int py = 0; py < h; ++py)
    for (int px = 0; px < w; ++px) {
      const long long cx = 2LL * px + 1, cy = 2LL * py + 1;
      bool inside = false;
      for (const auto& r : rings)
        for (size_t i = 0; i < r.size(); ++i) {
          const long long x1 = 2LL * r[i].x, y1 = 2LL * r[i].y;
          const long long x2 = 2LL * r[(i + 1) % r.size()].x, y2 = 2LL * r[(i + 1) % r.size()].y;
          if ((y1 > cy) == (y2 > cy)) continue;
          // cx < x1 + (cy - y1) (x2 - x1) / (y2 - y1)
          const long long lhs = (cx - x1) * (y2 - y1), rhs = (cy - y1) * (x2 - x1);
          if (y2 > y1 ? lhs < rhs : lhs > rhs) inside = !inside;
        }
      if (inside) m.at<uint8_t>(py, px) = 255;
    }
  return m;
}

cv::Mat rasterize(const std::vector<MaskPolygon>& ps, int h, int w) {
  std::vector<std::vector<cv::Point>> rings;
  for (const auto& p : ps) {
    rings.push_back(p.outer);
    for (const auto& hole : p.holes) rings.push_back(hole);
  }
  return rasterize(rings, h, w);
}

double iou(const cv::Mat& a, const cv::Mat& b) {
  const double i = cv::countNonZero(a & b), u = cv::countNonZero(a | b);
  return u == 0 ? 1.0 : i / u;
}

// Blobs with holes, islands inside holes, pixels touching at corners and the border.
cv::Mat awkward_mask() {
  cv::Mat m = cv::Mat::zeros(60, 80, CV_8U);
  cv::circle(m, {30, 30}, 20, 255, -1);
  cv::circle(m, {30, 30}, 10, 0, -1);     // a hole
  cv::circle(m, {30, 30}, 4, 255, -1);    // an island in it
  cv::rectangle(m, {22, 45}, {25, 47}, 0, -1);  // a second hole
  m.at<uint8_t>(0, 79) = 255;             // the corner pixel
  m.at<uint8_t>(1, 78) = 255;             // touching it at a corner
  m(cv::Rect(60, 40, 20, 20)).setTo(255);  // on the border
  m.at<uint8_t>(50, 70) = 0;               // a one-pixel hole
  m.at<uint8_t>(51, 71) = 0;               // and one touching it at a corner
  return m;
}

}  // namespace

TEST(Polygons, OnePixelIsItsSquare) {
  cv::Mat m = cv::Mat::zeros(3, 3, CV_8U);
  m.at<uint8_t>(1, 2) = 255;
  const auto ps = mask_to_polygons(m, 0);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].outer, (std::vector<cv::Point>{{2, 1}, {3, 1}, {3, 2}, {2, 2}}));
  EXPECT_TRUE(ps[0].holes.empty());
  EXPECT_EQ(twice_signed_area(ps[0].outer), 2);
}

TEST(Polygons, RingHasOneHoleOppositeWay) {
  cv::Mat m = cv::Mat::zeros(5, 5, CV_8U);
  m(cv::Rect(1, 1, 3, 3)).setTo(255);
  m.at<uint8_t>(2, 2) = 0;
  const auto ps = mask_to_polygons(m, 0);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].outer.size(), 4u);
  EXPECT_EQ(twice_signed_area(ps[0].outer), 2 * 9);
  ASSERT_EQ(ps[0].holes.size(), 1u);
  EXPECT_EQ(twice_signed_area(ps[0].holes[0]), -2);
  EXPECT_EQ(cv::countNonZero(rasterize(ps, 5, 5) != m), 0);
  // One ring with the hole bridged holds the same pixels.
  EXPECT_EQ(cv::countNonZero(rasterize({bridge_holes(ps[0])}, 5, 5) != m), 0);
}

TEST(Polygons, CornerTouchingPixelsAreOneObject) {
  cv::Mat m = cv::Mat::zeros(4, 4, CV_8U);
  m.at<uint8_t>(1, 1) = 255;
  m.at<uint8_t>(2, 2) = 255;
  const auto ps = mask_to_polygons(m, 0);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].outer.size(), 8u);
  EXPECT_EQ(twice_signed_area(ps[0].outer), 4);
  EXPECT_EQ(cv::countNonZero(rasterize(ps, 4, 4) != m), 0);
}

TEST(Polygons, ExactAtToleranceZero) {
  const cv::Mat m = awkward_mask();
  const auto ps = mask_to_polygons(m, 0);
  // In the order of their first pixel: the corner pair, the disc, its island, the border square.
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(cv::countNonZero(rasterize(ps, m.rows, m.cols) != m), 0);
  EXPECT_EQ(cv::countNonZero(rasterize({bridge_all(ps)}, m.rows, m.cols) != m), 0);
  for (const auto& p : ps) {
    EXPECT_GT(twice_signed_area(p.outer), 0);
    for (const auto& h : p.holes) EXPECT_LT(twice_signed_area(h), 0);
  }
  // The disc's two holes, the square's two corner-touching one-pixel holes.
  EXPECT_EQ(ps[0].holes.size(), 0u);
  EXPECT_EQ(ps[1].holes.size(), 2u);
  EXPECT_EQ(ps[2].holes.size(), 0u);
  EXPECT_EQ(ps[3].holes.size(), 2u);
}

TEST(Polygons, RandomMasksExactAtToleranceZero) {
  std::mt19937 rng(7);
  for (int t = 0; t < 30; ++t) {
    cv::Mat m(17, 23, CV_8U);
    for (int y = 0; y < m.rows; ++y)
      for (int x = 0; x < m.cols; ++x) m.at<uint8_t>(y, x) = (rng() % 100) < 45 ? 255 : 0;
    const auto ps = mask_to_polygons(m, 0);
    ASSERT_EQ(cv::countNonZero(rasterize(ps, m.rows, m.cols) != m), 0) << "mask " << t;
    ASSERT_EQ(cv::countNonZero(rasterize({bridge_all(ps)}, m.rows, m.cols) != m), 0) << "mask " << t;
  }
}

TEST(Polygons, DefaultToleranceKeepsTheShape) {
  cv::Mat m = cv::Mat::zeros(120, 160, CV_8U);
  cv::ellipse(m, {80, 60}, {60, 40}, 20, 0, 360, 255, -1);
  cv::ellipse(m, {70, 55}, {15, 10}, -30, 0, 360, 0, -1);
  const auto exact = mask_to_polygons(m, 0);
  const auto ps = mask_to_polygons(m);
  ASSERT_EQ(ps.size(), 1u);
  ASSERT_EQ(ps[0].holes.size(), 1u);
  EXPECT_LT(ps[0].outer.size() * 4, exact[0].outer.size());  // simplified
  EXPECT_GE(iou(rasterize(ps, m.rows, m.cols), m), 0.98);
  EXPECT_GE(iou(rasterize({bridge_all(ps)}, m.rows, m.cols), m), 0.98);
}

TEST(Polygons, EmptyAndBadInput) {
  EXPECT_TRUE(mask_to_polygons(cv::Mat::zeros(5, 5, CV_8U)).empty());
  EXPECT_TRUE(mask_to_polygons(cv::Mat()).empty());
  EXPECT_TRUE(bridge_all({}).empty());
  EXPECT_THROW(mask_to_polygons(cv::Mat::zeros(5, 5, CV_32F)), InvalidArgument);
  EXPECT_THROW(mask_to_polygons(cv::Mat::zeros(5, 5, CV_8U), -1), InvalidArgument);
  EXPECT_THROW(mask_to_polygons(cv::Mat::zeros(5, 5, CV_8U), std::nan("")), InvalidArgument);
}
