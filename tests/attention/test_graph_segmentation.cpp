#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <set>

#include "m2n2/core/error.hpp"
#include "m2n2/attention/graph_segmentation.hpp"

namespace {

cv::Mat three_flat_regions() {
  // Left third 10, middle 40, right 90 (first channel), 60×30 pixels.
  cv::Mat img(30, 60, CV_32FC3);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) {
      const float v = x < 20 ? 10.f : (x < 40 ? 40.f : 90.f);
      img.at<cv::Vec3f>(y, x) = cv::Vec3f(v, 0, 0);
    }
  return img;
}

}  // namespace

TEST(GraphSegmentation, FlatRegionsAreExactlyTheSegments) {
  const cv::Mat img = three_flat_regions();
  int n = 0;
  const cv::Mat lab = m2n2::graph_segmentation(img, 100.0, 1, &n);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(lab.type(), CV_32S);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) {
      EXPECT_EQ(lab.at<int>(y, x), lab.at<int>(0, x < 20 ? 0 : (x < 40 ? 20 : 40)));
    }
  EXPECT_NE(lab.at<int>(0, 0), lab.at<int>(0, 20));
  EXPECT_NE(lab.at<int>(0, 20), lab.at<int>(0, 40));
}

TEST(GraphSegmentation, LargerScaleMergesWeakBoundariesFirst) {
  // Steps of 30 (left/middle) and 50 (middle/right) between flat regions of 600
  // pixels. Merge when w <= Int(C) + k/|C| on both sides. k = 20000: 30 <= 33.3
  // merges left and middle (Int 30, 1200 px), then 50 > min(30 + 16.7, 33.3)
  // keeps the right apart. k = 70000: 30 <= 116.7, then 50 <= min(88.3, 116.7).
  const cv::Mat img = three_flat_regions();
  int n = 0;
  m2n2::graph_segmentation(img, 20000.0, 1, &n);
  EXPECT_EQ(n, 2);
  const cv::Mat lab = m2n2::graph_segmentation(img, 20000.0, 1, &n);
  EXPECT_EQ(lab.at<int>(5, 5), lab.at<int>(5, 25));
  EXPECT_NE(lab.at<int>(5, 25), lab.at<int>(5, 45));
  m2n2::graph_segmentation(img, 70000.0, 1, &n);
  EXPECT_EQ(n, 1);
}

TEST(GraphSegmentation, SmallRegionsAreMergedIntoNeighbours) {
  cv::Mat img = three_flat_regions();
  // A 2×2 speck of 255 inside the left region.
  for (int y = 10; y < 12; ++y)
    for (int x = 5; x < 7; ++x) img.at<cv::Vec3f>(y, x) = cv::Vec3f(255, 255, 255);
  int n = 0;
  m2n2::graph_segmentation(img, 100.0, 1, &n);
  EXPECT_EQ(n, 4);
  const cv::Mat lab = m2n2::graph_segmentation(img, 100.0, 5, &n);
  EXPECT_EQ(n, 3);
  EXPECT_EQ(lab.at<int>(10, 5), lab.at<int>(0, 0));
}

TEST(GraphSegmentation, RejectsWrongType) {
  int n = 0;
  EXPECT_THROW(m2n2::graph_segmentation(cv::Mat(4, 4, CV_8UC3), 100.0, 1, &n), m2n2::Error);
  EXPECT_THROW(m2n2::graph_segmentation(cv::Mat(), 100.0, 1, &n), m2n2::Error);
}

// Several scales at once (edges sorted once) give each scale's own segmentation.
TEST(GraphSegmentation, SeveralScalesEqualOneCallPerScale) {
  cv::Mat img(40, 70, CV_32FC3);
  cv::randu(img, 0, 100);
  cv::GaussianBlur(img, img, cv::Size(0, 0), 2.0);
  const std::vector<double> ks = {20, 80, 320, 70000};
  std::vector<int> counts;
  const std::vector<cv::Mat> labels = m2n2::graph_segmentation(img, ks, 5, &counts);
  ASSERT_EQ(labels.size(), ks.size());
  ASSERT_EQ(counts.size(), ks.size());
  for (size_t i = 0; i < ks.size(); ++i) {
    int n = 0;
    const cv::Mat one = m2n2::graph_segmentation(img, ks[i], 5, &n);
    EXPECT_EQ(counts[i], n) << ks[i];
    EXPECT_EQ(cv::countNonZero(one != labels[i]), 0) << ks[i];
  }
  EXPECT_GT(counts[0], counts[3]);  // the scales differ
}
