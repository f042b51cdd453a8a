// Evaluation of label maps: per-image Hungarian matching as in DiffSeg's benchmark code,
// dataset-level Hungarian and majority matching as in unsupervised semantic segmentation.
#include "m2n2/whole_image/label_eval.hpp"

#include "m2n2/io/image_io.hpp"

#include <algorithm>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/hungarian.hpp"
#include "core/check.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

LabelMatching parse_label_matching(const std::string& s) {
  if (s == "image") return LabelMatching::Image;
  if (s == "dataset") return LabelMatching::Dataset;
  if (s == "majority") return LabelMatching::Majority;
  check::not_one_of("matching", s, {"image", "dataset", "majority"});
}

std::string to_string(LabelMatching m) {
  switch (m) {
    case LabelMatching::Image: return "image";
    case LabelMatching::Dataset: return "dataset";
    case LabelMatching::Majority: return "majority";
  }
  return "?";
}

namespace {

// hist: C×cols confusion counts (GT row, predicted column). For each class c, the
// predicted labels assigned to it; accumulates TP, FP and FN of the assignment.
void score(const std::vector<double>& hist, int C, int cols, const std::vector<std::vector<int>>& labels_of,
           std::vector<double>& TP, std::vector<double>& FP, std::vector<double>& FN) {
  for (int c = 0; c < C; ++c) {
    double row = 0, tp = 0, predicted = 0;
    for (int j = 0; j < cols; ++j) row += hist[static_cast<size_t>(c) * cols + j];
    for (int k : labels_of[c]) {
      tp += hist[static_cast<size_t>(c) * cols + k];
      for (int r = 0; r < C; ++r) predicted += hist[static_cast<size_t>(r) * cols + k];
    }
    TP[c] += tp;
    FN[c] += row - tp;
    FP[c] += predicted - tp;
  }
}

// One-to-one (Hungarian, maximising matched pixels) or many-to-one (majority) labels per class.
std::vector<std::vector<int>> assign(const std::vector<double>& hist, int C, int cols, bool majority) {
  std::vector<std::vector<int>> labels_of(C);
  if (majority) {
    for (int k = 0; k < cols; ++k) {
      int best = -1;  // a label that covers no valid pixel predicts no class
      double most = 0;
      for (int c = 0; c < C; ++c) {
        const double v = hist[static_cast<size_t>(c) * cols + k];
        if (v > most) {
          most = v;
          best = c;  // ties: the lowest class
        }
      }
      if (best >= 0) labels_of[best].push_back(k);
    }
    return labels_of;
  }
  const auto a = linear_sum_assignment(hist, C, cols, true);
  for (size_t i = 0; i < a.rows.size(); ++i) labels_of[a.rows[i]].push_back(a.cols[i]);
  return labels_of;
}

}  // namespace

