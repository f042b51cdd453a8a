// The engine (source, cache, parameters, device) and the per-image session.
#include "core/check.hpp"
#include "core/fault_injection.hpp"
#include "m2n2/m2n2.hpp"

#include <chrono>
#include <cstdio>
#include <optional>

#include "m2n2/core/memory.hpp"

namespace m2n2 {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void check_clicks_inside(const std::vector<Click>& clicks, cv::Size size) {
  // A coordinate as the user wrote it: 40 or 40.5, not 40.000000.
  const auto coordinate = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    return std::string(buf);
  };
  for (const auto& c : clicks) {
    const cv::Point p = click_pixel(c);
    if (p.x < 0 || p.y < 0 || p.x >= size.width || p.y >= size.height)
      throw Error("click (" + coordinate(c.x) + "," + coordinate(c.y) + ") is outside the " +
                  std::to_string(size.width) + "x" + std::to_string(size.height) + " image");
  }
}

// ------------------------------------------------------------------ Engine

// The engine's options, checked before anything is set up (messages name the field).
EngineOptions validated(EngineOptions o) {
  check_params(o.params);
  check::non_negative("cache_max_bytes", o.cache_max_bytes);
  check::non_negative("max_memory_bytes", o.max_memory_bytes);
  return o;
}

struct Engine::Impl {
  EngineOptions opt;
  SourceOptions source_options;
  std::unique_ptr<AttentionSource> source;
  std::unique_ptr<AttentionSource> cpu_source;  // made on the first CPU retry
  AttentionCache cache;

  explicit Impl(EngineOptions o) : opt(validated(std::move(o))), cache(opt.cache_dir) {
    if (opt.warn) cache.set_warn(opt.warn);
    cache.set_max_bytes(opt.cache_max_bytes);
    opt.params.op.device = opt.device;
    source_options.device = opt.device;
    source_options.grid = opt.grid;
    source_options.max_memory_bytes = opt.max_memory_bytes;
    source_options.warn = opt.warn;
    source = make_source(opt.source, source_options);
  }

  void warn(const std::string& m) const {
    if (opt.warn) opt.warn(m);
  }

  AttentionSource& cpu() {
    if (!cpu_source) {
      SourceOptions so = source_options;
      so.device = Device::Cpu;
      cpu_source = make_source(opt.source, so);
    }
    return *cpu_source;
  }

  // Attention → combined map → operator, on the device of `params`.
  // `given`: the attention the caller gave the session (then neither source nor cache).
  std::shared_ptr<const MarkovOperator> build(const cv::Mat& rgb, AttentionSource& src, const Attention* given,
                                              const OperatorParams& params, const std::string& name, SessionTimings& t) {
    inject_fault(name, params.device == Device::Cpu);
    auto t0 = std::chrono::steady_clock::now();
    AttentionMap m = given ? combine_for_m2n2(*given) : combine_for_m2n2(cache.get(src, rgb));
    t.attention = seconds_since(t0);
    if (opt.progress) opt.progress("operator", 0.5);
    // Checked against the memory of the device that will hold the operator.
    const bool gpu = resolve(params.device) == Device::Cuda;
    check_memory(operator_memory_bytes(m.tokens()), opt.max_memory_bytes, device_free_bytes(params.device),
                 gpu ? "GPU" : "host", "the Markov operator of a " + std::to_string(m.h) + "x" + std::to_string(m.w) + " grid",
                 "use a smaller grid (--grid, or export at a lower attention resolution)");
    t0 = std::chrono::steady_clock::now();
    auto op = std::make_shared<MarkovOperator>(std::move(m), params);
    t.op = seconds_since(t0);
    return op;
  }
};

Engine::Engine(EngineOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Engine::~Engine() = default;

std::unique_ptr<Session> Engine::open(const cv::Mat& rgb, const std::string& name) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw Error((name.empty() ? "image" : name) + ": not an 8-bit RGB image");
  return std::unique_ptr<Session>(new Session(*this, rgb, name));
}

Attention Engine::attention(const cv::Mat& rgb) { return impl_->cache.get(*impl_->source, rgb); }
AttentionMap Engine::combined_attention(const cv::Mat& rgb) { return combine_for_m2n2(attention(rgb)); }
const EngineOptions& Engine::options() const { return impl_->opt; }
const M2N2Params& Engine::params() const { return impl_->opt.params; }
std::string Engine::source_id() const { return impl_->source->id(); }
AttentionCache& Engine::cache() { return impl_->cache; }

// ------------------------------------------------------------------ Session

struct Session::Impl {
  Engine::Impl& engine;
  cv::Mat rgb, work;
  std::string name;
  std::unique_ptr<Segmenter> seg;
  std::optional<Attention> attention;  // kept once a whole-image method asked for it, or given
  bool given = false;                  // `attention` came with open(): no source, no cache
  SessionTimings timings;
  Device device = Device::Cpu;
  int expected_points = -1;

  Impl(Engine::Impl& e, const cv::Mat& image, std::string n)
      : engine(e), rgb(image), work(fit_max_side(image, e.opt.params.max_side)), name(std::move(n)) {}

  void progress(const char* stage, double f) const {
    if (engine.opt.progress) engine.opt.progress(stage, f);
  }

