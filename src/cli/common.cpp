#include "common.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <filesystem>
#include <map>

#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/eval/benchmark.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/image_io.hpp"

namespace m2n2::cli {

M2N2Params M2N2Flags::params(Device device) const {
  M2N2Params q = p;
  q.op.device = device;
  q.op.precision = parse_precision(precision);
  q.markov.linear_interpolation = !no_interpolation;
  q.flood_fill = !no_flood_fill;
  q.scoring.use_prior = !no_prior;
  q.scoring.use_edge = !no_edge;
  q.scoring.use_pos = !no_pos;
  q.scoring.use_neg = !no_neg;
  check_params(q);
  return q;
}

void add_common(CLI::App* app, CommonOptions& o, bool with_source) {
  if (with_source) {
    app->add_option("--source", o.source, "Attention source: default[:key=value,...], torchscript:PATH or file:PATH")
        ->capture_default_str();
    app->add_option("--grid", o.grid, "Token grid of the default source (default 64)");
    app->add_option("--cache-dir", o.cache_dir, "Attention cache folder (default $M2N2_CACHE_DIR or ~/.cache/m2n2)");
    app->add_flag("--no-cache", o.no_cache, "Do not read or write the attention cache");
    app->add_option("--cache-max-size", o.cache_max_size,
                    "Cache size cap; least recently used entries are removed beyond it (0 = no cap)")
        ->capture_default_str();
  }
  app->add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  app->add_option("--threads", o.threads, "Worker threads (0 = all cores)")->capture_default_str();
  app->add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off")->capture_default_str();
  app->add_flag("-q,--quiet", o.quiet, "Only errors on stderr, no progress bar");
  app->add_option("--max-memory", o.max_memory, "Refuse work needing more memory than this (e.g. 4G)");
}

void add_exif_option(CLI::App* app) {
  app->add_option_function<std::string>(
         "--exif", [](const std::string& s) { set_exif_orientation(parse_exif_orientation(s)); },
         "JPEG EXIF orientation: apply (clicks and masks refer to the photo as browsers show it) or ignore "
         "(the stored pixel grid)")
      ->check(CLI::IsMember({"apply", "ignore"}))
      ->default_str("apply");
}

void add_m2n2_flags(CLI::App* app, M2N2Flags& f) {
  const std::string g = "M2N2 (defaults = the authors' code)";
  app->add_option("--temperature", f.p.op.temperature, "Attention temperature T")->capture_default_str()->group(g);
  app->add_option("--ipf-iterations", f.p.op.ipf_iterations, "Sinkhorn/IPF iterations")->capture_default_str()->group(g);
  app->add_option("--markov-threshold", f.p.markov.threshold, "Relative probability threshold")->capture_default_str()->group(g);
  app->add_option("--max-iterations", f.p.markov.max_iterations, "Markov iterations at most")->capture_default_str()->group(g);
  app->add_flag("--no-interpolation", f.no_interpolation, "Integer crossing steps (no linear interpolation)")->group(g);
  app->add_option("--jbu-spatial-sigma", f.p.jbu.spatial_sigma, "Upsampling spatial sigma (grid cells)")->capture_default_str()->group(g);
  app->add_option("--jbu-range-sigma", f.p.jbu.range_sigma, "Upsampling range sigma (RGB in [0,1])")->capture_default_str()->group(g);
  app->add_flag("--no-flood-fill", f.no_flood_fill, "Skip the min-max flood fill")->group(g);
  app->add_option("--max-area", f.p.scoring.max_area, "Area prior: largest segment fraction")->capture_default_str()->group(g);
  app->add_flag("--no-prior", f.no_prior, "Drop the area prior term")->group(g);
  app->add_flag("--no-edge", f.no_edge, "Drop the boundary gradient term")->group(g);
  app->add_flag("--no-pos", f.no_pos, "Drop the positive clicks term")->group(g);
  app->add_flag("--no-neg", f.no_neg, "Drop the negative clicks term")->group(g);
  app->add_option("--max-side", f.p.max_side,
                  "Segment images larger than this at this longer side (attention, upsampling, scoring); masks at full size. 0 = off")
      ->capture_default_str()
      ->group(g);
  app->add_option("--precision", f.precision, "Operator storage: fp32; fp16 (CPU: the operator scaled and balanced in fp16, half the memory, faster Sinkhorn and Markov steps; CUDA: K as is); bf16 (CUDA only, the CPU keeps fp32)")
      ->capture_default_str()
      ->group(g);
  app->add_flag("--libtorch-operator", f.p.op.libtorch,
                "Build and apply the Markov operator in LibTorch on the CPU too (the CUDA code path; loads LibTorch, slower)")
      ->group(g);
}

void setup(const CommonOptions& o) {
  static bool once = false;
  if (!once) {
    auto logger = spdlog::stderr_color_mt("m2n2");
    logger->set_pattern("m2n2: %^%l%$: %v");
    spdlog::set_default_logger(logger);
    once = true;
  }
  const auto level = spdlog::level::from_str(o.log_level);
  if (level == spdlog::level::off && o.log_level != "off")
    throw UsageError("--log-level: unknown level '" + o.log_level + "'");
  spdlog::set_level(o.quiet ? spdlog::level::err : level);
  check_range("--threads", o.threads, 0, 4096);
  set_num_threads(o.threads);
}

namespace {

// An environment variable that must hold a whole number, or nullopt when unset.
std::optional<long long> env_integer(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  const std::string s(v);
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(s, &used);
  } catch (...) {
    used = 0;
  }
  if (s.empty() || used != s.size()) throw UsageError(std::string("--shard auto: ") + name + "='" + s + "' is not a whole number");
  return x;
}

}  // namespace

