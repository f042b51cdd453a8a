// m2n2 auto: whole-image segmentation with no clicks (DiffSeg, random-walk NCut);
// m2n2 eval-auto: per-image Hungarian matching against label maps.
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/attention/default_source.hpp"
#include "m2n2/whole_image/diffseg.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/whole_image/hungarian.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/whole_image/walk_ncut.hpp"

namespace m2n2::cli {
namespace fs = std::filesystem;

namespace {

cv::Mat label_vis(const cv::Mat& rgb, const cv::Mat& labels) {
  cv::Mat out = rgb.clone();
  for (int y = 0; y < out.rows; ++y)
    for (int x = 0; x < out.cols; ++x) {
      const uint32_t l = labels.at<uint16_t>(y, x);
      uint32_t h = (l + 1) * 2654435761u;
      const cv::Vec3b col(static_cast<uint8_t>(64 + (h & 0xbf)), static_cast<uint8_t>(64 + ((h >> 8) & 0xbf)),
                          static_cast<uint8_t>(64 + ((h >> 16) & 0xbf)));
      auto& p = out.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(0.45 * p[c] + 0.55 * col[c]);
    }
  // label borders
  for (int y = 0; y + 1 < out.rows; ++y)
    for (int x = 0; x + 1 < out.cols; ++x)
      if (labels.at<uint16_t>(y, x) != labels.at<uint16_t>(y, x + 1) || labels.at<uint16_t>(y, x) != labels.at<uint16_t>(y + 1, x))
        out.at<cv::Vec3b>(y, x) = cv::Vec3b(255, 255, 255);
  return out;
}

struct AutoOptions {
  CommonOptions common;
  std::string method = "diffseg", image, images, out, vis;
  int anchors = 16;
  std::vector<double> kl = {1.1, 1.1, 1.1};
  int power = 4, ncut_grid = 32, min_size = 4, max_depth = 8;
  std::string stop = "constant";
  double tau = 0.5;
  bool overwrite = false;
};

AutoResult run_method(const AutoOptions& o, Pipeline& pipe, const cv::Mat& rgb) {
  Attention att = pipe.attention(rgb);
  if (o.method == "diffseg") {
    DiffSegParams p;
    p.anchors = o.anchors;
    p.kl_thresholds = o.kl;
    return diffseg(att, rgb.rows, rgb.cols, p);
  }
  NcutParams p;
  p.power = o.power;
  p.grid = o.ncut_grid;
  p.policy = parse_stop_policy(o.stop);
  p.tau = o.tau;
  p.min_size = o.min_size;
  p.max_depth = o.max_depth;
  return walk_ncut(att, rgb.rows, rgb.cols, p);
}

int run_auto(const AutoOptions& o) {
  if (o.method != "diffseg" && o.method != "ncut") throw UsageError("--method: expected diffseg or ncut, got '" + o.method + "'");
  try {
    parse_stop_policy(o.stop);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (o.anchors < 1 || o.anchors > 64) throw UsageError("--anchors must be in 1..64");
  if (o.kl.empty()) throw UsageError("--kl-thresholds needs at least one value");
  if (o.power < 1 || o.power > 1024) throw UsageError("--power must be in 1..1024");
  check_range("--ncut-grid", o.ncut_grid, 1, 256);
  check_range("--min-size", o.min_size, 1, 1 << 20);
  check_range("--max-depth", o.max_depth, 0, 64);
  if (!std::isfinite(o.tau) || o.tau < 0) throw UsageError("--tau must be a finite number >= 0");
  for (double k : o.kl)
    if (!std::isfinite(k) || k < 0) throw UsageError("--kl-thresholds must be finite numbers >= 0");
  M2N2Flags f;
  CommonOptions common = o.common;
  // Whole-image methods want attention that spans each region, not M2N2's local
  // walk: the default source runs with a global kernel unless settings are given.
  if (common.source == "default") common.source = "default:" + std::string(kWholeImageSettings);
  Pipeline pipe(common, f);
  std::vector<std::pair<std::string, std::string>> jobs;  // image, output
  if (!o.image.empty()) {
    jobs.emplace_back(o.image, o.out);
  } else {
    if (!fs::is_directory(o.images)) throw UsageError(o.images + ": not a folder");
    std::error_code ec;
    fs::create_directories(o.out, ec);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(o.images))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& p : files) jobs.emplace_back(p.string(), (fs::path(o.out) / (p.stem().string() + ".png")).string());
  }
  int failures = 0, done = 0;
  Progress bar(static_cast<int>(jobs.size()), !o.common.quiet && jobs.size() > 1, o.method);
  for (const auto& [img, outp] : jobs) {
    nlohmann::json j = {{"image", img}};
    try {
      std::error_code ec;
      if (!o.overwrite && jobs.size() > 1 && fs::exists(outp, ec)) throw Error(outp + ": exists (use --overwrite)");
      LoadedImage li = read_rgb(img);
      inject_fault(img);
      AutoResult r = run_method(o, pipe, li.rgb);
      write_png_atomic(outp, r.labels);
      j["ok"] = true;
      j["labels"] = outp;
      j["segments"] = r.segments;
      j["method"] = o.method;
      j["meta"] = r.meta;
      std::string vis = o.vis;
      if (!vis.empty() && jobs.size() > 1) vis = (fs::path(o.vis) / fs::path(outp).filename()).string();
      if (!vis.empty()) {
        if (jobs.size() > 1) fs::create_directories(o.vis, ec);
        write_png_atomic(vis, label_vis(li.rgb, r.labels));
        j["vis"] = vis;
      }
    } catch (const std::exception& e) {  // any failure of one image ends that image only
      std::string msg = one_line_message(e);
      if (msg.rfind(img, 0) != 0) msg = img + ": " + msg;
      spdlog::error("{}", msg);
      j["ok"] = false;
      j["error"] = msg;
      ++failures;
    }
    std::cout << j.dump() << "\n" << std::flush;
    bar.update(++done);
  }
  bar.finish();
  return failures ? kSomeFailed : kOk;
}

// Per-image Hungarian evaluation as in DiffSeg's benchmark code.
int run_eval_auto(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore) {
  check_range("--classes", num_classes, 0, 65536);
  if (!fs::is_directory(pred_dir)) throw UsageError(pred_dir + ": not a folder");
  if (!fs::is_directory(gt_dir)) throw UsageError(gt_dir + ": not a folder");
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
      spdlog::error("{}", one_line_message(e));
      ++failures;
    }
  }
  if (imgs.empty()) throw UsageError(gt_dir + ": no evaluable images");
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
  std::cout << m.dump() << "\n";
  spdlog::info("pixel accuracy {:.4f}, mIoU {:.4f} over {} images", m["pixel_accuracy"].get<double>(), m["mIoU"].get<double>(),
               imgs.size());
  return failures ? kSomeFailed : kOk;
}

}  // namespace

