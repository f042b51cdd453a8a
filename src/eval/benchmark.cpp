// The NoC benchmark loop, its durable records and its outputs.
#include "m2n2/eval/benchmark.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "core/fault_injection.hpp"
#include "core/in_order.hpp"
#include "m2n2/eval/plot.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/m2n2.hpp"
#include "core/check.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

namespace {

constexpr const char* kRecords = "instances.jsonl";
constexpr const char* kRunSettings = "run.json";  // what the records were made with

// Everything that changes a run's results, as recorded in run.json and metrics.json
// and compared by resume and merge.
nlohmann::json run_settings(const Engine& engine, const BenchmarkOptions& o) {
  nlohmann::json j;
  j["protocol"] = to_string(o.protocol);
  j["dataset"] = fs::weakly_canonical(fs::absolute(o.dataset)).string();
  j["images"] = o.images.empty() ? std::string() : fs::weakly_canonical(fs::absolute(o.images)).string();
  j["mask_format"] = o.mask_format;
  j["max_clicks"] = o.max_clicks;
  if (o.subset > 0) j["subset"] = {{"count", o.subset}, {"seed", o.seed}};
  j["source"] = engine.source_id();
  j["device"] = o.device_label;
  j["settings"] = engine_settings(engine);
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

std::string record_line(const InstanceRecord& rec) {
  const auto& r = rec.result;
  return nlohmann::json{{"id", r.id},
                        {"ious", r.ious},
                        {"seconds_attention", r.seconds_attention},
                        {"seconds_clicks", r.seconds_clicks},
                        {"clicks", rec.clicks}}
      .dump();
}

std::map<std::string, InstanceRecord> read_records(const fs::path& path) {
  std::map<std::string, InstanceRecord> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      InstanceRecord rec;
      rec.result.id = j.at("id").get<std::string>();
      rec.result.ious = j.at("ious").get<std::vector<double>>();
      rec.result.seconds_attention = j.value("seconds_attention", 0.0);
      rec.result.seconds_clicks = j.value("seconds_clicks", 0.0);
      rec.clicks = j.value("clicks", nlohmann::json::array());
      out[rec.result.id] = rec;
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

nlohmann::json parse_json_file(const fs::path& p) {
  try {
    return nlohmann::json::parse(read_file(p.string()));
  } catch (const nlohmann::json::exception&) {
    throw InvalidArgument(p.string() + ": malformed JSON");
  } catch (const Error& e) {
    throw InvalidArgument(e.what());
  }
}

// Prepares the output folder: refuses to clobber, removes a killed run's leftovers
// (temporary files, a torn last record), and returns the finished records.
std::map<std::string, InstanceRecord> open_records(const BenchmarkOptions& o, const fs::path& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (!fs::is_directory(out)) throw InvalidArgument(o.out + ": cannot create output folder");
  const fs::path rec_path = out / kRecords;
  if (fs::exists(rec_path) && !o.resume) {
    if (!o.overwrite) throw InvalidArgument(rec_path.string() + ": exists (use --resume to continue or --overwrite to start over)");
    fs::remove(rec_path, ec);
  }
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos) fs::remove(e.path(), ec);
  }
  if (o.resume) drop_torn_line(rec_path.string());
  return o.resume ? read_records(rec_path) : std::map<std::string, InstanceRecord>{};
}

}  // namespace

nlohmann::json engine_settings(const Engine& engine) {
  const auto& P = engine.params();
  return {{"temperature", P.op.temperature},
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
}

std::string settings_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (const auto* s : {&a, &b})
    for (auto it = s->begin(); it != s->end(); ++it) {
      const auto x = a.value(it.key(), nlohmann::json()), y = b.value(it.key(), nlohmann::json());
      if (x == y) continue;
      if (x.is_object() && y.is_object()) return it.key() + "." + settings_difference(x, y);
      return it.key() + " " + x.dump() + " vs " + y.dump();
    }
  return "";
}

