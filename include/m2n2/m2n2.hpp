// m2n2 — training-free interactive segmentation from diffusion (and ViT) attention.
//
// The one header a front end includes. An Engine is set up once (attention source,
// cache, parameters, device); a Session holds one image's expensive state — its
// attention, Markov operator and upsampling table — computed once and reused by every
// click:
//
//   m2n2::Engine engine(m2n2::EngineOptions{});           // embedded default source
//   auto session = engine.open(m2n2::read_rgb("cat.jpg").rgb);
//   auto result = session->segment({{120, 80, true}});     // result.mask: CV_8U 0/255
//
// The library never prints: warnings go to EngineOptions::warn, progress to
// EngineOptions::progress, and timings come back in Session::timings(). An engine and
// its sessions are used by one thread at a time; several engines may work at once, each
// on a thread of its own (as `segment --jobs` does).
//
// Lifetimes: a Session refers to the Engine that opened it and must not outlive it
// (destroy every session first). Results (masks, maps, AutoResult) are plain values that
// own their data. Bad options or parameters throw InvalidArgument naming the field.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/attention/attention.hpp"
#include "m2n2/attention/attention_cache.hpp"
#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/interactive/segmenter.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/whole_image/diffseg.hpp"
#include "m2n2/whole_image/walk_ncut.hpp"

namespace m2n2 {

// Stages reported while a session is prepared: "attention", "operator", "table",
// "ready"; `fraction` is the share of the preparation done (0..1).
using ProgressFn = std::function<void(const std::string& stage, double fraction)>;
using WarnFn = std::function<void(const std::string& message)>;

struct EngineOptions {
  // "default[:key=value,...]", "torchscript:PATH" or "file:PATH" (see make_source).
  std::string source = "default";
  Device device = Device::Auto;
  int grid = 0;                 // token grid of the default source (0 = its default)
  std::string cache_dir;        // attention cache folder; "" = no cache
  double cache_max_bytes = 20.0 * (1 << 30);  // size cap, least recently used evicted (0 = none)
  double max_memory_bytes = 0;  // refuse work above this (0 = what the device reports free)
  M2N2Params params;            // the authors' defaults
  WarnFn warn;                  // one-line warnings (empty = dropped)
  ProgressFn progress;          // session preparation (empty = none)
};

struct SessionTimings {
  double attention = 0;  // seconds: source or cache
  double op = 0;         // temperature + Sinkhorn
  double table = 0;      // upsampling table
  double total() const { return attention + op + table; }
};

class Session;

class Engine {
 public:
  // Throws Error on a bad source specification (naming it).
  explicit Engine(EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The session of one image (CV_8UC3, RGB). Nothing is computed until the session is
  // first used (or prepare() is called). `name` is used in messages.
  std::unique_ptr<Session> open(const cv::Mat& rgb, const std::string& name = "");
  // The session of an image whose attention the caller computed (e.g. in Python): it
  // takes the place of the source and the cache for this image, and is combined for
  // M2N2 as the source's would be (rounded to fp16 first, as the cache keeps every
  // source's attention). Throws Error naming the first invalid map.
  std::unique_ptr<Session> open(const cv::Mat& rgb, Attention attention, const std::string& name = "");

  // An image's attention as the source delivers it (through the cache).
  Attention attention(const cv::Mat& rgb);
  // The one map M2N2 uses (combine_for_m2n2 of the above), e.g. for export as .npy.
  AttentionMap combined_attention(const cv::Mat& rgb);

  const EngineOptions& options() const;
  const M2N2Params& params() const;
  std::string source_id() const;
  AttentionCache& cache();

 private:
  friend class Session;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Computes the attention, operator and upsampling table now (reporting progress);
  // otherwise the first click does. With Device::Auto an out-of-memory failure on the
  // GPU is retried once on the CPU (with a warning).
  void prepare();
  bool prepared() const;
  // How many distinct click points this image will get, when known before prepare()
  // (e.g. from a click file). With at most one, no upsampling table is built: its one
  // map is filtered directly, which is cheaper. Unknown (the default) builds the table.
  void expect_points(int n);

  cv::Size size() const;          // the image's size: clicks and results are in its pixels
  cv::Size working_size() const;  // the size the method works at (M2N2Params::max_side)
  const std::string& name() const;

  // The mask from all clicks, the soft map and the per-click threshold choices.
  Segmenter::Result segment(const std::vector<Click>& clicks);
  // Computes the maps of several points in one batched Markov run.
  void prepare_points(const std::vector<cv::Point>& points);
  void prepare_clicks(const std::vector<Click>& clicks);
  // The grid Markov-map of a point (iteration counts, h×w CV_32F).
  cv::Mat markov_map(cv::Point p);
  // The distance map of a point at image size, in [0, 1], CV_32F.
  cv::Mat distance_map(cv::Point p);
  // Forgets the per-point maps (the operator and table stay).
  void clear_points();
  size_t cached_points() const;

  // Whole-image methods on the same image's attention (computed once, then kept).
  AutoResult diffseg(const DiffSegParams& params);
  AutoResult ncut(const NcutParams& params);
  const Attention& attention();

  SessionTimings timings() const;
  // Bytes this session holds (image, operator, table, cached maps, kept attention);
  // what a front end that keeps several sessions weighs against its memory budget.
  double memory_bytes() const;
  // Where the operator lives (Device::Cuda or Device::Cpu) once prepared.
  Device device() const;

 private:
  friend class Engine;
  Session(Engine& engine, const cv::Mat& rgb, std::string name);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Throws Error("click (x,y) is outside the WxH image") for the first click outside `size`.
void check_clicks_inside(const std::vector<Click>& clicks, cv::Size size);

}  // namespace m2n2
