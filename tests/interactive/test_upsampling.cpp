#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "m2n2/interactive/upsampling.hpp"
#include "test_util.hpp"

using namespace m2n2;

TEST(Upsampling, BilinearFollowsPyTorchHalfPixel) {
  cv::Mat low = (cv::Mat_<float>(1, 2) << 0.0f, 1.0f);
  cv::Mat up = upsample_bilinear(low, 1, 4);
  // align_corners=False: sources -0.25(->0), 0.25, 0.75, 1.25(->1, clamped neighbour)
  EXPECT_FLOAT_EQ(up.at<float>(0, 0), 0.0f);
  EXPECT_FLOAT_EQ(up.at<float>(0, 1), 0.25f);
  EXPECT_FLOAT_EQ(up.at<float>(0, 2), 0.75f);
  EXPECT_FLOAT_EQ(up.at<float>(0, 3), 1.0f);
}

TEST(Upsampling, TableEqualsDirectArithmetic) {
  cv::Mat labels(60, 90, CV_8U, cv::Scalar(0));
  cv::rectangle(labels, {20, 10, 40, 30}, cv::Scalar(1), cv::FILLED);
  const cv::Mat img = test::paint(labels, {{20, 40, 60}, {200, 180, 30}}, 8.0);
  cv::Mat low(8, 8, CV_32F);
  cv::randu(low, 0, 30);
  JointBilateralUpsampler tab(img, 8, 8, JbuParams{});
  ASSERT_TRUE(tab.tabulated());
  JointBilateralUpsampler dir(img, 8, 8, JbuParams{}, 0.0);
  ASSERT_FALSE(dir.tabulated());
  const cv::Mat a = tab.apply(low), b = dir.apply(low);
  EXPECT_LE(cv::norm(a, b, cv::NORM_INF), 1e-4 * 30);
}

TEST(Upsampling, ConstantStaysConstantAndEdgesStaySharp) {
  cv::Mat labels(64, 64, CV_8U, cv::Scalar(0));
  labels(cv::Rect(32, 0, 32, 64)).setTo(1);
  const cv::Mat img = test::paint(labels, {{0, 0, 0}, {255, 255, 255}});
  JointBilateralUpsampler u(img, 8, 8, JbuParams{});
  cv::Mat c(8, 8, CV_32F, cv::Scalar(3.5f));
  EXPECT_LE(cv::norm(u.apply(c), cv::Mat(64, 64, CV_32F, cv::Scalar(3.5f)), cv::NORM_INF), 1e-4);
  // A step map aligned with the image edge: bilinear blurs it across (0.44 and
  // 0.56 beside the edge), the joint bilateral filter pulls each side back.
  cv::Mat step(8, 8, CV_32F, cv::Scalar(0.0f));
  step(cv::Rect(4, 0, 4, 8)).setTo(1.0f);
  const cv::Mat bil = upsample_bilinear(step, 64, 64);
  const cv::Mat out = u.apply(step);
  EXPECT_NEAR(bil.at<float>(32, 31), 0.4375f, 1e-6);
  EXPECT_LT(out.at<float>(32, 31), 0.25f);
  EXPECT_GT(out.at<float>(32, 32), 0.75f);
}

// The table is built 16 pixels at a time; widths that leave a partial block, upscale
// factors from 2 to 13 and unequal axes must all give the direct filter's output.
TEST(Upsampling, TableEqualsDirectAcrossScalesAndPartialBlocks) {
  struct Case { int W, H, gw, gh; };
  for (const Case c : {Case{203, 117, 16, 16}, Case{37, 29, 16, 12}, Case{150, 61, 8, 20}, Case{17, 300, 8, 24}}) {
    cv::Mat labels(c.H, c.W, CV_8U, cv::Scalar(0));
    cv::circle(labels, {c.W / 2, c.H / 2}, std::min(c.W, c.H) / 3, cv::Scalar(1), cv::FILLED);
    const cv::Mat img = test::paint(labels, {{20, 40, 60}, {200, 180, 30}}, 12.0);
    cv::Mat low(c.gh, c.gw, CV_32F);
    cv::randu(low, 0, 30);
    JointBilateralUpsampler tab(img, c.gh, c.gw, JbuParams{});
    ASSERT_TRUE(tab.tabulated());
    JointBilateralUpsampler dir(img, c.gh, c.gw, JbuParams{}, 0.0);
    const cv::Mat a = tab.apply(low), b = dir.apply(low), u = dir.apply_untabulated(low);
    EXPECT_LE(cv::norm(a, b, cv::NORM_INF), 1e-4 * 30) << c.W << "x" << c.H << " grid " << c.gw << "x" << c.gh;
    EXPECT_LE(cv::norm(u, b, cv::NORM_INF), 1e-4 * 30) << c.W << "x" << c.H << " grid " << c.gw << "x" << c.gh;
  }
}
