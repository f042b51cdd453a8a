// The authors' scale on the CPU: attention at grid 128 (N = 16384, 1 GiB fp32) from a
// .npy through the engine to the operator, one click and one Markov step, with the
// process's peak resident memory. Two processes, so that making the fixture does not
// count towards the measured peak:
//   ./build/tests/m2n2_bench_grid128 make /tmp/att128.npy     # synthetic attention, 1 GiB
//   ./build/tests/m2n2_bench_grid128 run /tmp/att128.npy [repetitions]   (any grid's .npy)
//   ./build/tests/m2n2_bench_grid128 cache SOURCE [GRID]   # attention cache: miss vs hit
//   ./build/tests/m2n2_bench_grid128 precision /tmp/att128.npy [clicks] [encodings]
//     masks and distance maps per click with fp16, bf16, fp16-row against fp32
//   ./build/tests/m2n2_bench_grid128 targets A64.npy IMAGE [repetitions]
//     issue 18's in-process per-image targets (any grid's .npy; 854x480 grid 64 for them),
//     each figure beside its target; scripts/bench_targets.sh adds the whole-process ones
//   ./build/tests/m2n2_bench_grid128 image480 IN.png OUT.png   # IN resized to 854x480 (area)
// The fixture is a softmax of scaled dot products of smooth random token features
// (rows peaked on a few hundred keys, the rest tiny), as diffusion self-attention is.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/eval/click_simulator.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/interactive/upsampling.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/m2n2.hpp"

using namespace m2n2;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kGrid = 128;
constexpr double kTargetPeakGiB = 2.5;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

// Smooth token features: random low-frequency waves over the grid, plus a little noise.
std::vector<float> features(int d) {
  const int n = kGrid * kGrid;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> feat(static_cast<size_t>(n) * d);
  std::vector<float> fx(d), fy(d), ph(d);
  for (int k = 0; k < d; ++k) {
    fx[k] = g(rng) * 0.08f;
    fy[k] = g(rng) * 0.08f;
    ph[k] = g(rng) * 3.f;
  }
  for (int y = 0; y < kGrid; ++y)
    for (int x = 0; x < kGrid; ++x)
      for (int k = 0; k < d; ++k)
        feat[static_cast<size_t>(y * kGrid + x) * d + k] = std::cos(fx[k] * x + fy[k] * y + ph[k]) + 0.1f * g(rng);
  return feat;
}

int make(const std::string& path, float scale) {
  const int n = kGrid * kGrid, d = 32;
  const std::vector<float> feat = features(d);
  // `scale` sets how peaked the rows are (see the effective support below): 0.6 by default.
  std::vector<float> att(static_cast<size_t>(n) * n);
  double support = 0;
#pragma omp parallel for reduction(+ : support) schedule(static)
  for (int i = 0; i < n; ++i) {
    float* row = att.data() + static_cast<size_t>(i) * n;
    const float* fi = feat.data() + static_cast<size_t>(i) * d;
    float mx = -1e30f;
    for (int j = 0; j < n; ++j) {
      const float* fj = feat.data() + static_cast<size_t>(j) * d;
      float s = 0;
      for (int k = 0; k < d; ++k) s += fi[k] * fj[k];
      row[j] = s * scale;
      mx = std::max(mx, row[j]);
    }
    double sum = 0;
    for (int j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - mx));
    double sq = 0;
    for (int j = 0; j < n; ++j) {
      row[j] = static_cast<float>(row[j] / sum);
      sq += static_cast<double>(row[j]) * row[j];
    }
    support += 1.0 / sq;
  }
  write_npy(path, att.data(), {kGrid, kGrid, kGrid, kGrid});
  std::printf("wrote %s: %dx%d grid, mean effective support %.0f keys per row (1/sum p^2)\n", path.c_str(), kGrid,
              kGrid, support / n);
  return 0;
}

