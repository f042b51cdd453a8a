// Per-image Hungarian evaluation of label maps, as in DiffSeg's benchmark code.
#include "m2n2/whole_image/label_eval.hpp"

#include <algorithm>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/hungarian.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

LabelEvaluation evaluate_label_maps(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                                    const std::function<void(const std::string&)>& on_error) {
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
      cv::Mat gt = cv::imread(g.string(), cv::IMREAD_ANYDEPTH | cv::IMREAD_GRAYSCALE);
      if (gt.empty()) throw Error(g.string() + ": cannot decode label map");
      cv::Mat pr = cv::imread(p.string(), cv::IMREAD_ANYDEPTH | cv::IMREAD_GRAYSCALE);
      if (pr.empty()) throw Error(p.string() + ": missing or unreadable prediction");
      if (pr.size() != gt.size()) throw Error(p.string() + ": size differs from " + g.string());
      gt.convertTo(gt, CV_32S);
      pr.convertTo(pr, CV_32S);
      if (num_classes <= 0)
        for (int y = 0; y < gt.rows; ++y)
          for (int x = 0; x < gt.cols; ++x) {
            const int v = gt.at<int>(y, x);
            if (v != ignore) C = std::max(C, v + 1);
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
  for (const auto& im : imgs) {
    int K = 0;
    for (int y = 0; y < im.pred.rows; ++y)
      for (int x = 0; x < im.pred.cols; ++x) K = std::max(K, im.pred.at<int>(y, x) + 1);
    const int cols = std::max(C, K + 1);
    std::vector<double> hist(static_cast<size_t>(C) * cols, 0);
    for (int y = 0; y < im.gt.rows; ++y)
      for (int x = 0; x < im.gt.cols; ++x) {
        const int g = im.gt.at<int>(y, x), p = im.pred.at<int>(y, x);
        if (g == ignore || g < 0 || g >= C || p < 0) continue;
        hist[static_cast<size_t>(g) * cols + p] += 1;
      }
    const auto a = linear_sum_assignment(hist, C, cols, true);
    for (size_t i = 0; i < a.rows.size(); ++i) {
      const int c = a.rows[i], k = a.cols[i];
      double row = 0, col = 0;
      for (int j = 0; j < cols; ++j) row += hist[static_cast<size_t>(c) * cols + j];
      for (int r = 0; r < C; ++r) col += hist[static_cast<size_t>(r) * cols + k];
      const double tp = hist[static_cast<size_t>(c) * cols + k];
      TP[c] += tp;
      FN[c] += row - tp;
      FP[c] += col - tp;
    }
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
                      {"matching", "per image, Hungarian (SciPy tie-breaking); unmatched predicted segments are not FP; "
                                   "absent GT classes are still matched"},
                      {"failed", failures}};
  return {m, failures};
}

}  // namespace m2n2