LabelEvaluation evaluate_label_maps(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                                    const std::function<void(const std::string&)>& on_error, LabelMatching matching,
                                    LabelProtocol protocol) {
  if (protocol != LabelProtocol::None) {
    if (num_classes != 0 && num_classes != kProtocolClasses)
      throw InvalidArgument("classes: " + to_string(protocol) + " has 27 classes, got " + std::to_string(num_classes));
    num_classes = kProtocolClasses;
  }
  if (!fs::is_directory(pred_dir)) throw InvalidArgument(pred_dir + ": not a folder");
  if (!fs::is_directory(gt_dir)) throw InvalidArgument(gt_dir + ": not a folder");
  std::vector<fs::path> gts;
  for (const auto& e : fs::directory_iterator(gt_dir))
    if (e.is_regular_file()) gts.push_back(e.path());
  std::sort(gts.begin(), gts.end());
  struct Img {
    cv::Mat gt, pred;
    std::string name;
  };
  std::vector<Img> imgs;
  int C = num_classes, failures = 0;
  for (const auto& g : gts) {
    const fs::path p = fs::path(pred_dir) / (g.stem().string() + ".png");
    try {
      // Palette PNGs by index, grayscale by value (8- or 16-bit): never by brightness.
      cv::Mat gt = read_label_image(g.string()).values;
      std::error_code ec;
      if (!fs::exists(p, ec)) throw Error(p.string() + ": missing prediction");
      cv::Mat pr = read_label_image(p.string()).values;
      if (protocol == LabelProtocol::None && pr.size() != gt.size())
        throw Error(p.string() + ": size differs from " + g.string());
      apply_label_protocol(protocol, gt, pr, p.string());
      for (int y = 0; y < gt.rows; ++y)
        for (int x = 0; x < gt.cols; ++x) {
          const int v = gt.at<int>(y, x);
          if (v == ignore) continue;
          if (num_classes > 0 && v >= num_classes)
            throw Error(g.string() + ": label " + std::to_string(v) + " is not below --classes " +
                        std::to_string(num_classes) + " (" + std::to_string(ignore) + " is ignored)");
          if (num_classes <= 0) C = std::max(C, v + 1);
        }
      imgs.push_back({gt, pr, g.stem().string()});
    } catch (const std::exception& e) {
      if (on_error) on_error(one_line_message(e));
      ++failures;
    }
  }
  if (imgs.empty()) throw InvalidArgument(gt_dir + ": no evaluable images");
  std::vector<double> TP(C, 0), FP(C, 0), FN(C, 0);
  double ALL = 0;
  // Predicted labels over the dataset; every confusion matrix has at least C columns.
  int K = 0;
  for (const auto& im : imgs)
    for (int y = 0; y < im.pred.rows; ++y)
      for (int x = 0; x < im.pred.cols; ++x) K = std::max(K, im.pred.at<int>(y, x) + 1);
  auto confusion = [&](const Img& im, int cols, std::vector<double>& hist) {
    for (int y = 0; y < im.gt.rows; ++y)
      for (int x = 0; x < im.gt.cols; ++x) {
        const int g = im.gt.at<int>(y, x), p = im.pred.at<int>(y, x);
        if (g == ignore || g < 0 || g >= C || p < 0) continue;
        hist[static_cast<size_t>(g) * cols + p] += 1;
      }
  };
  if (matching == LabelMatching::Image) {
    for (const auto& im : imgs) {
      int k_img = 0;
      for (int y = 0; y < im.pred.rows; ++y)
        for (int x = 0; x < im.pred.cols; ++x) k_img = std::max(k_img, im.pred.at<int>(y, x) + 1);
      const int cols = std::max(C, k_img);  // the reference: max(n_classes, max label + 1)
      std::vector<double> hist(static_cast<size_t>(C) * cols, 0);
      confusion(im, cols, hist);
      score(hist, C, cols, assign(hist, C, cols, false), TP, FP, FN);
      for (double v : hist) ALL += v;
    }
  } else {
    const int cols = std::max(C, K);
    std::vector<double> hist(static_cast<size_t>(C) * cols, 0);
    for (const auto& im : imgs) confusion(im, cols, hist);
    score(hist, C, cols, assign(hist, C, cols, matching == LabelMatching::Majority), TP, FP, FN);
    for (double v : hist) ALL += v;
  }
  double tp_sum = 0, iou_sum = 0;
  int iou_n = 0;
  nlohmann::json per_class = nlohmann::json::array();
  for (int c = 0; c < C; ++c) {
    tp_sum += TP[c];
    const double den = TP[c] + FP[c] + FN[c];
    if (den > 0) {
      iou_sum += TP[c] / den;
      ++iou_n;
      per_class.push_back(TP[c] / den);
    } else {
      per_class.push_back(nullptr);
    }
  }
  nlohmann::json m = {{"images", imgs.size()},
                      {"classes", C},
                      {"pixel_accuracy", ALL > 0 ? tp_sum / ALL : 0.0},
                      {"mIoU", iou_n ? iou_sum / iou_n : 0.0},
                      {"iou_per_class", per_class},
                      {"matching", to_string(matching)},
                      {"protocol", to_string(protocol)},
                      {"matching_rule",
                       matching == LabelMatching::Image
                           ? "per image, Hungarian (SciPy tie-breaking); unmatched predicted segments are not FP; "
                             "absent GT classes are still matched"
                       : matching == LabelMatching::Dataset
                           ? "one Hungarian assignment over the dataset's confusion matrix (max matched pixels, SciPy "
                             "tie-breaking); unmatched predicted labels predict no class"
                           : "each predicted label to the class it overlaps most over the dataset (many-to-one)"},
                      {"predicted_labels", K},
                      {"failed", failures}};
  return {m, failures};
}

}  // namespace m2n2