int run(const std::string& path, int reps) {
  set_num_threads(0);
  cv::Mat rgb(480, 854, CV_8UC3);
  cv::randu(rgb, 0, 255);
  cv::GaussianBlur(rgb, rgb, cv::Size(0, 0), 6);
  std::vector<double> prep, att, op, table, click, step;
  int grid = 0;
  for (int r = 0; r < reps; ++r) {
    EngineOptions eo;
    eo.source = "file:" + path;  // read and checked when the engine is set up
    eo.device = Device::Cpu;
    const auto t0 = Clock::now();
    Engine engine(eo);
    const double load = since(t0);
    auto session = engine.open(rgb, "bench");
    session->prepare();
    const SessionTimings t = session->timings();
    prep.push_back(load + t.total());
    att.push_back(load + t.attention);
    op.push_back(t.op);
    table.push_back(t.table);
    auto t1 = Clock::now();
    session->segment({{427, 240, true}});
    click.push_back(since(t1));
    t1 = Clock::now();
    session->segment({{427, 240, true}, {100, 100, false}});
    step.push_back(since(t1));  // one more click: one batched Markov run of the new point
    grid = session->markov_map({427, 240}).rows;
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double peak = peak_rss_gib();
  std::printf("grid %d on the CPU (N = %d), 854x480 image, %d repetition(s), medians:\n", grid, grid * grid, reps);
  std::printf("  attention (.npy read + checks)        %7.2f s\n", median(att));
  std::printf("  operator (temperature + 200 Sinkhorn) %7.2f s\n", median(op));
  std::printf("  upsampling table                      %7.2f s\n", median(table));
  std::printf("  image preparation in all              %7.2f s\n", median(prep));
  std::printf("  first click (Markov-map + maps)       %7.2f s\n", median(click));
  std::printf("  second click                          %7.2f s\n", median(step));
  std::printf("  peak RSS                              %7.2f GiB  (target <= %.1f GiB: %s)\n", peak, kTargetPeakGiB,
              peak <= kTargetPeakGiB ? "met" : "NOT met");
  return peak <= kTargetPeakGiB ? 0 : 1;
}

// Whether the attention cache pays: one computation (a miss, which also writes the
// entry) against reading it back (hits, median of 3), for a source at a grid.
int cache(const std::string& source, int grid) {
  set_num_threads(0);
  cv::Mat rgb(480, 854, CV_8UC3);
  cv::randu(rgb, 0, 255);
  cv::GaussianBlur(rgb, rgb, cv::Size(0, 0), 6);
  char dir[] = "/tmp/m2n2-cache-bench-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  EngineOptions eo;
  eo.source = source;
  eo.grid = grid;
  eo.device = Device::Cpu;
  eo.cache_dir = dir;
  Engine engine(eo);
  auto t0 = Clock::now();
  Attention a = engine.attention(rgb);
  const double miss = since(t0);
  double values = 0;
  for (const auto& m : a.maps) values += static_cast<double>(attention_values(m));
  std::vector<double> hits;
  for (int i = 0; i < 3; ++i) {
    t0 = Clock::now();
    a = engine.attention(rgb);
    hits.push_back(since(t0));
  }
  std::sort(hits.begin(), hits.end());
  std::printf("%s grid %d: %zu maps, %.0f MiB in the cache (fp16); compute + write %.3f s, hit %.3f s (%.1fx)\n",
              source.c_str(), grid, a.maps.size(), values * 2 / 1048576, miss, hits[1], miss / hits[1]);
  engine.cache().clear();
  rmdir(dir);
  return 0;
}

// ------------------------------------------------------------- precision at grid 128
// Attention encodings, applied as a round trip (what comes back from storage).
struct Encoding {
  const char* name;
  double bytes_per_value;
  void (*round)(std::vector<float>& v, int64_t n);
  // The operator's storage (--precision); "op-fp16" is the CPU's fp16 operator on the
  // fp32 attention: its bytes per value are the operator's.
  Precision op = Precision::Float32;
};

void keep_fp32(std::vector<float>&, int64_t) {}
// What m2n2 does to every computed attention (and stores in the cache): the engine's own
// round_to_fp16, so that the check below is of the code in use.
void round_fp16(std::vector<float>& v, int64_t) {
  Attention a;
  a.maps.emplace_back();
  a.maps[0].h = a.maps[0].w = kGrid;
  a.maps[0].data.swap(v);
  round_to_fp16(a);
  v.swap(a.maps[0].data);
}
void round_bf16(std::vector<float>& v, int64_t) {
  for (auto& x : v) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    b = (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;  // round to nearest even
    std::memcpy(&x, &b, 4);
  }
}
// fp16 of each row divided by its maximum (one fp32 scale per row): relative precision
// 2^-11 down to 6e-5 of the row's peak instead of down to 6e-5 absolute.
void round_fp16_row(std::vector<float>& v, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float* row = v.data() + i * n;
    const float mx = *std::max_element(row, row + n);
    if (!(mx > 0)) continue;
    for (int64_t j = 0; j < n; ++j) row[j] = half_to_float(float_to_half(row[j] / mx)) * mx;
  }
}

