// m2n2 — pixel accuracy and mIoU of predicted label maps against ground truth, with
// predicted labels matched to classes per image (DiffSeg's protocol), once over the
// whole dataset (unsupervised semantic segmentation's protocol), or many-to-one.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>

namespace m2n2 {

struct LabelEvaluation {
  nlohmann::json metrics;  // images, classes, pixel_accuracy, mIoU, iou_per_class, matching, failed
  int failures = 0;
};

enum class LabelMatching {
  Image,     // a Hungarian assignment per image (DiffSeg): unmatched segments are not FP
  Dataset,   // one Hungarian assignment over the dataset's confusion matrix (MaskContrast,
             // COMUS): one-to-one, labels left unmatched predict no class
  Majority,  // each predicted label to the class it overlaps most over the dataset (many-to-one)
};
LabelMatching parse_label_matching(const std::string& s);  // "image" | "dataset" | "majority"
std::string to_string(LabelMatching m);

// Benchmark label protocols (spec diffseg.md §9). CocoStuff27: COCO-Stuff fine labels
// 0..181 (stuffthingmaps) to the 27 coarse classes, 255 and anything else ignored.
// Cityscapes27: labelIds 7..33 to 0..26, ids 0..6 and anything else ignored. Both:
// ground truth centre-cropped (square of side min(H, W)) and resized to 512×512 by
// nearest neighbour with half-pixel centres, 27 classes.
enum class LabelProtocol { None, CocoStuff27, Cityscapes27 };
LabelProtocol parse_label_protocol(const std::string& s);  // none | cocostuff27 | cityscapes27
std::string to_string(LabelProtocol p);
constexpr int kProtocolSize = 512, kProtocolClasses = 27;
// The coarse class of a fine ground-truth label, -1 when ignored (None: unchanged).
int coarse_label(LabelProtocol p, int fine);
// The centred square of side min(H, W), resized to size×size by nearest neighbour
// (half-pixel centres, TF's and LibTorch's nearest-exact).
cv::Mat center_crop_nearest(const cv::Mat& labels, int size);
// CV_32S maps: the GT cropped, resized and mapped (ignored = -1); the prediction kept
// when it is 512×512 (auto --crop center), cropped like the GT when it has the GT's
// size, else Error naming pred_name.
void apply_label_protocol(LabelProtocol p, cv::Mat& gt, cv::Mat& pred, const std::string& pred_name);

// Every GT label PNG in `gt_dir` against the prediction of the same stem in `pred_dir`.
// num_classes 0 = largest GT label + 1 (with a protocol: 27; another value is an
// InvalidArgument). An unreadable pair is reported to `on_error`
// and skipped; missing folders or no evaluable image: InvalidArgument.
LabelEvaluation evaluate_label_maps(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                                    const std::function<void(const std::string&)>& on_error,
                                    LabelMatching matching = LabelMatching::Image,
                                    LabelProtocol protocol = LabelProtocol::None);

}  // namespace m2n2