// Appends one line and makes it durable before returning (a SIGKILL after this
// never loses the instance; one during the write leaves a torn last line that the
// reader drops).
void append_line_durable(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) throw Error(path + ": cannot open for appending");
  const std::string s = line + "\n";
  const ssize_t n = ::write(fd, s.data(), s.size());
  ::fsync(fd);
  ::close(fd);
  if (n != static_cast<ssize_t>(s.size())) throw Error(path + ": write failed");
}

void drop_torn_line(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const std::string text = read_file(path);
  if (!text.empty() && text.back() != '\n') fs::resize_file(path, text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
}

InstanceRecord evaluate_instance(Session& session, const GroundTruth& gt, Protocol protocol, int max_clicks) {
  if (gt.fg.size() != session.size()) throw Error("mask size differs from the image");
  // Protocol m2n2: void counts as object and everything is scored.
  cv::Mat gt_eval = gt.fg.clone(), ignore;
  if (protocol == Protocol::M2N2) gt_eval = gt.fg | gt.void_mask;
  else ignore = gt.void_mask;
  cv::Mat pred = cv::Mat::zeros(session.size(), CV_8U);
  std::vector<Click> clicks;
  std::vector<cv::Point> prev;
  InstanceRecord rec;
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < max_clicks; ++k) {
    const auto c = next_click(gt_eval, pred, protocol == Protocol::Ritm ? gt.void_mask : cv::Mat(), prev, protocol);
    clicks.push_back({static_cast<double>(c.x), static_cast<double>(c.y), c.positive});
    prev.emplace_back(c.x, c.y);
    rec.clicks.push_back({c.x, c.y, c.positive});
    pred = session.segment(clicks).mask;
    rec.result.ious.push_back(iou(pred, gt_eval, ignore));
  }
  rec.result.seconds_clicks = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rec;
}

BenchmarkOutcome run_benchmark(Engine& engine, const BenchmarkOptions& o, const BenchmarkCallbacks& cb) {
  return run_benchmark(std::vector<Engine*>{&engine}, o, cb);
}