// The masks and distance maps of every click of the m2n2 NoC protocol with the attention
// kept in fp32 and with each encoding: the clicks are those of the fp32 run, replayed.
// `only`: a comma-separated list of encodings (fp32 always runs); the exit code is 1 when
// one of them does not keep the masks.
int precision(const std::string& path, int n_clicks, const std::string& only) {
  set_num_threads(0);
  NpyArray arr = read_npy(path);
  if (arr.shape.size() != 4 || arr.shape[0] != kGrid) {
    std::fprintf(stderr, "%s: expected the grid-%d fixture (make)\n", path.c_str(), kGrid);
    return 2;
  }
  const int n = kGrid * kGrid;
  // A guide image and a ground truth that follow the fixture's token features.
  const std::vector<float> feat = features(32);
  cv::Mat small(kGrid, kGrid, CV_8UC3), obj(kGrid, kGrid, CV_8U);
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c)
      small.at<cv::Vec3b>(i / kGrid, i % kGrid)[c] =
          cv::saturate_cast<uint8_t>((feat[static_cast<size_t>(i) * 32 + c] + 1.2f) * 106.f);
    obj.at<uint8_t>(i / kGrid, i % kGrid) = feat[static_cast<size_t>(i) * 32 + 3] > 0.2f ? 255 : 0;
  }
  cv::Mat rgb, gt, labels;
  cv::resize(small, rgb, cv::Size(512, 512), 0, 0, cv::INTER_CUBIC);
  cv::connectedComponents(obj, labels, 4);
  // The component under the most object pixels near the centre.
  int best = labels.at<int>(kGrid / 2, kGrid / 2);
  if (best == 0) {
    double mx;
    cv::Point at;
    cv::Mat d;
    cv::distanceTransform(obj, d, cv::DIST_L2, 3);
    cv::minMaxLoc(d, nullptr, &mx, nullptr, &at);
    best = labels.at<int>(at);
  }
  cv::resize(labels == best, gt, rgb.size(), 0, 0, cv::INTER_NEAREST);

  const Encoding encodings[] = {{"fp32", 4, keep_fp32}, {"fp16", 2, round_fp16}, {"bf16", 2, round_bf16},
                                {"fp16-row", 2.0 + 4.0 / n, round_fp16_row},
                                {"op-fp16", 2, keep_fp32, Precision::Float16}};
  M2N2Params params;
  std::vector<Click> clicks;
  std::vector<cv::Mat> ref_masks, ref_maps;
  std::printf("grid %d (N = %d), 512x512 guide, m2n2 protocol, %d clicks; against fp32 per click:\n", kGrid, n, n_clicks);
  std::printf("  %-9s %6s %9s %9s %12s %9s  %s\n", "encoding", "B/value", "min IoU", "mean IoU", "max |dd|", "op s",
              "keeps masks (IoU >= 0.995, |dd| <= 1e-3)");
  bool all_keep = true;
  for (const auto& e : encodings) {
    if (std::string(e.name) != "fp32" && !only.empty() && ("," + only + ",").find("," + std::string(e.name) + ",") == std::string::npos)
      continue;
    AttentionMap m;
    m.name = "fixture";
    m.h = m.w = kGrid;
    m.data = arr.data;
    e.round(m.data, n);
    OperatorParams op_params = params.op;
    op_params.precision = e.op;
    const auto t0 = Clock::now();
    auto op = std::make_shared<MarkovOperator>(std::move(m), op_params);
    const double op_s = since(t0);
    Segmenter seg(rgb, op, params);
    double min_iou = 1, sum_iou = 0, max_dd = 0;
    cv::Mat pred = cv::Mat::zeros(rgb.size(), CV_8U);
    for (int k = 0; k < n_clicks; ++k) {
      if (ref_masks.size() <= static_cast<size_t>(k)) {  // the fp32 run makes the clicks
        const SimulatedClick c = next_click(gt, pred, cv::Mat(), {}, Protocol::M2N2);
        clicks.push_back({static_cast<double>(c.x), static_cast<double>(c.y), c.positive});
      }
      const std::vector<Click> upto(clicks.begin(), clicks.begin() + k + 1);
      pred = seg.segment(upto).mask;
      const cv::Mat dist = seg.distance_map(click_pixel(clicks[k]));
      if (ref_masks.size() <= static_cast<size_t>(k)) {
        ref_masks.push_back(pred.clone());
        ref_maps.push_back(dist.clone());
        continue;
      }
      const double inter = cv::countNonZero(pred & ref_masks[k]), uni = cv::countNonZero(pred | ref_masks[k]);
      const double iou = uni > 0 ? inter / uni : 1.0;
      min_iou = std::min(min_iou, iou);
      sum_iou += iou;
      max_dd = std::max(max_dd, cv::norm(dist, ref_maps[k], cv::NORM_INF));
    }
    const bool keeps = min_iou >= 0.995 && max_dd <= 1e-3;
    if (std::string(e.name) != "fp32") all_keep = all_keep && keeps;
    if (std::string(e.name) == "fp32")
      std::printf("  %-9s %6.2f %9s %9s %12s %9.1f  (reference)\n", e.name, e.bytes_per_value, "-", "-", "-", op_s);
    else
      std::printf("  %-9s %6.2f %9.4f %9.4f %12.3g %9.1f  %s\n", e.name, e.bytes_per_value, min_iou, sum_iou / n_clicks,
                  max_dd, op_s, keeps ? "yes" : "NO");
    std::fflush(stdout);
  }
  double gt_iou = 0;
  {
    const double inter = cv::countNonZero(ref_masks.back() & gt), uni = cv::countNonZero(ref_masks.back() | gt);
    gt_iou = inter / std::max(1.0, uni);
  }
  std::printf("  (fp32 mask vs the fixture's ground truth after %d clicks: IoU %.3f)\n", n_clicks, gt_iou);
  return all_keep ? 0 : 1;
}

}  // namespace

