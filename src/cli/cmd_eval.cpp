// m2n2 eval: NoC on a benchmark dataset with a click simulator; eval-merge and plot.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/eval/datasets.hpp"
#include "m2n2/eval/click_simulator.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/eval/metrics.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/eval/plot.hpp"

namespace m2n2::cli {
namespace fs = std::filesystem;

namespace {

constexpr const char* kRecords = "instances.jsonl";
constexpr const char* kRunSettings = "run.json";  // what the records were made with

// Everything that changes a run's results, as recorded in run.json and metrics.json
// and compared by --resume and eval-merge.
nlohmann::json run_settings(const Pipeline& pipe, const CommonOptions& common, const std::string& protocol,
                            const std::string& dataset, const std::string& images, const std::string& mask_format,
                            int max_clicks) {
  const auto& P = pipe.params();
  nlohmann::json j;
  j["protocol"] = protocol;
  j["dataset"] = fs::weakly_canonical(fs::absolute(dataset)).string();
  j["images"] = images.empty() ? std::string() : fs::weakly_canonical(fs::absolute(images)).string();
  j["mask_format"] = mask_format;
  j["max_clicks"] = max_clicks;
  j["source"] = pipe.source_id();
  j["device"] = common.device;
  j["settings"] = {{"temperature", P.op.temperature},
                   {"ipf_iterations", P.op.ipf_iterations},
                   {"precision", to_string(P.op.precision)},
                   {"markov_threshold", P.markov.threshold},
                   {"max_iterations", P.markov.max_iterations},
                   {"interpolation", P.markov.linear_interpolation},
                   {"jbu_spatial_sigma", P.jbu.spatial_sigma},
                   {"jbu_range_sigma", P.jbu.range_sigma},
                   {"flood_fill", P.flood_fill},
                   {"max_area", P.scoring.max_area},
                   {"score_terms", {P.scoring.use_prior, P.scoring.use_edge, P.scoring.use_pos, P.scoring.use_neg}},
                   {"max_side", P.max_side}};
  return j;
}

// The first setting (dotted name and both values) in which two runs differ, or "".
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  static const char* keys[] = {"protocol", "dataset", "images", "mask_format", "max_clicks", "source", "device"};
  for (const char* k : keys) {
    const auto x = a.value(k, nlohmann::json()), y = b.value(k, nlohmann::json());
    if (x != y) return std::string(k) + " " + x.dump() + " vs " + y.dump();
  }
  const auto sa = a.value("settings", nlohmann::json::object()), sb = b.value("settings", nlohmann::json::object());
  for (const auto* s : {&sa, &sb})
    for (auto it = s->begin(); it != s->end(); ++it) {
      const auto x = sa.value(it.key(), nlohmann::json()), y = sb.value(it.key(), nlohmann::json());
      if (x != y) return it.key() + " " + x.dump() + " vs " + y.dump();
    }
  return "";
}

// Appends one line and makes it durable before returning (a SIGKILL after this
// never loses the instance; one during the write leaves a torn last line that the
// reader drops).
void append_record(const fs::path& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) throw Error(path.string() + ": cannot open for appending");
  const std::string s = line + "\n";
  const ssize_t n = ::write(fd, s.data(), s.size());
  ::fsync(fd);
  ::close(fd);
  if (n != static_cast<ssize_t>(s.size())) throw Error(path.string() + ": write failed");
}

struct Record {
  InstanceResult r;
  nlohmann::json clicks;
};

std::map<std::string, Record> read_records(const fs::path& path) {
  std::map<std::string, Record> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      Record rec;
      rec.r.id = j.at("id").get<std::string>();
      rec.r.ious = j.at("ious").get<std::vector<double>>();
      rec.r.seconds_attention = j.value("seconds_attention", 0.0);
      rec.r.seconds_clicks = j.value("seconds_clicks", 0.0);
      rec.clicks = j.value("clicks", nlohmann::json::array());
      out[rec.r.id] = rec;
    } catch (...) {
      // torn last line of an interrupted run
    }
  }
  return out;
}