void register_auto(CLI::App& app, int& code) {
  auto o = std::make_shared<AutoOptions>();
  auto* sub = app.add_subcommand("auto", "Whole-image segmentation with no clicks: DiffSeg or random-walk NCut");
  sub->add_option("--method", o->method, "diffseg or ncut")->capture_default_str();
  sub->add_option("--image", o->image, "One image (then --out is a PNG)");
  sub->add_option("--images", o->images, "A folder of images (then --out is a folder)");
  sub->add_option("--out", o->out, "16-bit label PNG (0..K-1), or output folder")->required();
  sub->add_option("--vis", o->vis, "Colour visualisation PNG (folder with --images)");
  sub->add_flag("--overwrite", o->overwrite, "Replace existing outputs (folder form)");
  const std::string g1 = "DiffSeg", g2 = "Random-walk NCut";
  sub->add_option("--anchors", o->anchors, "Anchor grid M (M×M anchors)")->capture_default_str()->group(g1);
  sub->add_option("--kl-thresholds", o->kl, "KL threshold per merge iteration")->capture_default_str()->group(g1);
  sub->add_option("--power", o->power, "k of the power walk P^k")->capture_default_str()->group(g2);
  sub->add_option("--ncut-grid", o->ncut_grid, "Token grid to cut (nearest available)")->capture_default_str()->group(g2);
  sub->add_option("--stop", o->stop, "Stopping policy: constant, null, sweep-mad or parent")->capture_default_str()->group(g2);
  sub->add_option("--tau", o->tau, "NCut threshold of the constant policy")->capture_default_str()->group(g2);
  sub->add_option("--min-size", o->min_size, "Smallest segment in tokens")->capture_default_str()->group(g2);
  sub->add_option("--max-depth", o->max_depth, "Deepest recursion")->capture_default_str()->group(g2);
  add_common(sub, o->common);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      if (o->image.empty() == o->images.empty()) throw UsageError("auto: give exactly one of --image or --images");
      return run_auto(*o);
    });
  });

  struct EvOpt {
    CommonOptions common;
    std::string pred, gt;
    int classes = 0, ignore = 255;
  };
  auto eo = std::make_shared<EvOpt>();
  auto* ev = app.add_subcommand("eval-auto", "Pixel accuracy and mIoU of label maps with per-image Hungarian matching");
  ev->add_option("--pred", eo->pred, "Folder of predicted label PNGs")->required();
  ev->add_option("--gt", eo->gt, "Folder of GT label PNGs (same stems)")->required();
  ev->add_option("--classes", eo->classes, "Number of GT classes (0 = largest label + 1)");
  ev->add_option("--ignore", eo->ignore, "GT label to ignore")->capture_default_str();
  add_common(ev, eo->common, false);
  ev->callback([eo, &code]() {
    code = guarded([&]() {
      setup(eo->common);
      return run_eval_auto(eo->pred, eo->gt, eo->classes, eo->ignore);
    });
  });
}

}  // namespace m2n2::cli
