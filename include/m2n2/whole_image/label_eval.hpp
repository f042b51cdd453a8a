// m2n2 — pixel accuracy and mIoU of predicted label maps against ground truth, with
// predicted labels matched to classes per image (DiffSeg's protocol), once over the
// whole dataset (unsupervised semantic segmentation's protocol), or many-to-one.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
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

// Every GT label PNG in `gt_dir` against the prediction of the same stem in `pred_dir`.
// num_classes 0 = largest GT label + 1. An unreadable pair is reported to `on_error`
// and skipped; missing folders or no evaluable image: InvalidArgument.
LabelEvaluation evaluate_label_maps(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                                    const std::function<void(const std::string&)>& on_error,
                                    LabelMatching matching = LabelMatching::Image);

}  // namespace m2n2