std::pair<int, int> resolve_shard(const std::string& spec, int shard_count, const char* flag) {
  if (shard_count != 0 && spec != "auto") throw UsageError(std::string("--shard-count needs ") + flag + " auto");
  if (spec.empty()) return {0, 1};
  if (spec != "auto") {
    try {
      return parse_shard(spec, flag);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }
  const std::string what = std::string(flag) + " auto: ";
  long long index = 0, count = 0;
  if (const auto id = env_integer("SLURM_ARRAY_TASK_ID")) {
    const auto n = env_integer("SLURM_ARRAY_TASK_COUNT"), lo = env_integer("SLURM_ARRAY_TASK_MIN"),
               hi = env_integer("SLURM_ARRAY_TASK_MAX"), step = env_integer("SLURM_ARRAY_TASK_STEP");
    const long long first = lo.value_or(0), by = step.value_or(1);
    if (by < 1) throw UsageError(what + "SLURM_ARRAY_TASK_STEP must be >= 1");
    if (*id < first || (*id - first) % by != 0)
      throw UsageError(what + "SLURM_ARRAY_TASK_ID " + std::to_string(*id) + " is not in the array from SLURM_ARRAY_TASK_MIN " +
                       std::to_string(first) + " by " + std::to_string(by));
    index = (*id - first) / by;
    if (n) count = *n;
    else if (hi) count = (*hi - first) / by + 1;
    else throw UsageError(what + "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX");
    if (n && hi && *n != (*hi - first) / by + 1)
      throw UsageError(what + "SLURM_ARRAY_TASK_COUNT " + std::to_string(*n) + " disagrees with SLURM_ARRAY_TASK_MIN/MAX/STEP");
    if (shard_count != 0 && shard_count != count)
      throw UsageError(what + "--shard-count " + std::to_string(shard_count) + " disagrees with SLURM's array of " + std::to_string(count));
  } else if (const auto k = env_integer("JOB_COMPLETION_INDEX")) {
    if (shard_count == 0) throw UsageError(what + "JOB_COMPLETION_INDEX needs --shard-count N (the Job's completions)");
    index = *k;
    count = shard_count;
  } else {
    throw UsageError(what + "no scheduler index in the environment (SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX with --shard-count)");
  }
  if (count < 1 || count > 1000000 || index < 0 || index >= count)
    throw UsageError(what + "index " + std::to_string(index) + " is not in 0.." + std::to_string(count - 1));
  return {static_cast<int>(index), static_cast<int>(count)};
}

std::vector<nlohmann::json> open_run_records(const std::string& out_dir, const std::string& records,
                                             const std::string& settings_file, const nlohmann::json& settings, bool resume) {
  namespace fs = std::filesystem;
  const fs::path out(out_dir), settings_path = out / settings_file;
  const std::string path = (out / records).string();
  std::error_code ec;
  fs::create_directories(out, ec);
  if (!fs::is_directory(out)) throw UsageError(out_dir + ": cannot create output folder");
  std::vector<nlohmann::json> lines;
  if (!resume || !fs::exists(settings_path, ec)) {
    if (resume && fs::exists(path, ec) && fs::file_size(path, ec) > 0)
      throw UsageError(path + ": records without " + settings_file + "; their settings cannot be checked, use --overwrite");
    fs::remove(path, ec);
    write_file_atomic(settings_path.string(), settings.dump(2) + "\n");
    return lines;
  }
  nlohmann::json before;
  try {
    before = nlohmann::json::parse(read_file(settings_path.string()));
  } catch (const std::exception& e) {
    throw UsageError(settings_path.string() + ": unreadable (" + one_line_message(e) + "); use --overwrite to start over");
  }
  const std::string diff = settings_difference(before, settings);
  if (!diff.empty())
    throw UsageError(out_dir + ": its records were made with other settings (" + diff + "); use the same flags, or --overwrite to start over");
  drop_torn_line(path);
  if (!fs::exists(path, ec)) return lines;
  std::istringstream text(read_file(path));
  std::string line;
  while (std::getline(text, line)) {
    try {
      lines.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
      // not a record
    }
  }
  return lines;
}

double max_memory_bytes(const CommonOptions& o) {
  if (o.max_memory.empty()) return 0;
  try {
    return parse_memory_size(o.max_memory);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

double cache_max_bytes(const CommonOptions& o) {
  if (o.cache_max_size == "0") return 0;
  try {
    return parse_memory_size(o.cache_max_size);
  } catch (const Error& e) {
    throw UsageError(std::string("--cache-max-size") + std::string(e.what()).substr(std::string(e.what()).find(':')));
  }
}

std::string cache_dir(const CommonOptions& o) { return o.cache_dir.empty() ? AttentionCache::default_dir() : o.cache_dir; }

EngineOptions engine_options(const CommonOptions& o, const M2N2Flags& f) {
  EngineOptions e;
  try {
    e.device = parse_device(o.device);
  } catch (const Error& err) {
    throw UsageError(err.what());
  }
  e.params = f.params(e.device);
  e.source = o.source;
  e.grid = o.grid;
  e.cache_dir = o.no_cache ? "" : cache_dir(o);
  e.cache_max_bytes = cache_max_bytes(o);
  e.max_memory_bytes = max_memory_bytes(o);
  e.warn = log_warn;
  return e;
}

std::unique_ptr<Engine> make_engine(const CommonOptions& o, const M2N2Flags& f, int share) {
  EngineOptions e = engine_options(o, f);
  try {
    if (share > 1) {
      const double budget = e.max_memory_bytes > 0 ? e.max_memory_bytes : device_free_bytes(e.device);
      if (budget > 0) e.max_memory_bytes = budget / share;
    }
    return std::make_unique<Engine>(std::move(e));
  } catch (const MemoryError&) {
    throw;
  } catch (const Error& err) {
    throw UsageError(err.what());  // a bad --source is a usage error
  }
}

std::vector<std::unique_ptr<Engine>> make_job_engines(const CommonOptions& o, const M2N2Flags& f, int jobs) {
  check_range("--jobs", jobs, 1, 64);
  if (jobs > 1) set_num_threads(std::max(1, num_threads() / jobs));
  std::vector<std::unique_ptr<Engine>> engines;
  for (int j = 0; j < jobs; ++j) engines.push_back(make_engine(o, f, jobs));
  return engines;
}

void log_info(const std::string& message) { spdlog::info("{}", message); }
void log_warn(const std::string& message) { spdlog::warn("{}", message); }
void log_error(const std::string& message) { spdlog::error("{}", message); }

void check_range(const char* flag, long long value, long long lo, long long hi) {
  if (value < lo || value > hi)
    throw UsageError(std::string(flag) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                     std::to_string(value));
}

static bool stderr_is_tty() { return ::isatty(2) == 1; }

Progress::Progress(int total, bool enabled, std::string label)
    : total_(total), enabled_(enabled && stderr_is_tty()), label_(std::move(label)), start_(std::chrono::steady_clock::now()) {}

void Progress::update(int done, const std::string& extra, int total) {
  if (total >= 0) total_ = total;
  if (!enabled_) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = el > 0 ? done / el : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  const int width = 24;
  const int filled = total_ > 0 ? width * done / total_ : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r%s [%s] %d/%d  %.2f/s  ETA %.0fs  %s\033[K", label_.c_str(), bar.c_str(), done, total_, rate,
               eta, extra.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

// The library's field names and the flags that set them: the one table.
const std::map<std::string, std::string> kFlagOfField = {
    {"source", "--source"},
    {"grid", "--grid (default:grid)"},
    {"device", "--device"},
    {"precision", "--precision"},
    {"max_memory", "--max-memory"},
    {"max_side", "--max-side"},
    {"temperature", "--temperature"},
    {"ipf_iterations", "--ipf-iterations"},
    {"max_iterations", "--max-iterations"},
    {"threshold", "--markov-threshold"},
    {"spatial_sigma", "--jbu-spatial-sigma"},
    {"range_sigma", "--jbu-range-sigma"},
    {"max_area", "--max-area"},
    {"click", "--click"},
    {"protocol", "--protocol"},
    {"mask_format", "--mask-format"},
    {"max_clicks", "--max-clicks"},
    {"shard", "--shard"},
    {"anchors", "--anchors"},
    {"kl_thresholds", "--kl-thresholds"},
    {"power", "--power"},
    {"ncut.grid", "--ncut-grid"},
    {"min_size", "--min-size"},
    {"max_depth", "--max-depth"},
    {"tau", "--tau"},
    {"alpha", "--alpha"},
    {"graph", "--graph"},
    {"kl_precision", "--kl-precision"},
    {"exif", "--exif"},
    {"subset", "--subset"},
    {"export", "--export"},
    {"stop", "--stop"},
    {"matching", "--matching"},
    {"sample", "--sample"},
    {"restarts", "--restarts"},
    {"tolerance", "--tolerance"},
    {"categories", "--categories"},
    {"vote", "--vote"},
    {"high_norm", "--high-norm"},
    {"fg_rule", "--fg-rule"},
    {"refine", "--refine"},
    {"region_embed", "--region-embed"},
    {"classes", "--classes"},
    {"min_component", "--min-component"},
};

std::string flag_message(const std::string& m) {
  const size_t end = m.find_first_of(" :");
  if (end == std::string::npos) return m;
  const auto it = kFlagOfField.find(m.substr(0, end));
  return it == kFlagOfField.end() ? m : it->second + m.substr(end);
}

int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    spdlog::error("{}", flag_message(e.what()));
    return kUsage;
  } catch (const InvalidArgument& e) {
    spdlog::error("{}", flag_message(e.what()));
    return kUsage;
  } catch (const Error& e) {
    spdlog::error("{}", flag_message(e.what()));
    return kSomeFailed;
  } catch (const std::exception& e) {
    spdlog::error("{}", one_line_message(e));
    return kSomeFailed;
  }
}

}  // namespace m2n2::cli