std::string fmt(double v, int prec = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// Writes metrics.json, instances.csv and miou_curve.png from the records.
nlohmann::json write_outputs(const fs::path& out, const std::vector<InstanceResult>& results, int max_clicks,
                             const nlohmann::json& info) {
  Summary s = summarize(results, max_clicks);
  double att = 0, clk = 0;
  for (const auto& r : results) {
    att += r.seconds_attention;
    clk += r.seconds_clicks;
  }
  nlohmann::json m = info;
  m["instances"] = s.instances;
  m["max_clicks"] = max_clicks;
  m["NoC85"] = s.noc85;
  m["NoC90"] = s.noc90;
  m["NoC95"] = s.noc95;
  m["NoF85"] = s.nof85;
  m["NoF90"] = s.nof90;
  m["NoF95"] = s.nof95;
  m["mIoU_per_click"] = s.miou_per_click;
  m["seconds_per_image_attention"] = results.empty() ? 0.0 : att / results.size();
  m["seconds_per_click"] = results.empty() ? 0.0 : clk / (static_cast<double>(results.size()) * max_clicks);
  write_file_atomic((out / "metrics.json").string(), m.dump(2) + "\n");
  std::ostringstream csv;
  csv << "id";
  for (int k = 1; k <= max_clicks; ++k) csv << ",iou_" << k;
  csv << ",NoC85,NoC90,NoC95\n";
  for (const auto& r : results) {
    csv << r.id;
    for (int k = 0; k < max_clicks; ++k) csv << "," << (k < static_cast<int>(r.ious.size()) ? fmt(r.ious[k], 6) : "");
    csv << "," << number_of_clicks(r.ious, 0.85, max_clicks) << "," << number_of_clicks(r.ious, 0.90, max_clicks) << ","
        << number_of_clicks(r.ious, 0.95, max_clicks) << "\n";
  }
  write_file_atomic((out / "instances.csv").string(), csv.str());
  const std::string label = info.value("source_label", std::string("m2n2")) + " (NoC90 " + fmt(s.noc90) + ")";
  write_png_atomic((out / "miou_curve.png").string(),
                   plot_curves({{label, s.miou_per_click}}, "mIoU per click, protocol " + info.value("protocol", std::string("?"))));
  return m;
}

void print_summary(const nlohmann::json& m) {
  std::fprintf(stderr, "\n  %-10s %9s %7s %7s %7s %7s\n", "protocol", "instances", "NoC85", "NoC90", "NoC95", "NoF90");
  std::fprintf(stderr, "  %-10s %9d %7.2f %7.2f %7.2f %7d\n", m.value("protocol", std::string("?")).c_str(),
               m["instances"].get<int>(), m["NoC85"].get<double>(), m["NoC90"].get<double>(), m["NoC95"].get<double>(),
               m["NoF90"].get<int>());
  const auto v = m["mIoU_per_click"].get<std::vector<double>>();
  std::string line = "  mIoU@k:";
  for (size_t k = 0; k < v.size(); ++k)
    if (k < 5 || k + 1 == v.size() || (k + 1) % 5 == 0) line += " " + std::to_string(k + 1) + ":" + fmt(v[k], 3);
  std::fprintf(stderr, "%s\n", line.c_str());
}

struct EvalOptions {
  CommonOptions common;
  M2N2Flags m2n2;
  std::string dataset, images, protocol = "m2n2", out, shard, mask_format = "grabcut";
  int max_clicks = 20;
  bool resume = false, overwrite = false;
  int limit = 0;
};

int run_eval(const EvalOptions& o) {
  Protocol protocol;
  MaskConvention conv;
  try {
    protocol = parse_protocol(o.protocol);
    conv = parse_convention(o.mask_format);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (o.max_clicks < 1 || o.max_clicks > 1000) throw UsageError("--max-clicks must be in 1..1000");
  int shard_i = 0, shard_n = 1;
  if (!o.shard.empty()) std::tie(shard_i, shard_n) = parse_shard(o.shard);
  check_range("--limit", o.limit, 0, 1 << 30);
  std::vector<Instance> all;
  try {
    all = read_dataset(o.dataset, o.images, conv);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  // Shards take whole images (every N-th image from I), so that no two shards compute
  // the same attention; within a shard an image's instances are consecutive.
  std::vector<Instance> mine;
  const auto groups = group_by_image(all);
  for (size_t g = 0; g < groups.size(); ++g)
    if (static_cast<int>(g % shard_n) == shard_i)
      for (const auto& in : groups[g]) mine.push_back(in);
  if (o.limit > 0 && static_cast<int>(mine.size()) > o.limit) mine.resize(o.limit);

  const fs::path out(o.out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (!fs::is_directory(out)) throw UsageError(o.out + ": cannot create output folder");
  const fs::path rec_path = out / kRecords;
  if (fs::exists(rec_path) && !o.resume) {
    if (!o.overwrite) throw UsageError(rec_path.string() + ": exists (use --resume to continue or --overwrite to start over)");
    fs::remove(rec_path, ec);
  }
  // Leftovers of a killed run: temporary files, and a torn last record (cut back to
  // the last complete line so that new records start on a line of their own).
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos) fs::remove(e.path(), ec);
  }
  if (o.resume && fs::exists(rec_path)) {
    const std::string text = read_file(rec_path.string());
    if (!text.empty() && text.back() != '\n') fs::resize_file(rec_path, text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
  }
  auto done = o.resume ? read_records(rec_path) : std::map<std::string, Record>{};
  if (o.resume) spdlog::info("resuming: {} of {} instances already done", done.size(), mine.size());

  Pipeline pipe(o.common, o.m2n2);
  nlohmann::json info = run_settings(pipe, o.common, to_string(protocol), o.dataset, o.images, o.mask_format, o.max_clicks);
  info["source_label"] = o.common.source;
  info["shard"] = std::to_string(shard_i) + "/" + std::to_string(shard_n);
  // The settings of the records in --out: a resumed run must use the same ones.
  const fs::path run_path = out / kRunSettings;
  if (o.resume && fs::exists(run_path)) {
    nlohmann::json before;
    try {
      before = nlohmann::json::parse(read_file(run_path.string()));
    } catch (const std::exception&) {
      throw UsageError(run_path.string() + ": malformed JSON");
    }
    const std::string diff = first_difference(before, info);
    if (!diff.empty())
      throw UsageError(o.out + ": its records were made with other settings (" + diff +
                       "); use the same flags, or --overwrite to start over");
  } else {
    if (!done.empty())
      throw UsageError(o.out + ": records without " + std::string(kRunSettings) +
                       " (made by an older m2n2); their settings cannot be checked, use --overwrite");
    write_file_atomic(run_path.string(), info.dump(2) + "\n");
  }

  Progress bar(static_cast<int>(mine.size()), !o.common.quiet, "eval");
  int failures = 0, count = 0;
  double noc90_sum = 0;
  int noc90_n = 0;
  for (const auto& [id, rec] : done) {
    noc90_sum += number_of_clicks(rec.r.ious, 0.90, o.max_clicks);
    ++noc90_n;
  }
  // One image at a time: its operator and per-point maps are shared by its instances.
  std::string cur_image;
  std::unique_ptr<Segmenter> seg;
  cv::Mat rgb;
  double att_seconds = 0;
  for (const auto& inst : mine) {
    ++count;
    if (done.count(inst.id)) {
      bar.update(count);
      continue;
    }
    try {
      GroundTruth gt = load_ground_truth(inst);
      inject_fault(inst.id);
      double this_att = 0;
      if (inst.image_path != cur_image) {
        seg.reset();
        cur_image = inst.image_path;
        rgb = read_rgb(inst.image_path).rgb;
        seg = pipe.session(rgb, &att_seconds, inst.image_path);
        this_att = att_seconds;
      }
      if (!seg) throw Error(inst.image_path + ": this image failed for an earlier instance");
      if (gt.fg.size() != rgb.size()) throw Error(inst.image_path + ": mask size differs from the image");
      // Protocol m2n2: void counts as object and everything is scored.
      cv::Mat gt_eval = gt.fg.clone(), ignore;
      if (protocol == Protocol::M2N2) gt_eval = gt.fg | gt.void_mask;
      else ignore = gt.void_mask;
      cv::Mat pred = cv::Mat::zeros(rgb.size(), CV_8U);
      std::vector<Click> clicks;
      std::vector<cv::Point> prev;
      InstanceResult r;
      r.id = inst.id;
      r.seconds_attention = this_att;
      nlohmann::json cj = nlohmann::json::array();
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < o.max_clicks; ++k) {
        const auto c = next_click(gt_eval, pred, protocol == Protocol::Ritm ? gt.void_mask : cv::Mat(), prev, protocol);
        clicks.push_back({static_cast<double>(c.x), static_cast<double>(c.y), c.positive});
        prev.emplace_back(c.x, c.y);
        cj.push_back({c.x, c.y, c.positive});
        pred = seg->segment(clicks).mask;
        r.ious.push_back(iou(pred, gt_eval, ignore));
      }
      r.seconds_clicks = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      seg->clear_cache();
      nlohmann::json line = {{"id", r.id},
                             {"ious", r.ious},
                             {"seconds_attention", r.seconds_attention},
                             {"seconds_clicks", r.seconds_clicks},
                             {"clicks", cj}};
      append_record(rec_path, line.dump());
      done[r.id] = {r, cj};
      noc90_sum += number_of_clicks(r.ious, 0.90, o.max_clicks);
      ++noc90_n;
      spdlog::debug("{}: NoC90 {} IoU@1 {:.3f} IoU@{} {:.3f}", r.id, number_of_clicks(r.ious, 0.90, o.max_clicks), r.ious[0],
                    o.max_clicks, r.ious.back());
    } catch (const MemoryError& e) {
      bar.finish();
      throw;
    } catch (const std::exception& e) {  // any failure ends this instance only
      spdlog::error("{}: {}", inst.id, one_line_message(e));
      ++failures;
    }
    bar.update(count, "NoC90 " + (noc90_n ? fmt(noc90_sum / noc90_n) : std::string("-")));
  }
  bar.finish();
  std::vector<InstanceResult> results;
  std::set<std::string> wanted;
  for (const auto& inst : mine) wanted.insert(inst.id);
  for (const auto& [id, rec] : done)
    if (wanted.count(id)) results.push_back(rec.r);
  auto m = write_outputs(out, results, o.max_clicks, info);
  m["failed"] = failures;
  print_summary(m);
  std::cout << m.dump() << "\n";
  return failures ? kSomeFailed : kOk;
}

}  // namespace

void register_eval(CLI::App& app, int& code) {
  auto o = std::make_shared<EvalOptions>();
  auto* sub = app.add_subcommand("eval", "NoC85/90/95 and mIoU per click on a dataset with a click simulator");
  sub->add_option("--dataset", o->dataset, "Folder with images/ and masks/, or a COCO instances JSON")->required();
  sub->add_option("--images", o->images, "Image folder of a COCO dataset (default: the JSON's folder)");
  sub->add_option("--protocol", o->protocol, "Click simulator: m2n2 or ritm")->capture_default_str();
  sub->add_option("--max-clicks", o->max_clicks, "Clicks per instance")->capture_default_str();
  sub->add_option("--out", o->out, "Output folder (metrics.json, instances.csv, instances.jsonl, miou_curve.png)")->required();
  sub->add_option("--shard", o->shard, "Evaluate only shard I of N (I/N, 0-based), e.g. $SLURM_ARRAY_TASK_ID/8");
  sub->add_flag("--resume", o->resume, "Skip instances already finished in --out");
  sub->add_flag("--overwrite", o->overwrite, "Start over, discarding finished instances in --out");
  sub->add_option("--mask-format", o->mask_format, "Folder masks: grabcut (>128 object, 128 void) or davis (>0 object)")
      ->capture_default_str();
  sub->add_option("--limit", o->limit, "Evaluate at most this many instances (0 = all)");
  add_common(sub, o->common);
  add_m2n2_flags(sub, o->m2n2);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      return run_eval(*o);
    });
  });

  struct MergeOpt {
    CommonOptions common;
    std::string out;
    std::vector<std::string> inputs;
  };
  auto mo = std::make_shared<MergeOpt>();
  auto* merge = app.add_subcommand("eval-merge", "Combine the outputs of eval shards into one set of metrics");
  merge->add_option("--out", mo->out, "Output folder")->required();
  merge->add_option("shards", mo->inputs, "Shard output folders")->required();
  add_common(merge, mo->common, false);
  merge->callback([mo, &code]() {
    code = guarded([&]() {
      setup(mo->common);
      std::map<std::string, Record> all;
      nlohmann::json info;
      int max_clicks = 0;
      for (const auto& in : mo->inputs) {
        const fs::path mp = fs::path(in) / "metrics.json";
        nlohmann::json m;
        try {
          m = nlohmann::json::parse(read_file(mp.string()));
        } catch (const nlohmann::json::exception&) {
          throw UsageError(mp.string() + ": malformed JSON");
        } catch (const Error& e) {
          throw UsageError(e.what());
        }
        if (info.is_null()) {
          info = m;
          max_clicks = m.value("max_clicks", 20);
        } else {
          const std::string diff = first_difference(info, m);
          if (!diff.empty())
            throw UsageError(mp.string() + ": shard was run with other settings than " + mo->inputs.front() + " (" + diff + ")");
        }
        for (auto& [id, rec] : read_records(fs::path(in) / kRecords)) {
          if (all.count(id)) throw UsageError(in + ": instance " + id + " appears in two shards");
          all[id] = rec;
        }
      }
      std::error_code ec;
      fs::create_directories(mo->out, ec);
      std::vector<InstanceResult> results;
      std::string lines;
      for (const auto& [id, rec] : all) {
        results.push_back(rec.r);
        lines += nlohmann::json{{"id", id}, {"ious", rec.r.ious}, {"seconds_attention", rec.r.seconds_attention},
                                {"seconds_clicks", rec.r.seconds_clicks}, {"clicks", rec.clicks}}
                     .dump() +
                 "\n";
      }
      write_file_atomic((fs::path(mo->out) / kRecords).string(), lines);
      for (const char* k : {"instances", "NoC85", "NoC90", "NoC95", "NoF85", "NoF90", "NoF95", "mIoU_per_click",
                            "seconds_per_image_attention", "seconds_per_click", "failed"})
        info.erase(k);
      info["shard"] = "merged:" + std::to_string(mo->inputs.size());
      auto m = write_outputs(mo->out, results, max_clicks, info);
      print_summary(m);
      std::cout << m.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });

  struct PlotOpt {
    CommonOptions common;
    std::string out, title = "mIoU per click";
    std::vector<std::string> runs, labels;
  };
  auto po = std::make_shared<PlotOpt>();
  auto* plot = app.add_subcommand("plot", "Draw the mIoU-per-click curves of several eval runs on one picture");
  plot->add_option("--out", po->out, "Output PNG")->required();
  plot->add_option("--label", po->labels, "Legend label per run (default: the run's source)");
  plot->add_option("--title", po->title, "Title");
  plot->add_option("runs", po->runs, "Eval output folders (or metrics.json files)")->required();
  add_common(plot, po->common, false);
  plot->callback([po, &code]() {
    code = guarded([&]() {
      setup(po->common);
      std::vector<Curve> curves;
      for (size_t i = 0; i < po->runs.size(); ++i) {
        fs::path p(po->runs[i]);
        if (fs::is_directory(p)) p /= "metrics.json";
        nlohmann::json m;
        try {
          m = nlohmann::json::parse(read_file(p.string()));
        } catch (const nlohmann::json::exception&) {
          throw UsageError(p.string() + ": malformed JSON");
        } catch (const Error& e) {
          throw UsageError(e.what());
        }
        Curve c;
        c.label = i < po->labels.size() ? po->labels[i]
                                         : m.value("source_label", p.parent_path().filename().string()) + " NoC90 " +
                                               fmt(m.value("NoC90", 0.0));
        c.values = m.at("mIoU_per_click").get<std::vector<double>>();
        curves.push_back(c);
      }
      write_png_atomic(po->out, plot_curves(curves, po->title));
      std::cout << nlohmann::json{{"png", po->out}, {"runs", po->runs.size()}}.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });
}

}  // namespace m2n2::cli
