#include "common.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"
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

int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    spdlog::error("{}", e.what());
    return kUsage;
  } catch (const InvalidArgument& e) {
    spdlog::error("{}", e.what());
    return kUsage;
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kSomeFailed;
  } catch (const std::exception& e) {
    spdlog::error("{}", one_line_message(e));
    return kSomeFailed;
  }
}

}  // namespace m2n2::cli
