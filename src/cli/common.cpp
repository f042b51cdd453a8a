#include "common.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"

namespace m2n2::cli {

M2N2Params M2N2Flags::params(Device device) const {
  M2N2Params p;
  p.op.temperature = temperature;
  p.op.ipf_iterations = ipf_iterations;
  p.op.device = device;
  p.op.precision = parse_precision(precision);
  p.markov.threshold = markov_threshold;
  p.markov.max_iterations = max_iterations;
  p.markov.linear_interpolation = !no_interpolation;
  p.jbu.spatial_sigma = jbu_spatial_sigma;
  p.jbu.range_sigma = jbu_range_sigma;
  p.flood_fill = !no_flood_fill;
  p.scoring.max_area = max_area;
  p.scoring.use_prior = !no_prior;
  p.scoring.use_edge = !no_edge;
  p.scoring.use_pos = !no_pos;
  p.scoring.use_neg = !no_neg;
  p.max_side = max_side;
  if (max_side != 0) check_range("--max-side", max_side, 16, 1 << 16);
  if (!(temperature > 0) || !std::isfinite(temperature)) throw UsageError("--temperature must be a finite number > 0");
  check_range("--ipf-iterations", ipf_iterations, 0, 100000);
  check_range("--max-iterations", max_iterations, 1, 100000);
  if (!(markov_threshold > 0 && markov_threshold < 1)) throw UsageError("--markov-threshold must be in (0, 1)");
  if (!(jbu_spatial_sigma > 0) || !(jbu_range_sigma > 0)) throw UsageError("--jbu-spatial-sigma and --jbu-range-sigma must be > 0");
  if (!(max_area > 0 && max_area <= 1)) throw UsageError("--max-area must be in (0, 1]");
  return p;
}

void add_common(CLI::App* app, CommonOptions& o, bool with_source) {
  if (with_source) {
    app->add_option("--source", o.source, "Attention source: default[:key=value,...], torchscript:PATH or file:PATH")
        ->capture_default_str();
    app->add_option("--grid", o.grid, "Token grid of the default source (default 64)");
    app->add_option("--cache-dir", o.cache_dir, "Attention cache folder (default $M2N2_CACHE_DIR or ~/.cache/m2n2)");
    app->add_flag("--no-cache", o.no_cache, "Do not read or write the attention cache");
  }
  app->add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  app->add_option("--threads", o.threads, "Worker threads (0 = all cores)")->capture_default_str();
  app->add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off")->capture_default_str();
  app->add_flag("-q,--quiet", o.quiet, "Only errors on stderr, no progress bar");
  app->add_option("--max-memory", o.max_memory, "Refuse work needing more memory than this (e.g. 4G)");
}

void add_m2n2_flags(CLI::App* app, M2N2Flags& f) {
  const std::string g = "M2N2 (defaults = the authors' code)";
  app->add_option("--temperature", f.temperature, "Attention temperature T")->capture_default_str()->group(g);
  app->add_option("--ipf-iterations", f.ipf_iterations, "Sinkhorn/IPF iterations")->capture_default_str()->group(g);
  app->add_option("--markov-threshold", f.markov_threshold, "Relative probability threshold")->capture_default_str()->group(g);
  app->add_option("--max-iterations", f.max_iterations, "Markov iterations at most")->capture_default_str()->group(g);
  app->add_flag("--no-interpolation", f.no_interpolation, "Integer crossing steps (no linear interpolation)")->group(g);
  app->add_option("--jbu-spatial-sigma", f.jbu_spatial_sigma, "Upsampling spatial sigma (grid cells)")->capture_default_str()->group(g);
  app->add_option("--jbu-range-sigma", f.jbu_range_sigma, "Upsampling range sigma (RGB in [0,1])")->capture_default_str()->group(g);
  app->add_flag("--no-flood-fill", f.no_flood_fill, "Skip the min-max flood fill")->group(g);
  app->add_option("--max-area", f.max_area, "Area prior: largest segment fraction")->capture_default_str()->group(g);
  app->add_flag("--no-prior", f.no_prior, "Drop the area prior term")->group(g);
  app->add_flag("--no-edge", f.no_edge, "Drop the boundary gradient term")->group(g);
  app->add_flag("--no-pos", f.no_pos, "Drop the positive clicks term")->group(g);
  app->add_flag("--no-neg", f.no_neg, "Drop the negative clicks term")->group(g);
  app->add_option("--max-side", f.max_side,
                  "Segment images larger than this at this longer side (attention, upsampling, scoring); masks at full size. 0 = off")
      ->capture_default_str()
      ->group(g);
  app->add_option("--precision", f.precision, "Operator storage on CUDA: fp32, fp16 or bf16 (CPU is always fp32)")
      ->capture_default_str()
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

Pipeline::Pipeline(const CommonOptions& o, const M2N2Flags& f)
    : opt_(o), cache_(o.no_cache ? "" : (o.cache_dir.empty() ? AttentionCache::default_dir() : o.cache_dir)) {
  Device dev;
  try {
    dev = parse_device(o.device);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  params_ = f.params(dev);
  cache_.set_warn([](const std::string& message) { spdlog::warn("{}", message); });
  SourceOptions& so = source_options_;
  so.device = dev;
  so.grid = o.grid;
  so.max_memory_bytes = max_memory_bytes(o);
  so.warn = [](const std::string& message) { spdlog::warn("{}", message); };
  try {
    source_ = make_source(o.source, so);
  } catch (const MemoryError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(e.what());  // a bad --source is a usage error
  }
}

Attention Pipeline::attention(const cv::Mat& rgb) { return cache_.get(*source_, rgb); }

std::shared_ptr<const MarkovOperator> Pipeline::build(const cv::Mat& rgb, AttentionSource& source,
                                                      const M2N2Params& params, const std::string& name) {
  inject_fault(name, params.op.device == Device::Cpu);
  Attention att = cache_.get(source, rgb);
  AttentionMap m = combine_for_m2n2(att);
  att = Attention();  // the combined map is all the operator needs
  check_memory(operator_memory_bytes(m.tokens()), max_memory_bytes(opt_),
               "the Markov operator of a " + std::to_string(m.h) + "x" + std::to_string(m.w) + " grid",
               "use a smaller grid (--grid, or export at a lower attention resolution)");
  return std::make_shared<MarkovOperator>(m, params.op);
}

std::shared_ptr<const MarkovOperator> Pipeline::prepare(const cv::Mat& rgb, double* seconds, const std::string& name) {
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<const MarkovOperator> op;
  try {
    op = build(rgb, *source_, params_, name);
  } catch (const MemoryError&) {
    throw;  // our own estimate: the same for every image, and no device will do better
  } catch (const std::exception& e) {
    if (opt_.device != "auto" || !is_out_of_memory(e) || dynamic_cast<const std::bad_alloc*>(&e)) throw;
    // Out of GPU memory: everything of this attempt is freed by now; once more on the CPU.
    spdlog::warn("{}: {}; retrying this image on the CPU", name.empty() ? "image" : name, one_line_message(e));
    if (!cpu_source_) {
      SourceOptions so = source_options_;
      so.device = Device::Cpu;
      cpu_source_ = make_source(opt_.source, so);
    }
    M2N2Params p = params_;
    p.op.device = Device::Cpu;
    op = build(rgb, *cpu_source_, p, name);
  }
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return op;
}

std::unique_ptr<Segmenter> Pipeline::session(const cv::Mat& rgb, double* seconds, const std::string& name) {
  const cv::Mat work = fit_max_side(rgb, params_.max_side);
  auto op = prepare(work, seconds, name);
  return std::make_unique<Segmenter>(work, op, params_, rgb.size());
}

void check_range(const char* flag, long long value, long long lo, long long hi) {
  if (value < lo || value > hi)
    throw UsageError(std::string(flag) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                     std::to_string(value));
}

std::pair<int, int> parse_shard(const std::string& s, const char* flag) {
  int i = 0, n = 1;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || i < 0 || i >= n)
    throw UsageError(std::string(flag) + ": expected I/N with 0 <= I < N, got '" + s + "'");
  return {i, n};
}

Click parse_click(const std::string& s) {
  const auto a = s.find(','), b = s.rfind(',');
  if (a == std::string::npos || a == b) throw UsageError("--click: expected X,Y,+ or X,Y,-, got '" + s + "'");
  Click c;
  try {
    size_t p1, p2;
    const std::string xs = s.substr(0, a), ys = s.substr(a + 1, b - a - 1);
    c.x = std::stod(xs, &p1);
    c.y = std::stod(ys, &p2);
    if (p1 != xs.size() || p2 != ys.size()) throw 0;
  } catch (...) {
    throw UsageError("--click: coordinates of '" + s + "' are not numbers");
  }
  if (!std::isfinite(c.x) || !std::isfinite(c.y)) throw UsageError("--click: coordinates of '" + s + "' must be finite");
  const std::string l = s.substr(b + 1);
  if (l == "+" || l == "pos" || l == "1" || l == "p") c.positive = true;
  else if (l == "-" || l == "neg" || l == "0" || l == "n") c.positive = false;
  else throw UsageError("--click: label of '" + s + "' must be + or -");
  return c;
}

cv::Point2d parse_point(const std::string& s) {
  const auto a = s.find(',');
  if (a == std::string::npos) throw UsageError("expected X,Y, got '" + s + "'");
  try {
    size_t p1, p2;
    const std::string xs = s.substr(0, a), ys = s.substr(a + 1);
    const double x = std::stod(xs, &p1), y = std::stod(ys, &p2);
    if (p1 != xs.size() || p2 != ys.size() || !std::isfinite(x) || !std::isfinite(y)) throw 0;
    return {x, y};
  } catch (...) {
    throw UsageError("expected X,Y with finite numbers, got '" + s + "'");
  }
}

bool stderr_is_tty() { return ::isatty(2) == 1; }

Progress::Progress(int total, bool enabled, std::string label)
    : total_(total), enabled_(enabled && stderr_is_tty()), label_(std::move(label)), start_(std::chrono::steady_clock::now()) {}

void Progress::update(int done, const std::string& extra) {
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
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kSomeFailed;
  } catch (const std::exception& e) {
    spdlog::error("{}", one_line_message(e));
    return kSomeFailed;
  }
}

}  // namespace m2n2::cli
