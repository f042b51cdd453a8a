// Label-map evaluation: per-image, dataset-level and majority matching on toys whose
// answers are worked out by hand below.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/label_eval.hpp"
#include "test_util.hpp"

using namespace m2n2;

namespace {

// A 10×10 label map whose column x has label cols[x].
cv::Mat columns(const std::vector<int>& cols) {
  cv::Mat m(10, 10, CV_16U);
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 10; ++x) m.at<uint16_t>(y, x) = static_cast<uint16_t>(cols[x]);
  return m;
}

struct Toy {
  std::string pred, gt;
};

Toy write_toy(const std::vector<std::pair<cv::Mat, cv::Mat>>& images) {  // (gt, pred) per image
  Toy t{test::temp_dir(), test::temp_dir()};
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string name = "im" + std::to_string(i) + ".png";
    cv::imwrite(t.gt + "/" + name, images[i].first);
    cv::imwrite(t.pred + "/" + name, images[i].second);
  }
  return t;
}

LabelEvaluation run(const Toy& t, int classes, LabelMatching m) {
  return evaluate_label_maps(t.pred, t.gt, classes, 255, nullptr, m);
}

nlohmann::json run_protocol(const std::vector<std::pair<cv::Mat, cv::Mat>>& images, LabelProtocol p) {
  const Toy t = write_toy(images);
  return evaluate_label_maps(t.pred, t.gt, 0, 255, nullptr, LabelMatching::Image, p).metrics;
}

}  // namespace

// Image A: GT 0 | 1, predicted 0 | 1. Image B: GT 0 | 2 (40 px) with a 10-px column of 0,
// predicted 0 | 1. Per image, label 1 is class 1 in A and class 2 in B; over the dataset it
// can be only one of them.
TEST(LabelEval, DatasetLevelHungarianDiffersFromPerImageMatching) {
  const Toy t = write_toy({{columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 1}), columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 1})},
                           {columns({0, 0, 0, 0, 0, 2, 2, 2, 2, 0}), columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 1})}});
  // Per image: class 0 TP 100 FN 10; class 1 TP 50; class 2 TP 40 FP 10.
  const auto img = run(t, 3, LabelMatching::Image).metrics;
  EXPECT_NEAR(img["iou_per_class"][0].get<double>(), 100.0 / 110.0, 1e-12);
  EXPECT_NEAR(img["iou_per_class"][1].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(img["iou_per_class"][2].get<double>(), 40.0 / 50.0, 1e-12);
  EXPECT_NEAR(img["pixel_accuracy"].get<double>(), 190.0 / 200.0, 1e-12);
  EXPECT_EQ(img["matching"], "image");
  // Over the dataset: M = [[100, 10], [0, 50], [0, 40]]; the assignment 0->0, 1->1 (150 px)
  // beats 0->0, 2->1 (140); class 2 gets no label. Class 1: TP 50, FP 50 (label 1 on GT 0
  // and 2); class 2: FN 40.
  const auto ds = run(t, 3, LabelMatching::Dataset).metrics;
  EXPECT_NEAR(ds["iou_per_class"][0].get<double>(), 100.0 / 110.0, 1e-12);
  EXPECT_NEAR(ds["iou_per_class"][1].get<double>(), 50.0 / 100.0, 1e-12);
  EXPECT_NEAR(ds["iou_per_class"][2].get<double>(), 0.0, 1e-12);
  EXPECT_NEAR(ds["mIoU"].get<double>(), (100.0 / 110.0 + 0.5 + 0.0) / 3.0, 1e-12);
  EXPECT_NEAR(ds["pixel_accuracy"].get<double>(), 150.0 / 200.0, 1e-12);
  EXPECT_EQ(ds["matching"], "dataset");
  EXPECT_EQ(ds["predicted_labels"], 2);
}

