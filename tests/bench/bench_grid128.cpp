// The authors' scale on the CPU: attention at grid 128 (N = 16384, 1 GiB fp32) from a
// .npy through the engine to the operator, one click and one Markov step, with the
// process's peak resident memory. Two processes, so that making the fixture does not
// count towards the measured peak:
//   ./build/tests/m2n2_bench_grid128 make /tmp/att128.npy     # synthetic attention, 1 GiB
//   ./build/tests/m2n2_bench_grid128 run /tmp/att128.npy [repetitions]   (any grid's .npy)
//   ./build/tests/m2n2_bench_grid128 cache SOURCE [GRID]   # attention cache: miss vs hit
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

#include <opencv2/imgproc.hpp>

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

int make(const std::string& path) {
  const int n = kGrid * kGrid, d = 32;
  // Smooth features: random low-frequency waves over the grid, plus a little noise.
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
  const float scale = 0.6f;  // sets how peaked the rows are (see the effective support below)
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

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "make") == 0) return make(argv[2]);
  if (argc >= 3 && std::strcmp(argv[1], "run") == 0) return run(argv[2], argc >= 4 ? std::max(1, std::atoi(argv[3])) : 3);
  if (argc >= 3 && std::strcmp(argv[1], "cache") == 0) return cache(argv[2], argc >= 4 ? std::atoi(argv[3]) : 0);
  std::fprintf(stderr, "usage: %s make FILE.npy | run FILE.npy [repetitions] | cache SOURCE [GRID]\n", argv[0]);
  return 2;
}