// The per-image stages of issue 18 at 854x480 and grid 64 (medians of `reps`), each
// printed beside its target; the reference figures are in docs/.
int targets(const std::string& npy, const std::string& image, int reps) {
  set_num_threads(0);
  const cv::Mat rgb = read_rgb(image).rgb;
  std::vector<double> load, sinkhorn, sinkhorn16, temperature, table, source, click;
  AttentionMap map;
  for (int r = 0; r < reps; ++r) {
    EngineOptions eo;
    eo.source = "file:" + npy;  // read and checked when the engine is set up
    eo.device = Device::Cpu;
    auto t0 = Clock::now();
    Engine engine(eo);
    map = engine.combined_attention(rgb);
    load.push_back(since(t0));
    OperatorParams p0;
    p0.device = Device::Cpu;
    p0.ipf_iterations = 0;
    {  // the copies the operator takes over are made outside the timings
      AttentionMap a = map;
      t0 = Clock::now();
      MarkovOperator op(std::move(a), p0);
      temperature.push_back(since(t0));
    }
    {
      OperatorParams p = p0;
      p.ipf_iterations = OperatorParams{}.ipf_iterations;
      AttentionMap a = map;
      t0 = Clock::now();
      MarkovOperator op(std::move(a), p);
      sinkhorn.push_back(since(t0) - temperature.back());
    }
    {  // --precision fp16: one iteration in fp32, the fp16 conversion, 199 on fp16
      OperatorParams p = p0;
      p.ipf_iterations = OperatorParams{}.ipf_iterations;
      p.precision = Precision::Float16;
      AttentionMap a = map;
      t0 = Clock::now();
      MarkovOperator op(std::move(a), p);
      sinkhorn16.push_back(since(t0) - temperature.back());
    }
    t0 = Clock::now();
    { JointBilateralUpsampler u(rgb, map.h, map.w, JbuParams{}); }
    table.push_back(since(t0));
    DefaultSourceSettings ds;
    ds.grid = map.h;
    t0 = Clock::now();
    default_attention(rgb, ds);
    source.push_back(since(t0));
    auto session = engine.open(rgb, "bench");
    session->prepare();
    t0 = Clock::now();
    session->segment({{rgb.cols / 2.0, rgb.rows / 2.0, true}});
    click.push_back(since(t0));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  bool all = true;
  auto line = [&](const char* what, double s, double target) {
    const bool met = s <= target;
    all = all && met;
    std::printf("  %-50s %7.3f s   target <= %5.2f s: %s\n", what, s, target, met ? "met" : "NOT met");
  };
  std::printf("per-image stages, %dx%d image, grid %dx%d, %d repetition(s), medians:\n", rgb.cols, rgb.rows, map.w,
              map.h, reps);
  line(".npy load + validation", median(load), 0.15);
  line("upsampling table", median(table), 0.40);
  line("Sinkhorn, 200 iterations (operator - temperature)", median(sinkhorn), 0.50);
  std::printf("  %-50s %7.3f s   target <= %5.2f s: %s (not the default)\n",
              "  the same with --precision fp16 (with conversion)", median(sinkhorn16), 0.50,
              median(sinkhorn16) <= 0.50 ? "met" : "NOT met");
  line("embedded default source, one image", median(source), 0.60);
  std::printf("  %-50s %7.3f s   (no target; the reference: 87.8 s)\n", "one click on the prepared image", median(click));
  std::printf("  %-50s %7.3f s   (no target)\n", "temperature (softmax of log(A)/T)", median(temperature));
  return all ? 0 : 1;
}

int image480(const std::string& in, const std::string& out) {
  cv::Mat small;
  cv::resize(read_rgb(in).rgb, small, cv::Size(854, 480), 0, 0, cv::INTER_AREA);
  cv::cvtColor(small, small, cv::COLOR_RGB2BGR);
  return cv::imwrite(out, small) ? 0 : 1;
}

int main(int argc, char** argv) {
  m2n2::keep_freed_memory();  // as the m2n2 executable does
  if (argc >= 3 && std::strcmp(argv[1], "precision") == 0)
    return precision(argv[2], argc >= 4 ? std::max(1, std::atoi(argv[3])) : 20, argc >= 5 ? argv[4] : "");
  if (argc >= 3 && std::strcmp(argv[1], "make") == 0) return make(argv[2], argc >= 4 ? std::atof(argv[3]) : 0.6f);
  if (argc >= 3 && std::strcmp(argv[1], "run") == 0) return run(argv[2], argc >= 4 ? std::max(1, std::atoi(argv[3])) : 3);
  if (argc >= 3 && std::strcmp(argv[1], "cache") == 0) return cache(argv[2], argc >= 4 ? std::atoi(argv[3]) : 0);
  if (argc >= 4 && std::strcmp(argv[1], "image480") == 0) return image480(argv[2], argv[3]);
  if (argc >= 4 && std::strcmp(argv[1], "targets") == 0)
    return targets(argv[2], argv[3], argc >= 5 ? std::max(1, std::atoi(argv[4])) : 5);
  std::fprintf(stderr, "usage: %s make FILE.npy [scale] | run FILE.npy [repetitions] | cache SOURCE [GRID] |\n"
               "       precision FILE.npy [clicks] [fp16,bf16,fp16-row] | targets FILE.npy IMAGE [repetitions] |\n"
               "       image480 IN OUT.png\n",
               argv[0]);
  return 2;
}
