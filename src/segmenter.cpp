#include "m2n2/segmenter.hpp"

#include <algorithm>
#include <cmath>

#include "m2n2/error.hpp"
#include "m2n2/flood_fill.hpp"
#include "m2n2/start_state.hpp"

namespace m2n2 {

Segmenter::Segmenter(const cv::Mat& rgb, std::shared_ptr<const MarkovOperator> op, const M2N2Params& params)
    : rgb_(rgb), op_(std::move(op)), params_(params) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw Error("segmenter: the image must be non-empty 8-bit RGB");
  if (!op_) throw Error("segmenter: no operator");
}

void Segmenter::check_point(cv::Point p) const {
  if (p.x < 0 || p.y < 0 || p.x >= rgb_.cols || p.y >= rgb_.rows)
    throw Error("click (" + std::to_string(p.x) + "," + std::to_string(p.y) + ") is outside the " +
                std::to_string(rgb_.cols) + "x" + std::to_string(rgb_.rows) + " image");
}

void Segmenter::prepare(const std::vector<cv::Point>& points) {
  std::vector<cv::Point> todo;
  for (const auto& p : points) {
    check_point(p);
    if (!cache_.count({p.x, p.y}) && std::find(todo.begin(), todo.end(), p) == todo.end()) todo.push_back(p);
  }
  if (todo.empty()) return;
  std::vector<std::vector<float>> starts;
  for (const auto& p : todo) starts.push_back(start_state(p.x, p.y, rgb_.rows, rgb_.cols, op_->h(), op_->w()));
  auto maps = op_->markov_maps(starts, params_.markov);
  for (size_t i = 0; i < todo.size(); ++i) {
    Entry e;
    e.lowres = cv::Mat(op_->h(), op_->w(), CV_32F, maps[i].data()).clone();
    cache_[{todo[i].x, todo[i].y}] = std::move(e);
  }
}

void Segmenter::finish(Entry& e, cv::Point p) {
  if (e.has_distance) return;
  if (!jbu_) jbu_ = std::make_unique<JointBilateralUpsampler>(rgb_, op_->h(), op_->w(), params_.jbu, params_.max_table_bytes);
  cv::Mat d = jbu_->apply(e.lowres);
  double mx;
  cv::minMaxLoc(d, nullptr, &mx);
  if (mx > 0) d /= static_cast<float>(mx);
  if (params_.flood_fill) {
    d = minimax_flood_fill(d, p);
    cv::minMaxLoc(d, nullptr, &mx);
    if (mx > 0) d /= static_cast<float>(mx);
  }
  e.distance = d;
  cv::minMaxLoc(d, nullptr, &mx);
  e.max_distance = static_cast<float>(mx);
  e.curve = threshold_curve(d, params_.scoring.quantization);
  e.has_distance = true;
}

Segmenter::Entry& Segmenter::entry(cv::Point p) {
  check_point(p);
  auto it = cache_.find({p.x, p.y});
  if (it == cache_.end()) {
    prepare({p});
    it = cache_.find({p.x, p.y});
  }
  return it->second;
}

const cv::Mat& Segmenter::lowres_markov_map(cv::Point p) { return entry(p).lowres; }

const cv::Mat& Segmenter::distance_map(cv::Point p) {
  Entry& e = entry(p);
  finish(e, p);
  return e.distance;
}

Segmenter::Result Segmenter::segment(const std::vector<Click>& clicks) {
  Result res;
  const int H = rgb_.rows, W = rgb_.cols;
  res.mask = cv::Mat::zeros(H, W, CV_8U);
  res.soft = cv::Mat(H, W, CV_32F, cv::Scalar(std::numeric_limits<float>::infinity()));
  if (clicks.empty()) return res;
  std::vector<cv::Point> pts;
  for (const auto& c : clicks) {
    if (!std::isfinite(c.x) || !std::isfinite(c.y)) throw Error("click coordinates must be finite numbers");
    pts.push_back(click_pixel(c));
  }
  prepare(pts);
  std::vector<Entry*> entries;
  for (const auto& p : pts) {
    Entry& e = entry(p);
    finish(e, p);
    entries.push_back(&e);
  }
  // Per click: choose its threshold against the clicks of its own label and the others.
  const size_t K = clicks.size();
  std::vector<float> scale(K);
  for (size_t i = 0; i < K; ++i) {
    const cv::Mat& d = entries[i]->distance;
    std::vector<float> same, opposite;
    for (size_t j = 0; j < K; ++j) {
      const float v = d.at<float>(pts[j].y, pts[j].x);
      (clicks[j].positive == clicks[i].positive ? same : opposite).push_back(v);
    }
    ThresholdChoice ch = choose_threshold(entries[i]->curve, same, opposite, entries[i]->max_distance, params_.scoring);
    const bool all_off = !params_.scoring.use_prior && !params_.scoring.use_edge && !params_.scoring.use_pos &&
                         !params_.scoring.use_neg;
    if (all_off) ch.threshold = 0.5f;
    res.choices.push_back(ch);
    scale[i] = std::max(ch.threshold, 1e-7f);
  }
  // Merge: the click with the smallest adjusted distance owns the pixel.
#pragma omp parallel for schedule(static)
  for (int y = 0; y < H; ++y) {
    uint8_t* m = res.mask.ptr<uint8_t>(y);
    float* s = res.soft.ptr<float>(y);
    for (int x = 0; x < W; ++x) {
      float best = std::numeric_limits<float>::infinity();
      size_t arg = 0;
      float best_pos = std::numeric_limits<float>::infinity();
      for (size_t i = 0; i < K; ++i) {
        const float v = entries[i]->distance.at<float>(y, x) / scale[i];
        if (v < best) {
          best = v;
          arg = i;
        }
        if (clicks[i].positive && v < best_pos) best_pos = v;
      }
      m[x] = (clicks[arg].positive && best <= 1.0f) ? 255 : 0;
      s[x] = best_pos;
    }
  }
  for (size_t i = 0; i < K; ++i) res.mask.at<uint8_t>(pts[i].y, pts[i].x) = clicks[i].positive ? 255 : 0;
  return res;
}

}  // namespace m2n2
