// The label protocols of DiffSeg's benchmarks (spec diffseg.md §9): COCO-Stuff-27 and
// Cityscapes-27 ground truth mapped to 27 coarse classes, the 512×512 centre crop.
#include <opencv2/imgproc.hpp>
#include "core/check.hpp"

#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/label_eval.hpp"

namespace m2n2 {

namespace {

// COCO-Stuff's fine labels as stored in stuffthingmaps_trainval2017 (0..181: the 91
// thing ids and the 91 stuff ids, each minus 1) to the 27 classes of its coarse
// hierarchy (0..11 things, 12..26 stuff), the table of IIC's fine_to_coarse_dict
// (fine_index_to_coarse_index) that DiffSeg, PiCIE and STEGO use. Index = fine label.
constexpr int kCocoFineToCoarse[182] = {
    9,  11, 11, 11, 11, 11, 11, 11, 11, 8,  8,  8,  8,  8,  8,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  6,
    6,  6,  6,  6,  6,  6,  6,  10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 5,  5,  5,  5,  5,  5,  5,  5,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  0,  0,  0,  0,  0,  0,  1,
    1,  1,  1,  1,  1,  4,  4,  4,  4,  4,  4,  4,  4,  17, 17, 22, 20, 20, 22, 15, 25, 16, 13, 12, 12, 17,
    17, 23, 15, 15, 17, 15, 21, 15, 25, 13, 13, 13, 13, 13, 22, 26, 14, 14, 15, 22, 21, 21, 24, 20, 22, 15,
    17, 16, 15, 22, 24, 21, 17, 25, 16, 21, 17, 22, 16, 21, 21, 25, 21, 26, 21, 24, 20, 17, 14, 21, 26, 15,
    23, 20, 21, 24, 15, 24, 22, 25, 15, 20, 17, 17, 22, 14, 18, 18, 18, 18, 18, 18, 18, 26, 26, 19, 19, 24};

}  // namespace

LabelProtocol parse_label_protocol(const std::string& s) {
  if (s == "none") return LabelProtocol::None;
  if (s == "cocostuff27") return LabelProtocol::CocoStuff27;
  if (s == "cityscapes27") return LabelProtocol::Cityscapes27;
  check::not_one_of("protocol", s, {"none", "cocostuff27", "cityscapes27"});
}

std::string to_string(LabelProtocol p) {
  switch (p) {
    case LabelProtocol::None: return "none";
    case LabelProtocol::CocoStuff27: return "cocostuff27";
    case LabelProtocol::Cityscapes27: return "cityscapes27";
  }
  return "?";
}

int coarse_label(LabelProtocol p, int fine) {
  switch (p) {
    case LabelProtocol::None: return fine;
    case LabelProtocol::CocoStuff27: return fine >= 0 && fine < 182 ? kCocoFineToCoarse[fine] : -1;
    case LabelProtocol::Cityscapes27: return fine >= 7 && fine <= 33 ? fine - 7 : -1;
  }
  return -1;
}

cv::Mat center_crop_nearest(const cv::Mat& labels, int size) {
  if (labels.empty() || size < 1) throw InvalidArgument("center crop: empty label map or size");
  const int c = std::min(labels.rows, labels.cols);
  const cv::Mat square = labels(cv::Rect((labels.cols - c) / 2, (labels.rows - c) / 2, c, c));
  if (c == size) return square.clone();
  cv::Mat out;  // TF's nearest with half-pixel centres: source floor((i + ½)·c/size)
  cv::resize(square, out, cv::Size(size, size), 0, 0, cv::INTER_NEAREST_EXACT);
  return out;
}

void apply_label_protocol(LabelProtocol p, cv::Mat& gt, cv::Mat& pred, const std::string& pred_name) {
  if (p == LabelProtocol::None) return;
  CV_Assert(gt.type() == CV_32S && pred.type() == CV_32S);
  const cv::Size crop(kProtocolSize, kProtocolSize);
  if (pred.size() == gt.size() && gt.size() != crop) {
    pred = center_crop_nearest(pred, kProtocolSize);
  } else if (pred.size() != crop) {
    throw Error(pred_name + ": " + std::to_string(pred.cols) + "x" + std::to_string(pred.rows) +
                ", expected the 512x512 centre crop (auto --crop center) or the ground truth's size");
  }
  gt = center_crop_nearest(gt, kProtocolSize);
  for (int y = 0; y < gt.rows; ++y) {
    int* g = gt.ptr<int>(y);
    for (int x = 0; x < gt.cols; ++x) g[x] = coarse_label(p, g[x]);  // -1: ignored
  }
}

}  // namespace m2n2