BenchmarkOutcome run_benchmark(const std::vector<Engine*>& engines, const BenchmarkOptions& o,
                               const BenchmarkCallbacks& cb) {
  if (engines.empty()) throw InvalidArgument("run_benchmark: no engine");
  const Engine& engine = *engines.front();
  MaskConvention conv;
  std::vector<Instance> all;
  try {
    conv = parse_convention(o.mask_format);
    check::at_least("subset", o.subset, 0);
    all = select_subset(read_dataset(o.dataset, o.images, conv), static_cast<size_t>(o.subset), o.seed);
  } catch (const InvalidArgument&) {
    throw;
  } catch (const Error& e) {
    throw InvalidArgument(e.what());
  }
  check::in_range("max_clicks", o.max_clicks, 1, 1000);
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw InvalidArgument("shard: expected I/N with 0 <= I < N");
  // Shards take whole images (every N-th image from I), so that no two shards compute
  // the same attention; within a shard an image's instances are consecutive.
  std::vector<Instance> mine;
  const auto groups = group_by_image(all);
  for (size_t g = 0; g < groups.size(); ++g)
    if (static_cast<int>(g % o.shards) == o.shard)
      for (const auto& in : groups[g]) mine.push_back(in);
  if (o.limit > 0 && static_cast<int>(mine.size()) > o.limit) mine.resize(o.limit);

  const fs::path out(o.out);
  auto done = open_records(o, out);
  if (o.resume && cb.info) cb.info("resuming: " + std::to_string(done.size()) + " of " + std::to_string(mine.size()) +
                                   " instances already done");
  nlohmann::json info = run_settings(engine, o);
  info["source_label"] = o.source_label;
  info["shard"] = std::to_string(o.shard) + "/" + std::to_string(o.shards);
  info["limit"] = o.limit;
  // The settings of the records in out: a resumed run must use the same ones, its shard
  // and limit included (a record of another shard is not one of this shard's).
  const fs::path run_path = out / kRunSettings;
  if (o.resume && fs::exists(run_path)) {
    const nlohmann::json before = parse_json_file(run_path);
    std::string diff = first_difference(before, info);
    for (const char* k : {"shard", "limit"})
      if (diff.empty() && before.contains(k) && before[k] != info[k])
        diff = std::string(k) + " " + before[k].dump() + " vs " + info[k].dump();
    if (!diff.empty())
      throw InvalidArgument(o.out + ": its records were made with other settings (" + diff +
                            "); use the same flags, or --overwrite to start over");
  } else {
    if (!done.empty())
      throw InvalidArgument(o.out + ": records without " + std::string(kRunSettings) +
                            " (made by an older m2n2); their settings cannot be checked, use --overwrite");
    write_file_atomic(run_path.string(), info.dump(2) + "\n");
  }

  const int total = static_cast<int>(mine.size());
  int failures = 0, count = 0, noc90_n = 0;
  double noc90_sum = 0;
  for (const auto& [id, rec] : done) {
    noc90_sum += number_of_clicks(rec.result.ious, 0.90, o.max_clicks);
    ++noc90_n;
  }
  // The work items: an image's instances (consecutive), so that one session (operator,
  // table, per-point maps) serves them all. With several engines, images run at once
  // on as many threads; records and callbacks follow the dataset order here.
  std::vector<std::vector<const Instance*>> images;
  for (const auto& inst : mine) {
    if (images.empty() || images.back().front()->image_path != inst.image_path) images.emplace_back();
    images.back().push_back(&inst);
  }
  std::set<std::string> finished;  // before this run; read by the workers
  for (const auto& [id, rec] : done) finished.insert(id);
  struct Outcome {  // of one instance
    std::string id;
    bool skipped = false;  // finished before
    std::string error;
    InstanceRecord rec;
  };
  size_t taken = 0;
  const std::function<bool(const std::vector<const Instance*>*&)> next = [&](const std::vector<const Instance*>*& item) {
    if (taken == images.size()) return false;
    item = &images[taken++];
    return true;
  };
  // Each instance's outcome is published as soon as it is made, so that its record is on
  // disk before the image's next instance starts (a kill loses one instance per job).
  const std::function<void(const std::vector<const Instance*>*&, int, const std::function<void(Outcome&)>&)> work =
      [&](const std::vector<const Instance*>*& group, int worker, const std::function<void(Outcome&)>& publish) {
        std::unique_ptr<Session> session;
        bool opened = false;
        for (const Instance* inst : *group) {
          Outcome oc;
          oc.id = inst->id;
          if (finished.count(inst->id)) {
            oc.skipped = true;
            publish(oc);
            continue;
          }
          try {
            GroundTruth gt = load_ground_truth(*inst);
            inject_fault(inst->id);
            double this_att = 0;
            if (!opened) {
              opened = true;
              session = engines[static_cast<size_t>(worker)]->open(read_rgb(inst->image_path).rgb, inst->image_path);
              session->prepare();
              this_att = session->timings().total();
            }
            if (!session) throw Error(inst->image_path + ": this image failed for an earlier instance");
            if (gt.fg.size() != session->size()) throw Error(inst->image_path + ": mask size differs from the image");
            oc.rec = evaluate_instance(*session, gt, o.protocol, o.max_clicks);
            session->clear_points();
            oc.rec.result.id = inst->id;
            oc.rec.result.seconds_attention = this_att;
          } catch (const MemoryError&) {
            throw;
          } catch (const std::exception& e) {  // any failure ends this instance only
            oc.error = inst->id + ": " + one_line_message(e);
          }
          publish(oc);
        }
      };
  const std::function<void(Outcome&)> emit = [&](Outcome& oc) {
    ++count;
    if (oc.skipped) {
      if (cb.progress) cb.progress(count, total, "");
      return;
    }
    if (!oc.error.empty()) {
      if (cb.error) cb.error(oc.error);
      ++failures;
    } else {
      append_line_durable((out / kRecords).string(), record_line(oc.rec));
      noc90_sum += number_of_clicks(oc.rec.result.ious, 0.90, o.max_clicks);
      ++noc90_n;
      done[oc.id] = std::move(oc.rec);
    }
    if (cb.progress) cb.progress(count, total, "NoC90 " + (noc90_n ? fmt(noc90_sum / noc90_n) : std::string("-")));
  };
  run_in_order_streamed<const std::vector<const Instance*>*, Outcome>(static_cast<int>(engines.size()), next, work, emit);
  std::vector<InstanceResult> results;
  std::set<std::string> wanted;
  for (const auto& inst : mine) wanted.insert(inst.id);
  for (const auto& [id, rec] : done)
    if (wanted.count(id)) results.push_back(rec.result);
  BenchmarkOutcome r;
  r.metrics = write_outputs(out, results, o.max_clicks, info);
  r.metrics["failed"] = failures;
  r.failures = failures;
  return r;
}

