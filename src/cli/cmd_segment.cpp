// m2n2 segment: one image from --click flags, or a batch from a click file / JSONL.
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "core/in_order.hpp"
#include "core/fault_injection.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/io/npy.hpp"
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
  int jobs = 1;
  SaveOptions save;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Processes one image entry; returns its JSON line. Never throws for item errors.
nlohmann::json process_entry(const ImageSpec& spec, const SegmentOptions& o, const fs::path& base, Engine& engine,
                             int& failures) {
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
    const fs::path out_dir = fs::path(o.out) / fs::path(spec.image).stem();
    for (const auto& os : spec.objects) {
      for (const auto& w : os.warnings) spdlog::warn("{} / {}: {}", spec.image, os.id, w);
      std::string err = os.error;
      if (err.empty()) {
        try {
          check_clicks_inside(os.clicks, li.rgb.size());
          std::error_code ec;
          if (!o.save.overwrite && fs::exists(out_dir / (os.id + ".png"), ec))
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
        try {
          inject_fault(spec.image + "#" + os->id);
          auto res = session->segment(os->clicks);
          oj.update(save_result((out_dir / (os->id + ".png")).string(), res, li.rgb, os->clicks, o.save));
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

// One image entry of a batch and where its relative paths start.
struct BatchEntry {
  ImageSpec spec;
  fs::path base;
};

// One image entry's outcome: its JSON line and how many items in it failed.
struct EntryResult {
  nlohmann::json line;
  int failures = 0;
};

int run_batch(const SegmentOptions& o) {
  const auto [shard_i, shard_n] = o.shard.empty() ? std::pair<int, int>{0, 1} : parse_shard(o.shard);
  // With several images at once, each gets its share of the threads and of the memory,
  // and an engine of its own.
  const auto engines = make_job_engines(o.common, o.m2n2, o.jobs);
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
  const auto work = [&](BatchEntry& e, int worker) {
    EntryResult r;
    r.line = process_entry(e.spec, o, e.base, *engines[static_cast<size_t>(worker)], r.failures);
    return r;
  };
  if (o.click_file == "-") {
    const fs::path base = o.images_dir.empty() ? fs::current_path() : fs::path(o.images_dir);
    int n = 0, index = -1;
    const auto next = [&](BatchEntry& item) {
      std::string text;
      while (std::getline(std::cin, text)) {
        if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (++index % shard_n != shard_i) continue;  // another shard's line
        item.spec = parse_click_line(text);
        if (item.spec.image.empty() && !item.spec.error.empty()) item.spec.image = "<line " + std::to_string(n + 1) + ">";
        item.base = base;
        ++n;
        return true;
      }
      return false;
    };
    run_in_order<BatchEntry, EntryResult>(
        o.jobs, next, work,
        [&](EntryResult& r) {
          std::cout << r.line.dump() << "\n" << std::flush;
          failures += r.failures;
        },
        after);
    spdlog::info("{} image entries, {} failures", n, failures);
    return failures ? kSomeFailed : kOk;
  }
  std::string text;
  try {
    text = read_file(o.click_file);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  std::vector<ImageSpec> specs;
  try {
    specs = parse_click_file(text, o.click_file);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  const fs::path base = o.images_dir.empty() ? fs::absolute(o.click_file).parent_path() : fs::path(o.images_dir);
  if (shard_n > 1) {  // every N-th image entry from I, in file order
    std::vector<ImageSpec> mine;
    for (size_t i = 0; i < specs.size(); ++i)
      if (static_cast<int>(i % shard_n) == shard_i) mine.push_back(std::move(specs[i]));
    specs.swap(mine);
  }
  Progress bar(static_cast<int>(specs.size()), !o.common.quiet, "segment");
  size_t taken = 0;
  int done = 0;
  const auto next = [&](BatchEntry& item) {
    if (taken == specs.size()) return false;
    item.spec = std::move(specs[taken++]);
    item.base = base;
    return true;
  };
  run_in_order<BatchEntry, EntryResult>(
      o.jobs, next, work,
      [&](EntryResult& r) {
        std::cout << r.line.dump() << "\n" << std::flush;
        failures += r.failures;
        bar.update(++done, std::to_string(failures) + " failed");
      },
      after);
  bar.finish();
  spdlog::info("{} images, {} failures", specs.size(), failures);
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
  sub->add_option("--shard", o->shard, "Process only image entries I, I+N, I+2N ... (I/N, 0-based; batch form), e.g. $SLURM_ARRAY_TASK_ID/64");
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
      if (!o->click_file.empty()) return run_batch(*o);
      if (!o->shard.empty()) throw UsageError("segment: --shard needs the batch form (--clicks FILE)");
      if (o->jobs != 1) throw UsageError("segment: --jobs needs the batch form (--clicks FILE)");
      if (o->image.empty()) throw UsageError("segment: give --image IMG --click X,Y,+ or --clicks FILE");
      return run_single(*o);
    });
  });
}

}  // namespace m2n2::cli