  void prepare() {
    if (seg) return;
    progress("attention", 0.0);
    OperatorParams op_params = engine.opt.params.op;
    std::shared_ptr<const MarkovOperator> op;
    try {
      op = engine.build(work, *engine.source, given ? &*attention : nullptr, op_params, name, timings);
    } catch (const MemoryError&) {
      throw;  // our own estimate: the same for every image, and no device will do better
    } catch (const std::exception& e) {
      if (engine.opt.device != Device::Auto || !is_out_of_memory(e) || dynamic_cast<const std::bad_alloc*>(&e)) throw;
      // Out of GPU memory: everything of this attempt is freed by now; once more on the CPU.
      engine.warn((name.empty() ? std::string("image") : name) + ": " + one_line_message(e) +
                  "; retrying this image on the CPU");
      op_params.device = Device::Cpu;
      op = engine.build(work, given ? *engine.source : engine.cpu(), given ? &*attention : nullptr, op_params, name,
                        timings);
    }
    device = op->device();
    M2N2Params p = engine.opt.params;
    p.op = op_params;
    auto s = std::make_unique<Segmenter>(work, op, p, rgb.size());
    s->expect_points(expected_points);
    progress("table", 0.8);
    const auto t0 = std::chrono::steady_clock::now();
    s->prepare_table();
    timings.table = seconds_since(t0);
    seg = std::move(s);
    progress("ready", 1.0);
  }

  Segmenter& segmenter() {
    prepare();
    return *seg;
  }

  const Attention& whole_image_attention() {
    if (!attention) {
      const auto t0 = std::chrono::steady_clock::now();
      inject_fault(name);
      attention = engine.cache.get(*engine.source, work);
      timings.attention = seconds_since(t0);
    }
    return *attention;
  }
};

std::unique_ptr<Session> Engine::open(const cv::Mat& rgb, Attention attention, const std::string& name) {
  const std::string prefix = name.empty() ? "" : name + ": ";
  const auto what = [&](const std::string& n) { return prefix + (n.empty() ? "attention" : n); };
  if (attention.maps.empty()) throw InvalidArgument(what("") + ": no maps");
  for (const auto& m : attention.maps) validate_attention_values(m, what(m.name));
  for (const auto& f : attention.features) validate_feature(f, what(f.name));
  // As every source's attention is on its way through the cache: the session then equals
  // one whose source delivered these maps (file:, torchscript:) bit for bit.
  round_to_fp16(attention);
  auto session = open(rgb, name);
  session->impl_->attention = std::move(attention);
  session->impl_->given = true;
  return session;
}

Session::Session(Engine& engine, const cv::Mat& rgb, std::string name)
    : impl_(std::make_unique<Impl>(*engine.impl_, rgb, std::move(name))) {}
Session::~Session() = default;

void Session::prepare() { impl_->prepare(); }
bool Session::prepared() const { return impl_->seg != nullptr; }
void Session::expect_points(int n) {
  impl_->expected_points = n;
  if (impl_->seg) impl_->seg->expect_points(n);
}
cv::Size Session::size() const { return impl_->rgb.size(); }
cv::Size Session::working_size() const { return impl_->work.size(); }
const std::string& Session::name() const { return impl_->name; }

Segmenter::Result Session::segment(const std::vector<Click>& clicks) { return impl_->segmenter().segment(clicks); }
void Session::prepare_points(const std::vector<cv::Point>& points) { impl_->segmenter().prepare(points); }
void Session::prepare_clicks(const std::vector<Click>& clicks) {
  std::vector<cv::Point> points;
  for (const auto& c : clicks) points.push_back(click_pixel(c));
  prepare_points(points);
}
cv::Mat Session::markov_map(cv::Point p) { return impl_->segmenter().lowres_markov_map(p).clone(); }
cv::Mat Session::distance_map(cv::Point p) { return impl_->segmenter().distance_map(p); }
void Session::clear_points() {
  if (impl_->seg) impl_->seg->clear_cache();
}
size_t Session::cached_points() const { return impl_->seg ? impl_->seg->cached_points() : 0; }

AutoResult Session::diffseg(const DiffSegParams& params) {
  const Attention& att = impl_->whole_image_attention();
  return m2n2::diffseg(att, impl_->work.rows, impl_->work.cols, params);
}

AutoResult Session::ncut(const NcutParams& params) {
  const Attention& att = impl_->whole_image_attention();
  return walk_ncut(att, impl_->work.rows, impl_->work.cols, params);
}

const Attention& Session::attention() { return impl_->whole_image_attention(); }
SessionTimings Session::timings() const { return impl_->timings; }

double Session::memory_bytes() const {
  const auto& I = *impl_;
  double bytes = static_cast<double>(I.rgb.total() * I.rgb.elemSize());
  if (I.work.data != I.rgb.data) bytes += static_cast<double>(I.work.total() * I.work.elemSize());
  if (I.seg) bytes += I.seg->memory_bytes();
  if (I.attention)
    for (const auto& m : I.attention->maps) bytes += 4.0 * static_cast<double>(attention_values(m));
  return bytes;
}
Device Session::device() const { return impl_->device; }

}  // namespace m2n2