BenchmarkOutcome merge_benchmarks(const std::vector<std::string>& shards, const std::string& out_dir) {
  std::map<std::string, InstanceRecord> all;
  nlohmann::json info;
  int max_clicks = 0;
  for (const auto& in : shards) {
    const fs::path mp = fs::path(in) / "metrics.json";
    nlohmann::json m = parse_json_file(mp);
    if (info.is_null()) {
      info = m;
      max_clicks = m.value("max_clicks", 20);
    } else {
      const std::string diff = first_difference(info, m);
      if (!diff.empty())
        throw InvalidArgument(mp.string() + ": shard was run with other settings than " + shards.front() + " (" + diff + ")");
    }
    for (auto& [id, rec] : read_records(fs::path(in) / kRecords)) {
      if (all.count(id)) throw InvalidArgument(in + ": instance " + id + " appears in two shards");
      all[id] = rec;
    }
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  std::vector<InstanceResult> results;
  std::string lines;
  for (const auto& [id, rec] : all) {
    results.push_back(rec.result);
    lines += record_line(rec) + "\n";
  }
  write_file_atomic((fs::path(out_dir) / kRecords).string(), lines);
  for (const char* k : {"instances", "NoC85", "NoC90", "NoC95", "NoF85", "NoF90", "NoF95", "mIoU_per_click",
                        "seconds_per_image_attention", "seconds_per_click", "failed"})
    info.erase(k);
  info["shard"] = "merged:" + std::to_string(shards.size());
  BenchmarkOutcome r;
  r.metrics = write_outputs(out_dir, results, max_clicks, info);
  return r;
}

std::string summary_table(const nlohmann::json& m) {
  char buf[256];
  std::string out;
  std::snprintf(buf, sizeof buf, "\n  %-10s %9s %7s %7s %7s %7s\n", "protocol", "instances", "NoC85", "NoC90", "NoC95", "NoF90");
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-10s %9d %7.2f %7.2f %7.2f %7d\n", m.value("protocol", std::string("?")).c_str(),
                m["instances"].get<int>(), m["NoC85"].get<double>(), m["NoC90"].get<double>(), m["NoC95"].get<double>(),
                m["NoF90"].get<int>());
  out += buf;
  const auto v = m["mIoU_per_click"].get<std::vector<double>>();
  out += "  mIoU@k:";
  for (size_t k = 0; k < v.size(); ++k)
    if (k < 5 || k + 1 == v.size() || (k + 1) % 5 == 0) {
      std::snprintf(buf, sizeof buf, " %zu:%.3f", k + 1, v[k]);
      out += buf;
    }
  return out + "\n";
}

nlohmann::json read_metrics(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) p /= "metrics.json";
  return parse_json_file(p);
}

}  // namespace m2n2
