#include "m2n2/interactive/segmenter.hpp"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/interactive/flood_fill.hpp"
#include "m2n2/interactive/start_state.hpp"
#include "core/check.hpp"

namespace m2n2 {

cv::Mat fit_max_side(const cv::Mat& rgb, int max_side) {
  const int side = std::max(rgb.rows, rgb.cols);
  if (max_side <= 0 || side <= max_side) return rgb;
  const double s = static_cast<double>(max_side) / side;
  const cv::Size size(std::max(1, static_cast<int>(std::lround(rgb.cols * s))),
                      std::max(1, static_cast<int>(std::lround(rgb.rows * s))));
  cv::Mat out;
  cv::resize(rgb, out, size, 0, 0, cv::INTER_AREA);
  return out;
}

void check_params(const M2N2Params& p) {
  if (p.max_side != 0) check::in_range("max_side", p.max_side, 16, 1 << 16);
  check::positive("temperature", p.op.temperature);
  check::in_range("ipf_iterations", p.op.ipf_iterations, 0, 100000);
  check::in_range("max_iterations", p.markov.max_iterations, 1, 100000);
  check::in_interval("threshold", p.markov.threshold, 0, true, 1, true);
  check::positive("spatial_sigma", p.jbu.spatial_sigma);
  check::positive("range_sigma", p.jbu.range_sigma);
  check::in_interval("max_area", p.scoring.max_area, 0, true, 1, false);
}

Segmenter::Segmenter(const cv::Mat& rgb, std::shared_ptr<const MarkovOperator> op, const M2N2Params& params,
                     cv::Size full)
    : rgb_(rgb), full_(full.empty() ? rgb.size() : full), op_(std::move(op)), params_(params) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw Error("segmenter: the image must be non-empty 8-bit RGB");
  if (!op_) throw Error("segmenter: no operator");
  const double table = JointBilateralUpsampler::required_table_bytes(rgb.rows, rgb.cols, op_->h(), op_->w(), params.jbu);
  if (table > params.max_table_bytes) {
    // Largest side that fits: the table grows with the pixel count (the window, in
    // cells, stays the same), so scale the side by the square root.
    const int side = std::max(rgb.rows, rgb.cols);
    const int fits = static_cast<int>(side * std::sqrt(params.max_table_bytes / table) * 0.98);
    throw Error("a " + std::to_string(rgb.cols) + "x" + std::to_string(rgb.rows) + " image at grid " +
                std::to_string(op_->h()) + "x" + std::to_string(op_->w()) + " needs an upsampling table of " +
                std::to_string(static_cast<long long>(table / 1e6)) + " MB (limit " +
                std::to_string(static_cast<long long>(params.max_table_bytes / 1e6)) + " MB); use --max-side " +
                std::to_string(std::max(64, fits / 64 * 64)) + " or smaller");
  }
}

void Segmenter::prepare_table() {
  if (jbu_ && (jbu_->tabulated() || table_tried_)) return;
  if (expected_points_ >= 0 && expected_points_ <= 1 && upsampled_ == 0) {
    // One map known to come: the direct filter (≈ 0.23 s at 480p, grid 64) costs less
    // than a table (≈ 0.38 s to build, ~100 MiB of fresh memory).
    if (!jbu_) jbu_ = std::make_unique<JointBilateralUpsampler>(rgb_, op_->h(), op_->w(), params_.jbu, 0.0);
    return;
  }
  jbu_ = std::make_unique<JointBilateralUpsampler>(rgb_, op_->h(), op_->w(), params_.jbu, params_.max_table_bytes);
  table_tried_ = true;  // built once, whatever its size allowed
}

double Segmenter::memory_bytes() const {
  auto mat_bytes = [](const cv::Mat& m) { return static_cast<double>(m.total() * m.elemSize()); };
  double bytes = mat_bytes(rgb_) + static_cast<double>(op_->bytes_per_step()) + 3.0 * 4.0 * op_->tokens();
  if (jbu_) bytes += jbu_->table_bytes();
  for (const auto& kv : cache_) bytes += mat_bytes(kv.second.lowres) + mat_bytes(kv.second.distance);
  return bytes;
}

