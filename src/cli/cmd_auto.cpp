// m2n2 auto: whole-image segmentation with no clicks (DiffSeg, random-walk NCut);
// m2n2 eval-auto: per-image Hungarian matching against label maps.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/attention/default_source.hpp"
#include "m2n2/eval/benchmark.hpp"
#include "m2n2/whole_image/label_eval.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/whole_image/lightcluster.hpp"
#include "m2n2/io/visuals.hpp"
#include "m2n2/io/json_read.hpp"

namespace m2n2::cli {
namespace fs = std::filesystem;

namespace {

struct AutoOptions {
  CommonOptions common;
  std::string method = "diffseg", image, images, out, vis, stop = "constant";
  std::string kl_precision = "fp16", labels = "raw", crop = "none", graph = "transition";
  DiffSegParams diffseg;
  NcutParams ncut;
  LightClusterRun lightcluster;
  std::string lightcluster_model;
  bool overwrite = false;
  std::string shard;  // folder form: I/N or auto
  int shard_count = 0;
  bool resume = false;
  std::string settings;  // the subcommand's result-changing flags, compared by --resume
};

constexpr const char* kAutoRecords = "auto.jsonl";
constexpr const char* kAutoSettings = "auto-run.json";

// LightCluster labels a whole folder at once (its clusters span the dataset).
int run_lightcluster_folder(AutoOptions& o) {
  if (o.images.empty()) throw UsageError("--method lightcluster: give --images DIR (it clusters a whole folder)");
  check_params(o.lightcluster.params);
  auto engine = make_engine(o.common, M2N2Flags());
  std::vector<std::string> files;
  for (const auto& f : list_files(o.images))
    if (fs::path(f).extension() != ".json" && fs::path(f).extension() != ".txt") files.push_back(f);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (!o.overwrite)
    for (const auto& f : files)
      if (fs::exists(fs::path(o.out) / (fs::path(f).stem().string() + ".png"), ec))
        throw UsageError((fs::path(o.out) / (fs::path(f).stem().string() + ".png")).string() + ": exists (use --overwrite)");
  Progress bar(static_cast<int>(files.size()), !o.common.quiet, "lightcluster");
  auto tick = [&](const std::string& stage, int done, int total) { bar.update(done, stage, total); };
  LightClusterResult r;
  if (!o.lightcluster_model.empty()) {  // label new images with a model, no clustering
    nlohmann::json model;
    try {
      model = read_json(read_file(o.lightcluster_model), o.lightcluster_model);
    } catch (const std::exception& e) {
      throw UsageError(o.lightcluster_model + ": not a lightcluster.json (" + one_line_message(e) + ")");
    }
    r = apply_lightcluster(*engine, files, o.out, model, o.lightcluster_model, tick);
  } else {
    r = run_lightcluster(*engine, files, o.out, o.lightcluster, tick);
  }
  bar.finish();
  for (const auto& im : r.images) {
    nlohmann::json j = {{"image", im.image}, {"ok", im.error.empty()}, {"method", "lightcluster"}};
    if (im.error.empty()) {
      j["labels"] = im.labels;
      j["regions"] = im.regions;
      j["category"] = im.category;
    } else {
      j["error"] = im.error;
      spdlog::error("{}", im.error.rfind(im.image, 0) == 0 ? im.error : im.image + ": " + im.error);
    }
    std::cout << j.dump() << "\n";
  }
  if (o.lightcluster_model.empty())
    spdlog::info("lightcluster: {} images, {} failed, {} resumed from an earlier run; model in {}", r.images.size(),
                 r.failures, r.resumed, (fs::path(o.out) / "lightcluster.json").string());
  else
    spdlog::info("lightcluster: {} images labelled with {}, {} failed", r.images.size(), o.lightcluster_model, r.failures);
  return r.failures ? kSomeFailed : kOk;
}

int run_auto(AutoOptions& o) {
  if (o.method == "lightcluster") return run_lightcluster_folder(o);
  if (o.method != "diffseg" && o.method != "ncut")
    throw UsageError("--method: expected diffseg, ncut or lightcluster, got '" + o.method + "'");
  o.ncut.policy = parse_stop_policy(o.stop);
  o.ncut.graph = parse_ncut_graph(o.graph);
  o.diffseg.kl_precision = parse_kl_precision(o.kl_precision);
  if (o.labels != "raw" && o.labels != "compact") throw UsageError("--labels: expected raw or compact, got '" + o.labels + "'");
  o.diffseg.raw_labels = o.labels == "raw";
  if (o.crop != "none" && o.crop != "center") throw UsageError("--crop: expected none or center, got '" + o.crop + "'");
  check_params(o.diffseg);
  check_params(o.ncut);
  CommonOptions common = o.common;
  // Whole-image methods want attention that spans each region, not M2N2's local
  // walk: the default source runs with a global kernel unless settings are given.
  // DiffSeg takes its single finest map (grid 48): its 4-level pyramid merged flat
  // regions that this map separates (docs/whole-image.md gives the measurement).
  if (common.source == "default")
    common.source = "default:" + std::string(kWholeImageSettings) + (o.method == "diffseg" ? ",levels=1" : "");
  auto engine = make_engine(common, M2N2Flags());
  std::vector<std::pair<std::string, std::string>> jobs;  // image, output
  std::map<std::string, nlohmann::json> done;             // image -> record of an earlier run (--resume)
  std::string records;                                     // OUT/auto.jsonl (folder form)
  if (!o.image.empty()) {
    if (!o.shard.empty() || o.resume) throw UsageError("auto: --shard and --resume need the folder form (--images DIR)");
    jobs.emplace_back(o.image, o.out);
  } else {
    // Every N-th image of the sorted folder from I; finished ones recorded as they end.
    const auto [shard_i, shard_n] = resolve_shard(o.shard, o.shard_count);
    std::error_code ec;
    const fs::path images = fs::weakly_canonical(fs::absolute(o.images), ec);
    const nlohmann::json settings = {{"images", ec ? fs::absolute(o.images).lexically_normal().string() : images.string()},
                                     {"shard", std::to_string(shard_i) + "/" + std::to_string(shard_n)},
                                     {"source", engine->source_id()},
                                     {"flags", o.settings}};
    for (auto& r : open_run_records(o.out, kAutoRecords, kAutoSettings, settings, o.resume))
      if (r.value("ok", false) && r.contains("image") && r["image"].is_string()) {
        const std::string image = r["image"].get<std::string>();  // before r is moved from
        done[image] = std::move(r);
      }
    records = (fs::path(o.out) / kAutoRecords).string();
    const auto files = list_files(o.images);
    for (size_t i = 0; i < files.size(); ++i)
      if (static_cast<int>(i % shard_n) == shard_i)
        jobs.emplace_back(files[i], (fs::path(o.out) / (fs::path(files[i]).stem().string() + ".png")).string());
  }
  // An image is done when its record and its outputs are there.
  const auto finished = [&](const std::string& img) {
    auto it = done.find(img);
    if (it == done.end()) return false;
    std::error_code ec;
    for (const char* k : {"labels", "vis"})
      if (it->second.contains(k) && (!it->second[k].is_string() || !fs::is_regular_file(it->second[k].get<std::string>(), ec)))
        return false;
    return true;
  };
  int skipped = 0;
  int failures = 0, done_count = 0;
  Progress bar(static_cast<int>(jobs.size()), !o.common.quiet && jobs.size() > 1, o.method);
  for (const auto& [img, outp] : jobs) {
    if (o.resume && finished(img)) {
      ++skipped;
      bar.update(++done_count);
      continue;
    }
    nlohmann::json j = {{"image", img}};
    try {
      std::error_code ec;
      if (!o.overwrite && !o.resume && o.image.empty() && fs::exists(outp, ec)) throw Error(outp + ": exists (use --overwrite)");
      LoadedImage li = read_rgb(img);
      if (o.crop == "center") li.rgb = center_crop_resize(li.rgb, 512);
      auto session = engine->open(li.rgb, img);
      AutoResult r = o.method == "diffseg" ? session->diffseg(o.diffseg) : session->ncut(o.ncut);
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
        write_png_atomic(vis, label_overlay(li.rgb, r.labels));
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
    if (!records.empty()) append_line_durable(records, j.dump());
    std::cout << j.dump() << "\n" << std::flush;
    bar.update(++done_count);
  }
  bar.finish();
  if (skipped) spdlog::info("{} images already done in {}, skipped", skipped, o.out);
  return failures ? kSomeFailed : kOk;
}

int run_eval_auto(const std::string& pred_dir, const std::string& gt_dir, int num_classes, int ignore,
                  const std::string& matching, const std::string& protocol) {
  check_range("--classes", num_classes, 0, 65536);
  const LabelEvaluation r = evaluate_label_maps(pred_dir, gt_dir, num_classes, ignore, log_error,
                                                parse_label_matching(matching), parse_label_protocol(protocol));
  std::cout << r.metrics.dump() << "\n";
  spdlog::info("pixel accuracy {:.4f}, mIoU {:.4f} over {} images", r.metrics["pixel_accuracy"].get<double>(),
               r.metrics["mIoU"].get<double>(), r.metrics["images"].get<size_t>());
  return r.failures ? kSomeFailed : kOk;
}

}  // namespace

void register_auto(CLI::App& app, int& code) {
  auto o = std::make_shared<AutoOptions>();
  auto* sub = app.add_subcommand("auto", "Whole-image segmentation with no clicks: DiffSeg, random-walk NCut, or LightCluster (a folder)");
  sub->add_option("--method", o->method, "diffseg, ncut or lightcluster (needs a ViT archive with keys and cls features)")
      ->capture_default_str();
  sub->add_option("--image", o->image, "One image (then --out is a PNG)");
  sub->add_option("--images", o->images, "A folder of images (then --out is a folder)");
  sub->add_option("--out", o->out, "16-bit label PNG (0..K-1), or output folder")->required();
  sub->add_option("--vis", o->vis, "Colour visualisation PNG (folder with --images)");
  sub->add_flag("--overwrite", o->overwrite, "Replace existing outputs (folder form)");
  sub->add_option("--shard", o->shard,
                  "Label only images I, I+N, I+2N ... of the sorted folder (I/N, 0-based; folder form); auto: I and N from the "
                  "scheduler (SLURM array, or Kubernetes Indexed Job with --shard-count)");
  sub->add_option("--shard-count", o->shard_count, "N for --shard auto under a Kubernetes Indexed Job (its completions)");
  sub->add_flag("--resume", o->resume,
                "Skip images an earlier run with the same settings finished (records in OUT/auto.jsonl); label the others");
  const std::string g1 = "DiffSeg", g2 = "Random-walk NCut";
  sub->add_option("--anchors", o->diffseg.anchors, "Anchor grid M (M×M anchors)")->capture_default_str()->group(g1);
  sub->add_option("--kl-thresholds", o->diffseg.kl_thresholds, "KL threshold per merge iteration")->capture_default_str()->group(g1);
  sub->add_option("--kl-precision", o->kl_precision,
                  "Iteration 0's arithmetic: fp16 (the reference's float16, emulated exactly on the CPU) or fp32 "
                  "(logs clamped at 1e-12; faster)")
      ->capture_default_str()
      ->group(g1);
  sub->add_option("--labels", o->labels, "raw (proposal indices, gaps kept: the reference) or compact (0..K-1)")
      ->capture_default_str()
      ->group(g1);
  sub->add_option("--crop", o->crop,
                  "center: label the centred square resized to 512×512 (the reference's protocol; the output covers "
                  "the crop), none: the whole image")
      ->capture_default_str();
  sub->add_option("--power", o->ncut.power, "k of the power walk P^k")->capture_default_str()->group(g2);
  sub->add_option("--ncut-grid", o->ncut.grid, "Token grid to cut (nearest available)")->capture_default_str()->group(g2);
  sub->add_option("--graph", o->graph,
                  "Graph to cut: transition (the symmetrised walk on P^k) or similarity (cosine of the rows of P^k, "
                  "min-max scaled, ^alpha)")
      ->capture_default_str()
      ->group(g2);
  sub->add_option("--alpha", o->ncut.alpha, "Exponent of the similarity graph (DiffCut's 10)")->capture_default_str()->group(g2);
  sub->add_option("--stop", o->stop, "Stopping policy: constant, null, sweep-mad or parent")->capture_default_str()->group(g2);
  const std::string g3 = "LightCluster (--method lightcluster; spec choices, see README)";
  auto& lc = o->lightcluster;
  sub->add_option("--classes", lc.classes, "Clusters of the region embeddings (VOC 20, COCO 80)")->capture_default_str()->group(g3);
  sub->add_option("--categories", lc.params.categories, "Categories of images (clusters of their CLS)")->capture_default_str()->group(g3);
  sub->add_option("--vote", lc.params.vote, "Foreground when this many of the 3 levels agree (1 union, 3 intersection)")
      ->capture_default_str()
      ->group(g3);
  sub->add_option("--fg-rule", lc.params.fg_rule, "border (fewer border patches) or cls-attn (more CLS attention)")
      ->capture_default_str()
      ->group(g3);
  sub->add_option("--refine", lc.refine, "jbu (M2N2's joint bilateral upsampler) or none (bilinear)")->capture_default_str()->group(g3);
  sub->add_option("--region-embed", lc.region_embed, "crop (CLS of a pass on the region's box) or pool (mean patch tokens)")
      ->capture_default_str()
      ->group(g3);
  sub->add_option("--high-norm", lc.params.high_norm,
                  "Leave high-norm key tokens out of the fits, labelled from their neighbours: auto (DINOv2 without "
                  "registers), on or off")
      ->capture_default_str()
      ->group(g3);
  sub->add_option("--sample", lc.params.sample, "Patches in the dataset-level fit at most")->capture_default_str()->group(g3);
  sub->add_option("--seed", lc.params.seed, "k-means seed")->capture_default_str()->group(g3);
  sub->add_option("--model", o->lightcluster_model,
                  "Label new images with this lightcluster.json (its centroids and settings; no clustering)")
      ->group(g3);
  sub->add_option("--min-component", lc.min_component, "Components below this share of the image become background")
      ->capture_default_str()
      ->group(g3);
  sub->add_option("--tau", o->ncut.tau, "NCut threshold of the constant policy")->capture_default_str()->group(g2);
  sub->add_option("--min-size", o->ncut.min_size, "Smallest segment in tokens")->capture_default_str()->group(g2);
  sub->add_option("--max-depth", o->ncut.max_depth, "Deepest recursion")->capture_default_str()->group(g2);
  add_common(sub, o->common);
  sub->callback([o, sub, &code]() {
    code = guarded([&]() {
      setup(o->common);
      if (o->image.empty() == o->images.empty()) throw UsageError("auto: give exactly one of --image or --images");
      if (o->resume && o->overwrite) throw UsageError("auto: use either --resume or --overwrite, not both");
      if (o->method == "lightcluster" && (o->resume || !o->shard.empty()))
        throw UsageError("auto: --method lightcluster clusters the whole folder and resumes by itself; --shard and --resume are for diffseg and ncut");
      // What --resume compares: every flag's value but those that change no label.
      std::istringstream all(sub->config_to_str(true, false));
      for (std::string line; std::getline(all, line);) {
        static const char* kNeutral[] = {"overwrite", "resume", "shard", "shard-count", "quiet", "log-level", "threads",
                                         "cache-dir", "cache-max-size", "no-cache", "max-memory", "out", "vis"};
        const std::string key = line.substr(0, line.find('='));
        bool neutral = false;
        for (const char* k : kNeutral) neutral = neutral || key == k;
        if (!neutral) o->settings += line + "\n";
      }
      return run_auto(*o);
    });
  });

  struct EvOpt {
    CommonOptions common;
    std::string pred, gt, matching = "image", protocol = "none";
    int classes = 0, ignore = 255;
  };
  auto eo = std::make_shared<EvOpt>();
  auto* ev = app.add_subcommand("eval-auto", "Pixel accuracy and mIoU of label maps (Hungarian matching per image or over the dataset)");
  ev->add_option("--pred", eo->pred, "Folder of predicted label PNGs")->required();
  ev->add_option("--gt", eo->gt, "Folder of GT label PNGs (same stems)")->required();
  ev->add_option("--classes", eo->classes, "Number of GT classes (0 = largest label + 1)");
  ev->add_option("--ignore", eo->ignore, "GT label to ignore")->capture_default_str();
  ev->add_option("--matching", eo->matching,
                 "image: Hungarian per image (DiffSeg); dataset: one Hungarian over the dataset (unsupervised semantic "
                 "segmentation); majority: each label to its most overlapped class")
      ->capture_default_str();
  ev->add_option("--protocol", eo->protocol,
                 "cocostuff27 or cityscapes27: GT fine labels mapped to the 27 coarse classes (others ignored), GT "
                 "centre-cropped to 512×512 (nearest); predictions 512×512 (auto --crop center) or at the GT's size "
                 "(cropped alike). none: labels as they are")
      ->capture_default_str();
  add_common(ev, eo->common, false);
  ev->callback([eo, &code]() {
    code = guarded([&]() {
      setup(eo->common);
      return run_eval_auto(eo->pred, eo->gt, eo->classes, eo->ignore, eo->matching, eo->protocol);
    });
  });
}

}  // namespace m2n2::cli