// One image, GT 0 | 1; three labels: 0 (30 px of class 0), 2 (20 px of class 0), 1 (class 1).
// One-to-one leaves label 2 unmatched (its pixels predict no class); majority gives it to 0.
TEST(LabelEval, MajorityMatchingIsManyToOne) {
  const Toy t = write_toy({{columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 1}), columns({0, 0, 0, 2, 2, 1, 1, 1, 1, 1})}});
  const auto ds = run(t, 2, LabelMatching::Dataset).metrics;
  EXPECT_NEAR(ds["iou_per_class"][0].get<double>(), 30.0 / 50.0, 1e-12);
  EXPECT_NEAR(ds["mIoU"].get<double>(), 0.8, 1e-12);
  EXPECT_NEAR(ds["pixel_accuracy"].get<double>(), 0.8, 1e-12);
  const auto maj = run(t, 2, LabelMatching::Majority).metrics;
  EXPECT_NEAR(maj["mIoU"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(maj["pixel_accuracy"].get<double>(), 1.0, 1e-12);
  // Per image with one image is the dataset-level answer.
  EXPECT_NEAR(run(t, 2, LabelMatching::Image).metrics["mIoU"].get<double>(), 0.8, 1e-12);
}

TEST(LabelEval, IgnoredPixelsAndMatchingNames) {
  cv::Mat gt = columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 1});
  gt.col(9).setTo(255);  // ignored: the wrong prediction there does not count
  const Toy t = write_toy({{gt, columns({0, 0, 0, 0, 0, 1, 1, 1, 1, 0})}});
  EXPECT_NEAR(run(t, 2, LabelMatching::Dataset).metrics["mIoU"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(parse_label_matching("majority"), LabelMatching::Majority);
  EXPECT_THROW(parse_label_matching("best"), InvalidArgument);
}

// The per-image confusion matrix has max(classes, largest label + 1) columns, as the
// reference's, so absent class 1 must take predicted label 1 (IoU 0, not 0/0 dropped).
// GT: all class 0; predicted 0 on 6 columns, 1 on 4. hist = [[60, 40], [0, 0]]:
// class 0 -> label 0 (TP 60, FN 40), class 1 -> label 1 (FP 40), mIoU (0.6 + 0) / 2.
TEST(LabelEval, PerImageHungarianHasNoSpareColumn) {
  const Toy t = write_toy({{columns({0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), columns({0, 0, 0, 0, 0, 0, 1, 1, 1, 1})}});
  const auto m = run(t, 2, LabelMatching::Image).metrics;
  EXPECT_NEAR(m["iou_per_class"][0].get<double>(), 0.6, 1e-12);
  ASSERT_FALSE(m["iou_per_class"][1].is_null());
  EXPECT_NEAR(m["iou_per_class"][1].get<double>(), 0.0, 1e-12);
  EXPECT_NEAR(m["mIoU"].get<double>(), 0.3, 1e-12);
  EXPECT_NEAR(m["pixel_accuracy"].get<double>(), 0.6, 1e-12);
}

namespace {
// A 600×800 COCO-Stuff map: columns 0..99 fine 5 (→ 11, cropped away), 100..399 fine 120
// (→ 14), 400..699 fine 181 (→ 24), 700..799 fine 0 (cropped away); rows 0..59 are 255
// (unlabelled). The crop is columns 100..699; at 512 its halves are 256 columns each and
// rows 0..50 come from the unlabelled band (floor((i + ½)·600/512) < 60).
cv::Mat coco_gt() {
  cv::Mat g(600, 800, CV_8U, cv::Scalar(0));
  g.colRange(0, 100).setTo(5);
  g.colRange(100, 400).setTo(120);
  g.colRange(400, 700).setTo(181);
  g.rowRange(0, 60).setTo(255);
  return g;
}
cv::Mat halves(int rows, int cols, int split, int left, int right, int band_rows = 0, int band = 0) {
  cv::Mat m(rows, cols, CV_16U, cv::Scalar(right));
  m.colRange(0, split).setTo(left);
  if (band_rows) m.rowRange(0, band_rows).setTo(band);
  return m;
}
}  // namespace

TEST(LabelEval, CocoStuff27ProtocolMapsCropsAndIgnores) {
  EXPECT_EQ(coarse_label(LabelProtocol::CocoStuff27, 0), 9);      // person
  EXPECT_EQ(coarse_label(LabelProtocol::CocoStuff27, 181), 24);
  EXPECT_EQ(coarse_label(LabelProtocol::CocoStuff27, 255), -1);
  EXPECT_EQ(coarse_label(LabelProtocol::Cityscapes27, 7), 0);     // road
  EXPECT_EQ(coarse_label(LabelProtocol::Cityscapes27, 33), 26);
  EXPECT_EQ(coarse_label(LabelProtocol::Cityscapes27, 6), -1);
  EXPECT_EQ(coarse_label(LabelProtocol::Cityscapes27, 255), -1);
  // A 512 prediction of the crop, right up to the halves; the unlabelled band predicted
  // wrongly counts for nothing.
  const auto ok = run_protocol({{coco_gt(), halves(512, 512, 256, 3, 7, 51, 9)}}, LabelProtocol::CocoStuff27);
  EXPECT_EQ(ok["classes"], 27);
  EXPECT_EQ(ok["protocol"], "cocostuff27");
  EXPECT_NEAR(ok["pixel_accuracy"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(ok["mIoU"].get<double>(), 1.0, 1e-12);
  // A prediction at the GT's size is cropped as the GT: labels split at column 400.
  const auto full = run_protocol({{coco_gt(), halves(600, 800, 400, 1, 2)}}, LabelProtocol::CocoStuff27);
  EXPECT_NEAR(full["mIoU"].get<double>(), 1.0, 1e-12);
  // One label over the whole crop: class 14 TP = FP = 461·256 (IoU ½), class 24 IoU 0.
  const auto one = run_protocol({{coco_gt(), halves(512, 512, 256, 4, 4)}}, LabelProtocol::CocoStuff27);
  EXPECT_NEAR(one["iou_per_class"][14].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(one["iou_per_class"][24].get<double>(), 0.0, 1e-12);
  EXPECT_NEAR(one["mIoU"].get<double>(), 0.25, 1e-12);
  EXPECT_NEAR(one["pixel_accuracy"].get<double>(), 0.5, 1e-12);
  // Without the protocol the raw fine ids are scored at full size (the band included as class 255 -> ignored).
  const auto none = run_protocol({{coco_gt(), halves(600, 800, 400, 1, 2)}}, LabelProtocol::None);
  EXPECT_EQ(none["protocol"], "none");
  EXPECT_GT(none["classes"].get<int>(), 27);
}

TEST(LabelEval, Cityscapes27ProtocolAndItsErrors) {
  cv::Mat g(512, 1024, CV_8U, cv::Scalar(7));  // road; crop = columns 256..767
  g.colRange(512, 1024).setTo(26);              // car (→ 19)
  g.rowRange(0, 64).setTo(3);                   // out of roi (ignored)
  const auto m = run_protocol({{g, halves(512, 512, 256, 5, 6, 64, 0)}}, LabelProtocol::Cityscapes27);
  EXPECT_NEAR(m["mIoU"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(m["pixel_accuracy"].get<double>(), 1.0, 1e-12);
  EXPECT_FALSE(m["iou_per_class"][0].is_null());
  EXPECT_FALSE(m["iou_per_class"][19].is_null());
  // A prediction neither 512×512 nor the GT's size fails its image (one failure, reported).
  const Toy t = write_toy({{g, halves(512, 512, 256, 5, 6)}, {g, halves(300, 300, 150, 5, 6)}});
  std::vector<std::string> errors;
  const auto r = evaluate_label_maps(t.pred, t.gt, 0, 255, [&](const std::string& e) { errors.push_back(e); },
                                     LabelMatching::Image, LabelProtocol::Cityscapes27);
  EXPECT_EQ(r.failures, 1);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("512x512"), std::string::npos) << errors[0];
  EXPECT_THROW(evaluate_label_maps(t.pred, t.gt, 21, 255, nullptr, LabelMatching::Image, LabelProtocol::CocoStuff27),
               InvalidArgument);
  EXPECT_THROW(parse_label_protocol("ade20k"), InvalidArgument);
}