void Segmenter::check_point(cv::Point p) const {
  if (p.x < 0 || p.y < 0 || p.x >= full_.width || p.y >= full_.height)
    throw Error("click (" + std::to_string(p.x) + "," + std::to_string(p.y) + ") is outside the " +
                std::to_string(full_.width) + "x" + std::to_string(full_.height) + " image");
}

cv::Point Segmenter::to_work(cv::Point p) const {
  if (!scaled()) return p;
  // Pixel centres map to pixel centres.
  const double sx = static_cast<double>(rgb_.cols) / full_.width, sy = static_cast<double>(rgb_.rows) / full_.height;
  const int x = static_cast<int>(std::floor((p.x + 0.5) * sx)), y = static_cast<int>(std::floor((p.y + 0.5) * sy));
  return {std::min(std::max(x, 0), rgb_.cols - 1), std::min(std::max(y, 0), rgb_.rows - 1)};
}

void Segmenter::prepare(const std::vector<cv::Point>& points_full) {
  std::vector<cv::Point> points;
  for (const auto& p : points_full) {
    check_point(p);
    points.push_back(to_work(p));
  }
  std::vector<cv::Point> todo;
  for (const auto& p : points) {
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
  prepare_table();
  cv::Mat d = jbu_->tabulated() ? jbu_->apply(e.lowres) : jbu_->apply_untabulated(e.lowres);
  ++upsampled_;
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

// p: a pixel of the working image (already checked and mapped).
Segmenter::Entry& Segmenter::entry(cv::Point p) {
  auto it = cache_.find({p.x, p.y});
  if (it == cache_.end()) {
    std::vector<std::vector<float>> starts{start_state(p.x, p.y, rgb_.rows, rgb_.cols, op_->h(), op_->w())};
    auto maps = op_->markov_maps(starts, params_.markov);
    Entry e;
    e.lowres = cv::Mat(op_->h(), op_->w(), CV_32F, maps[0].data()).clone();
    it = cache_.emplace(std::make_pair(p.x, p.y), std::move(e)).first;
  }
  return it->second;
}

const cv::Mat& Segmenter::lowres_markov_map(cv::Point p) {
  check_point(p);
  return entry(to_work(p)).lowres;
}

cv::Mat Segmenter::distance_map(cv::Point p) {
  check_point(p);
  const cv::Point q = to_work(p);
  Entry& e = entry(q);
  finish(e, q);
  if (!scaled()) return e.distance;
  cv::Mat out;
  cv::resize(e.distance, out, full_, 0, 0, cv::INTER_LINEAR);
  return out;
}

Segmenter::Result Segmenter::segment(const std::vector<Click>& clicks) {
  Result res;
  const int H = rgb_.rows, W = rgb_.cols;
  res.mask = cv::Mat::zeros(H, W, CV_8U);
  res.soft = cv::Mat(H, W, CV_32F, cv::Scalar(std::numeric_limits<float>::infinity()));
  if (clicks.empty()) {
    if (scaled()) {
      res.mask = cv::Mat::zeros(full_, CV_8U);
      res.soft = cv::Mat(full_, CV_32F, cv::Scalar(std::numeric_limits<float>::infinity()));
    }
    return res;
  }
  std::vector<cv::Point> full_pts, pts;
  for (const auto& c : clicks) {
    if (!std::isfinite(c.x) || !std::isfinite(c.y)) throw Error("click coordinates must be finite numbers");
    full_pts.push_back(click_pixel(c));
  }
  prepare(full_pts);
  for (const auto& p : full_pts) pts.push_back(to_work(p));
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
#pragma omp parallel for num_threads(num_threads()) schedule(static)
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
  if (scaled()) {
    cv::Mat mask, soft;
    cv::resize(res.mask, mask, full_, 0, 0, cv::INTER_NEAREST);
    cv::resize(res.soft, soft, full_, 0, 0, cv::INTER_LINEAR);
    res.mask = mask;
    res.soft = soft;
  }
  for (size_t i = 0; i < K; ++i) res.mask.at<uint8_t>(full_pts[i].y, full_pts[i].x) = clicks[i].positive ? 255 : 0;
  return res;
}

}  // namespace m2n2
