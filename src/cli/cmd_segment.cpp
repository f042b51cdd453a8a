// m2n2 segment: one image from --click flags, or a batch from a click file / JSONL.
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <cmath>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "core/in_order.hpp"
#include "core/fault_injection.hpp"
#include "m2n2/eval/benchmark.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/io/export.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/output_folder.hpp"
#include "m2n2/io/visuals.hpp"

namespace m2n2::cli {
namespace fs = std::filesystem;

namespace {

// Distinct pixels among an image's clicks: the distance maps it will need.
int distinct_points(const std::vector<Click>& clicks) {
  std::set<std::pair<int, int>> points;
  for (const Click& c : clicks) {
    const cv::Point p = click_pixel(c);
    points.insert({p.x, p.y});
  }
  return static_cast<int>(points.size());
}

struct SegmentOptions {
  CommonOptions common;
  M2N2Flags m2n2;
  std::string image, out, click_file, images_dir, shard;
  std::vector<std::string> clicks;
  int jobs = 1, shard_count = 0;
  SaveOptions save;
  bool resume = false;
  std::string export_list, coco_gt;
  ExportOptions exports;
};

constexpr const char* kRecords = "segment.jsonl";        // one line per finished image entry
constexpr const char* kRunSettings = "segment-run.json";  // what the records were made with

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The output folder of an image (OUT/<stem>/, or its file name when an earlier image took
// the stem: see OutputFolders). Entries with one stem run in file order (the wait below).
std::string output_folder(const fs::path& image) {
  static std::mutex mu;
  static OutputFolders folders;
  std::lock_guard<std::mutex> lock(mu);
  return folders.folder(fs::absolute(image).lexically_normal().string());
}

// Processes one image entry; returns its JSON line. Never throws for item errors.
nlohmann::json process_entry(const ImageSpec& spec, const SegmentOptions& o, const SaveOptions& save, const fs::path& base,
                             Engine& engine, int& failures) {
  nlohmann::json line;
  line["image"] = spec.image;
  if (!spec.error.empty()) {
    line["ok"] = false;
    line["error"] = spec.error;
    spdlog::error("{}: {}", spec.image.empty() ? "<entry>" : spec.image, spec.error);
    ++failures;
    return line;
  }
  const fs::path img_path = fs::path(spec.image).is_absolute() ? fs::path(spec.image) : base / spec.image;
  nlohmann::json objs = nlohmann::json::array();
  try {
    LoadedImage li = read_rgb(img_path.string());
    if (!li.note.empty()) spdlog::debug("{}: {}", img_path.string(), li.note);
    line["width"] = li.rgb.cols;
    line["height"] = li.rgb.rows;
    // Validate objects before the expensive part.
    std::vector<const ObjectSpec*> todo;
    const fs::path out_dir = fs::path(o.out) / output_folder(img_path);
    for (const auto& os : spec.objects) {
      for (const auto& w : os.warnings) spdlog::warn("{} / {}: {}", spec.image, os.id, w);
      std::string err = os.error;
      if (err.empty()) {
        try {
          check_clicks_inside(os.clicks, li.rgb.size());
          std::error_code ec;
          if (!save.overwrite && fs::exists(out_dir / (os.id + ".png"), ec))
            err = (out_dir / (os.id + ".png")).string() + ": exists (use --overwrite)";
        } catch (const std::exception& e) {
          err = one_line_message(e);
        }
      }
      if (!err.empty()) {
        spdlog::error("{} / {}: {}", spec.image, os.id, err);
        objs.push_back({{"id", os.id}, {"ok", false}, {"error", err}});
        ++failures;
      } else {
        todo.push_back(&os);
      }
    }
    if (!todo.empty()) {
      // One session per image: the per-click maps are shared between objects.
      auto session = engine.open(li.rgb, spec.image);
      std::vector<Click> all;
      for (const auto* os : todo) all.insert(all.end(), os->clicks.begin(), os->clicks.end());
      session->expect_points(distinct_points(all));
      session->prepare();
      line["attention_ms"] = (session->timings().attention + session->timings().op) * 1000.0;
      const cv::Size work = session->working_size();
      if (work != li.rgb.size()) line["working_size"] = {work.width, work.height};
      session->prepare_clicks(all);
      // The image's folder is made once its maps are ready, so that an image that fails
      // before (attention, operator) leaves nothing behind.
      std::error_code ec;
      fs::create_directories(out_dir, ec);
      if (ec || !fs::is_directory(out_dir)) throw Error(out_dir.string() + ": cannot create output folder (" + ec.message() + ")");
      for (const auto* os : todo) {
        const auto t0 = std::chrono::steady_clock::now();
        nlohmann::json oj = {{"id", os->id}};
        if (os->category_id >= 0) oj["category_id"] = os->category_id;
        if (!os->label.empty()) oj["label"] = os->label;
        try {
          inject_fault(spec.image + "#" + os->id);
          auto res = session->segment(os->clicks);
          oj.update(save_result((out_dir / (os->id + ".png")).string(), res, li.rgb, os->clicks, save));
          oj["ok"] = true;
          oj["ms"] = ms_since(t0);
        } catch (const std::exception& e) {  // any failure of one object, OpenCV's and LibTorch's too
          const std::string msg = one_line_message(e);
          spdlog::error("{} / {}: {}", spec.image, os->id, msg);
          oj["ok"] = false;
          oj["error"] = msg;
          ++failures;
        }
        objs.push_back(oj);
      }
    }
    bool all_ok = true;
    for (const auto& oj : objs) all_ok = all_ok && oj["ok"].get<bool>();
    line["ok"] = all_ok;
  } catch (const std::exception& e) {  // any failure of one image ends that image only
    std::string msg = one_line_message(e);
    if (msg.rfind(img_path.string(), 0) != 0 && msg.rfind(spec.image, 0) != 0) msg = spec.image + ": " + msg;
    spdlog::error("{}", msg);
    line["ok"] = false;
    line["error"] = msg;
    ++failures;
  }
  line["objects"] = objs;
  return line;
}

// One image entry of a batch, where its relative paths start, and its place in the input.
struct BatchEntry {
  ImageSpec spec;
  fs::path base;
  long index = 0;
};

// One image entry's outcome: its JSON line and how many items in it failed.
struct EntryResult {
  nlohmann::json line;
  int failures = 0;
};

// The records of earlier runs in OUT and what they were made with: a resumed run must
// use the same settings; without --resume the records start afresh.
class Records {
 public:
  Records(const SegmentOptions& o, const nlohmann::json& settings) : path_((fs::path(o.out) / kRecords).string()) {
    for (auto& j : open_run_records(o.out, kRecords, kRunSettings, settings, o.resume)) {
      if (!j.contains("entry") || !j["entry"].is_number_integer()) continue;
      const long entry = j["entry"].get<long>();  // before j is moved from
      done_[entry] = std::move(j);
    }
  }

  // An earlier record of this entry when all its outputs are there: the entry is skipped.
  const nlohmann::json* complete(const BatchEntry& e) const {
    auto it = done_.find(e.index);
    if (it == done_.end()) return nullptr;
    const nlohmann::json& r = it->second;
    if (r.value("image", std::string()) != e.spec.image || !r.value("ok", false) || !r.contains("objects")) return nullptr;
    std::vector<std::string> ids;
    for (const auto& oj : r["objects"]) {
      ids.push_back(oj.value("id", std::string()));
      for (const char* k : {"mask", "soft", "overlay"}) {
        if (!oj.contains(k)) continue;
        std::error_code ec;
        const std::string f = oj[k].is_string() ? oj[k].get<std::string>() : std::string();
        if (f.empty() || !fs::is_regular_file(f, ec) || fs::file_size(f, ec) == 0) return nullptr;
      }
    }
    std::vector<std::string> wanted;
    for (const auto& os : e.spec.objects) wanted.push_back(os.id);
    return ids == wanted ? &r : nullptr;
  }
  void append(const nlohmann::json& line) { append_line_durable(path_, line.dump()); }
  size_t size() const { return done_.size(); }

 private:
  std::string path_;
  std::map<long, nlohmann::json> done_;  // entry index -> its latest record
};

// The export's view of the records: each entry's image and the objects it segmented.
std::vector<ExportImage> export_images(const std::map<long, nlohmann::json>& records, const fs::path& base) {
  std::vector<ExportImage> images;
  for (const auto& [index, r] : records) {
    if (!r.contains("width") || !r.contains("height")) continue;  // the image was not read
    ExportImage im;
    im.file_name = r.value("image", std::string());
    im.number = index + 1;
    im.image_path = (fs::path(im.file_name).is_absolute() ? fs::path(im.file_name) : base / im.file_name).string();
    im.width = r["width"].get<int>();
    im.height = r["height"].get<int>();
    im.stem = fs::path(im.file_name).stem().string();
    for (const auto& oj : r.value("objects", nlohmann::json::array())) {
      if (!oj.value("ok", false) || !oj.contains("mask")) continue;
      ExportObject ob;
      ob.id = oj.value("id", std::string());
      ob.mask_path = oj["mask"].get<std::string>();
      ob.category_id = oj.value("category_id", -1LL);
      ob.label = oj.value("label", std::string());
      im.stem = fs::path(ob.mask_path).parent_path().filename().string();  // the entry's mask folder
      im.objects.push_back(std::move(ob));
    }
    images.push_back(std::move(im));
  }
  return images;
}

int run_batch(const SegmentOptions& o) {
  const auto [shard_i, shard_n] = resolve_shard(o.shard, o.shard_count);
  std::vector<ImageSpec> specs;  // of a click file, read whole before anything is written
  if (o.click_file != "-") {
    try {
      specs = parse_click_file(read_file(o.click_file), o.click_file);
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
  }
  // With several images at once, each gets its share of the threads and of the memory,
  // and an engine of its own.
  const auto engines = make_job_engines(o.common, o.m2n2, o.jobs);
  const auto canonical = [](const std::string& p) {
    std::error_code ec;
    const fs::path c = p.empty() || p == "-" ? fs::path(p) : fs::weakly_canonical(fs::absolute(p), ec);
    return ec ? fs::absolute(p).lexically_normal().string() : c.string();
  };
  const nlohmann::json settings = {
      {"clicks", canonical(o.click_file)},
      {"images", canonical(o.images_dir)},
      {"shard", std::to_string(shard_i) + "/" + std::to_string(shard_n)},
      {"source", engines.front()->source_id()},
      {"device", o.common.device},
      {"settings", engine_settings(*engines.front())},
      {"outputs", {{"rle", o.save.rle}, {"soft", o.save.soft}, {"overlay", o.save.overlay}}}};
  Records records(o, settings);
  if (o.resume) spdlog::info("resuming: {} image entries recorded in {}", records.size(), (fs::path(o.out) / kRecords).string());
  std::map<long, nlohmann::json> finished;  // entry index -> record, for the exports
  int failures = 0;
  // Entries whose images share a stem write into the same folder (out/<stem>/), where
  // whether an object's mask exists depends on the entries before: such an entry starts
  // once the last earlier one with its stem is done, so that every --jobs gives what one
  // job gives.
  std::map<std::string, long> last_of_stem;  // called in hand-out order, under the pool's lock
  const std::function<long(const BatchEntry&, long)> after = [&](const BatchEntry& e, long index) {
    if (e.spec.image.empty()) return -1L;
    long& last = last_of_stem.emplace(fs::path(e.spec.image).stem().string(), -1L).first->second;
    const long earlier = last;
    last = index;
    return earlier;
  };
  // A resumed run redoes an unfinished entry whole: what a killed run left of it is replaced.
  SaveOptions save = o.save;
  if (o.resume) save.overwrite = true;
  const auto work = [&](BatchEntry& e, int worker) {
    EntryResult r;
    r.line = process_entry(e.spec, o, save, e.base, *engines[static_cast<size_t>(worker)], r.failures);
    r.line["entry"] = e.index;
    return r;
  };
  // Each finished entry is recorded (durably) before its line goes to stdout.
  const auto publish = [&](EntryResult& r) {
    records.append(r.line);
    std::cout << r.line.dump() << "\n" << std::flush;
    failures += r.failures;
    finished[r.line["entry"].get<long>()] = r.line;
  };
  int skipped = 0;
  const auto skip = [&](const BatchEntry& e) {
    const nlohmann::json* r = o.resume ? records.complete(e) : nullptr;
    if (r) {
      finished[e.index] = *r;
      ++skipped;
    }
    return r != nullptr;
  };
  const fs::path base = o.images_dir.empty() ? (o.click_file == "-" ? fs::current_path() : fs::absolute(o.click_file).parent_path())
                                             : fs::path(o.images_dir);
  int n = 0;
  if (o.click_file == "-") {
    long index = -1;
    const auto next = [&](BatchEntry& item) {
      std::string text;
      while (std::getline(std::cin, text)) {
        if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (++index % shard_n != shard_i) continue;  // another shard's line
        item.spec = parse_click_line(text);
        if (item.spec.image.empty() && !item.spec.error.empty()) item.spec.image = "<line " + std::to_string(index + 1) + ">";
        item.base = base;
        item.index = index;
        ++n;
        if (skip(item)) continue;
        return true;
      }
      return false;
    };
    run_in_order<BatchEntry, EntryResult>(o.jobs, next, work, publish, after);
  } else {
    // Every N-th image entry from I, in file order.
    std::vector<BatchEntry> mine;
    for (size_t i = 0; i < specs.size(); ++i)
      if (static_cast<int>(i % shard_n) == shard_i) {
        BatchEntry e{std::move(specs[i]), base, static_cast<long>(i)};
        ++n;
        if (!skip(e)) mine.push_back(std::move(e));
      }
    Progress bar(static_cast<int>(mine.size()), !o.common.quiet, "segment");
    size_t taken = 0;
    int done = 0;
    const auto next = [&](BatchEntry& item) {
      if (taken == mine.size()) return false;
      item = std::move(mine[taken++]);
      return true;
    };
    run_in_order<BatchEntry, EntryResult>(
        o.jobs, next, work,
        [&](EntryResult& r) {
          publish(r);
          bar.update(++done, std::to_string(failures) + " failed");
        },
        after);
    bar.finish();
  }
  if (skipped) spdlog::info("{} image entries already done in {}, skipped", skipped, o.out);
  if (!o.exports.formats.empty()) {
    try {
      for (const auto& f : write_exports(o.out, export_images(finished, base), o.exports)) spdlog::debug("wrote {}", f);
    } catch (const std::exception& e) {
      spdlog::error("export: {}", one_line_message(e));
      ++failures;
    }
  }
  spdlog::info("{} image entries, {} failures", n, failures);
  return failures ? kSomeFailed : kOk;
}

int run_single(const SegmentOptions& o) {
  const std::vector<Click> clicks = parse_clicks(o.clicks);
  if (clicks.empty()) throw UsageError("segment: give at least one --click X,Y,+ (or --clicks FILE)");
  if (o.out.empty()) throw UsageError("segment: --out MASK.png is required");
  auto engine = make_engine(o.common, o.m2n2);
  LoadedImage li = read_rgb(o.image);
  if (!li.note.empty()) spdlog::debug("{}: {}", o.image, li.note);
  try {
    check_clicks_inside(clicks, li.rgb.size());
  } catch (const Error& e) {
    throw UsageError(o.image + ": " + e.what());
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto session = engine->open(li.rgb, o.image);
  session->expect_points(distinct_points(clicks));
  session->prepare();
  const double att_s = session->timings().attention + session->timings().op;
  auto res = session->segment(clicks);
  SaveOptions save = o.save;
  save.overwrite = true;  // the single-image form always writes its --out
  nlohmann::json j = save_result(o.out, res, li.rgb, clicks, save);
  j.update({{"image", o.image}, {"width", li.rgb.cols}, {"height", li.rgb.rows}, {"attention_ms", att_s * 1000.0}});
  j["ms"] = ms_since(t0);
  std::cout << j.dump() << "\n";
  return kOk;
}

}  // namespace

void register_segment(CLI::App& app, int& code) {
  auto o = std::make_shared<SegmentOptions>();
  auto* sub = app.add_subcommand("segment", "Segment objects from clicks (one image, or a batch from a click file / JSONL on stdin)");
  sub->add_option("--image", o->image, "Image (single-image form)");
  sub->add_option("--click", o->clicks, "Click X,Y,+ or X,Y,- (repeatable, single-image form)");
  sub->add_option("--out", o->out, "Mask PNG (single-image form) or output folder (batch form)")->required();
  sub->add_option("--clicks", o->click_file, "Click file (JSON), or - for JSON Lines on stdin (batch form)");
  sub->add_option("--images", o->images_dir, "Folder that image paths are relative to (default: the click file's folder)");
  sub->add_flag("--rle", o->save.rle, "Add COCO RLE of each mask to the JSON output");
  sub->add_flag("--soft", o->save.soft, "Also write the distance map (16-bit PNG, 32768 = boundary)");
  sub->add_flag("--overlay", o->save.overlay, "Also write a picture of the mask and clicks over the image");
  sub->add_flag("--overwrite", o->save.overwrite, "Replace existing masks (batch form)");
  sub->add_option("--shard", o->shard,
                  "Process only image entries I, I+N, I+2N ... (I/N, 0-based; batch form), e.g. $SLURM_ARRAY_TASK_ID/64; "
                  "auto: I and N from the scheduler (SLURM array, or Kubernetes Indexed Job with --shard-count)");
  sub->add_option("--shard-count", o->shard_count, "N for --shard auto under a Kubernetes Indexed Job (its completions)");
  sub->add_flag("--resume", o->resume,
                "Skip image entries whose outputs an earlier run with the same settings finished (records in OUT/segment.jsonl); "
                "redo the others");
  sub->add_option("--export", o->export_list,
                  "Also write the masks as FORMAT[,FORMAT...]: coco-results, coco-instances, labelme, yolo-seg (batch form)");
  sub->add_option("--coco-gt", o->exports.coco_gt, "COCO file whose image and category ids the exports use (matched by file name)");
  sub->add_flag("--polygons", o->exports.polygons, "coco-instances holds polygons instead of RLE");
  sub->add_option("--polygon-tolerance", o->exports.tolerance,
                  "Largest distance in pixels between a mask's outline and its exported polygon (Douglas-Peucker; 0 = every corner)")
      ->capture_default_str();
  sub->add_option("--jobs", o->jobs,
                  "Images processed at once (batch form), each with its share of --threads and of the memory and an "
                  "engine of its own; 2 on a 2-core CPU keeps both cores busy through the serial stages. Output in input order; "
                  "masks as --jobs 1 makes them with one job's share of --threads")
      ->capture_default_str();
  add_common(sub, o->common);
  add_exif_option(sub);
  add_m2n2_flags(sub, o->m2n2);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      if (!o->click_file.empty() && !o->image.empty()) throw UsageError("segment: use either --image/--click or --clicks, not both");
      if (!o->export_list.empty()) {
        try {
          o->exports.formats = parse_export_formats(o->export_list);
        } catch (const InvalidArgument& e) {
          throw UsageError(e.what());
        }
      }
      if (!std::isfinite(o->exports.tolerance) || o->exports.tolerance < 0 || o->exports.tolerance > 1e6)
        throw UsageError("--polygon-tolerance must be a number of pixels >= 0");
      if (o->exports.formats.empty() && (!o->exports.coco_gt.empty() || o->exports.polygons))
        throw UsageError("segment: --coco-gt and --polygons need --export");
      if (o->resume && o->save.overwrite) throw UsageError("segment: use either --resume or --overwrite, not both");
      if (!o->click_file.empty()) return run_batch(*o);
      if (!o->shard.empty() || o->shard_count) throw UsageError("segment: --shard needs the batch form (--clicks FILE)");
      if (o->resume || !o->exports.formats.empty()) throw UsageError("segment: --resume and --export need the batch form (--clicks FILE)");
      if (o->jobs != 1) throw UsageError("segment: --jobs needs the batch form (--clicks FILE)");
      if (o->image.empty()) throw UsageError("segment: give --image IMG --click X,Y,+ or --clicks FILE");
      return run_single(*o);
    });
  });
}

}  // namespace m2n2::cli
