// m2n2 — pixel accuracy and mIoU of predicted label maps against ground truth, with
// per-image Hungarian matching of segments to classes (DiffSeg's protocol).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace m2n2 {

struct LabelEvaluation {
  nlohmann::json metrics;  // images, classes, pixel_accuracy, mIoU, iou_per_class, matching, failed
  int failures = 0;
};

// Every GT label PNG in `gt_dir` against the prediction of the same stem in `pred_dir`.
// num_classes 0 = largest GT label + 1. An unreadable pair is reported to `on_error`
// and skipped; missing folders or no evaluable image: InvalidArgument.
LabelEvaluation evaluate_label_maps(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                                    const std::function<void(const std::string&)>& on_error);

}  // namespace m2n2
