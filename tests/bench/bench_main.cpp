// m2n2 benchmarks (Google Benchmark). Built by default, never run by the tests:
//   ./build/tests/m2n2_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Image sizes: 480p = 854×480, 1024 = 1024×1024; grids 32, 64 and 128.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>

#include <opencv2/imgproc.hpp>

#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/device.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/interactive/flood_fill.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/interactive/segmenter.hpp"
#include "m2n2/interactive/start_state.hpp"
#include "m2n2/interactive/threshold_scoring.hpp"
#include "m2n2/interactive/upsampling.hpp"

using namespace m2n2;

namespace {

cv::Size image_size(int which) { return which == 0 ? cv::Size(854, 480) : cv::Size(1024, 1024); }

// A natural-looking synthetic image: smooth colour blobs plus texture.
cv::Mat make_image(cv::Size s) {
  cv::Mat small(12, 20, CV_8UC3);
  cv::randu(small, 0, 255);
  cv::Mat img;
  cv::resize(small, img, s, 0, 0, cv::INTER_CUBIC);
  cv::Mat noise(s, CV_8UC3);
  cv::randn(noise, 0, 12);
  img += noise;
  cv::circle(img, {s.width / 2, s.height / 2}, s.height / 4, cv::Scalar(200, 40, 40), cv::FILLED);
  return img;
}

// A row-stochastic attention with image-like structure at a g×g grid.
const AttentionMap& attention(int g) {
  static std::map<int, AttentionMap> cache;
  auto it = cache.find(g);
  if (it != cache.end()) return it->second;
  DefaultSourceSettings s;
  s.grid = g;
  s.levels = 1;
  Attention a = default_attention(make_image({512, 512}), s);
  return cache[g] = a.maps[0];
}

// The *On benchmarks take where the operator lives as their first argument:
// 0 = CPU fp32, 1 = CUDA fp32, 2 = CUDA fp16, 3 = CUDA bf16, 4 = CPU fp32 in LibTorch
// (the CUDA code path on the CPU), 5 = CPU fp16 (--precision fp16 on the CPU). CUDA ones are skipped (reported as errors) where
// LibTorch sees no CUDA device.
OperatorParams placed(int where) {
  OperatorParams p;
  p.device = where == 0 || where == 4 || where == 5 ? Device::Cpu : Device::Cuda;
  p.libtorch = where == 4;
  p.precision = where == 2 || where == 5 ? Precision::Float16 : where == 3 ? Precision::BFloat16 : Precision::Float32;
  return p;
}

const char* placement_name(int where) {
  static const char* names[] = {"cpu fp32", "cuda fp32", "cuda fp16", "cuda bf16", "cpu fp32 libtorch", "cpu fp16"};
  return names[where];
}

bool skip_without_cuda(benchmark::State& st, int where) {
  if (where == 0 || where == 4 || where == 5 || cuda_available()) return false;
  st.SkipWithError("no CUDA device");
  return true;
}

std::shared_ptr<MarkovOperator> op_on(int g, int where) {
  static std::map<std::pair<int, int>, std::shared_ptr<MarkovOperator>> cache;
  auto& o = cache[{g, where}];
  if (!o) o = std::make_shared<MarkovOperator>(attention(g), placed(where));
  return o;
}

// The operator of the CPU benchmarks (default OperatorParams: CPU, fp32).
std::shared_ptr<MarkovOperator> op(int g) { return op_on(g, 0); }

void time_preparation(benchmark::State& st, int g, const OperatorParams& params) {
  const auto& a = attention(g);
  for (auto _ : st) {
    MarkovOperator m(a, params);
    benchmark::DoNotOptimize(m.bytes_per_step());
  }
}

void BM_OperatorPreparation(benchmark::State& st) {
  const int g = static_cast<int>(st.range(0));
  time_preparation(st, g, OperatorParams{});
  st.SetLabel("temperature + 200 Sinkhorn/IPF iterations, grid " + std::to_string(g));
}

// The first implementation's Sinkhorn (two matrix-vector products an iteration), for
// the ratio against the one-pass kernel above.
void BM_OperatorPreparationTwoPass(benchmark::State& st) {
  const int g = static_cast<int>(st.range(0));
  OperatorParams p;
  p.two_pass_sinkhorn = true;
  time_preparation(st, g, p);
  st.SetLabel("as above, two matrix-vector products per iteration, grid " + std::to_string(g));
}

// Temperature alone (no Sinkhorn): subtracted from the above, the Sinkhorn time.
// Second argument 1: in LibTorch (the CUDA code path, on the CPU).
void BM_OperatorTemperatureOnly(benchmark::State& st) {
  OperatorParams p;
  p.ipf_iterations = 0;
  p.libtorch = st.range(1) == 1;
  time_preparation(st, static_cast<int>(st.range(0)), p);
  st.SetLabel(std::string("temperature only, grid ") + std::to_string(st.range(0)) + (p.libtorch ? ", LibTorch" : ""));
}

// Memory read bandwidth of this machine, measured the way a Markov step reads:
// a multi-threaded sum over a 64 MiB buffer.
void BM_MemoryReadBandwidth(benchmark::State& st) {
  const size_t n = 16u << 20;  // floats = 64 MiB
  std::vector<float> buf(n, 1.0f);
  for (auto _ : st) {
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(n); i += 16) {
      float s = 0;
      for (int k = 0; k < 16; ++k) s += buf[i + k];
      total += s;
    }
    benchmark::DoNotOptimize(total);
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(n * sizeof(float)));
}

void time_steps(benchmark::State& st, const MarkovOperator& o, int g, int batch) {
  std::vector<float> s;
  for (int b = 0; b < batch; ++b) {
    auto v = start_state(100 + 50 * b, 100, 480, 854, g, g);
    s.insert(s.end(), v.begin(), v.end());
  }
  for (auto _ : st) o.step(s, batch);
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * o.bytes_per_step());
}

void BM_MarkovStep(benchmark::State& st) {
  const int g = static_cast<int>(st.range(0));
  const int batch = static_cast<int>(st.range(1));
  time_steps(st, *op(g), g, batch);
  st.SetLabel("grid " + std::to_string(g) + ", " + std::to_string(batch) + " chain(s)");
}

void time_markov_map(benchmark::State& st, const MarkovOperator& o, int g) {
  auto s = start_state(427, 240, 480, 854, g, g);
  float steps = 0;
  for (auto _ : st) {
    auto m = o.markov_maps({s}, MarkovParams{});
    steps = *std::max_element(m[0].begin(), m[0].end());
  }
  st.counters["iterations"] = steps;
}

void BM_MarkovMap(benchmark::State& st) {
  const int g = static_cast<int>(st.range(0));
  time_markov_map(st, *op(g), g);
}

void BM_OperatorPreparationOn(benchmark::State& st) {
  const int where = static_cast<int>(st.range(0)), g = static_cast<int>(st.range(1));
  if (skip_without_cuda(st, where)) return;
  time_preparation(st, g, placed(where));
  st.SetLabel(std::string(placement_name(where)) + ", grid " + std::to_string(g));
}

// One step includes the state's trip to the device and back, as in markov_maps.
void BM_MarkovStepOn(benchmark::State& st) {
  const int where = static_cast<int>(st.range(0)), g = static_cast<int>(st.range(1));
  const int batch = static_cast<int>(st.range(2));
  if (skip_without_cuda(st, where)) return;
  time_steps(st, *op_on(g, where), g, batch);
  st.SetLabel(std::string(placement_name(where)) + ", grid " + std::to_string(g) + ", " + std::to_string(batch) +
              " chain(s)");
}

void BM_MarkovMapOn(benchmark::State& st) {
  const int where = static_cast<int>(st.range(0)), g = static_cast<int>(st.range(1));
  if (skip_without_cuda(st, where)) return;
  time_markov_map(st, *op_on(g, where), g);
  st.SetLabel(std::string(placement_name(where)) + ", grid " + std::to_string(g));
}

// One click with cached attention and operator: Markov-map, upsampling, flood fill,
// scoring and merge (the upsampling table is built once per image, outside the loop).
void time_clicks(benchmark::State& st, const cv::Mat& img, std::shared_ptr<MarkovOperator> o, const M2N2Params& p) {
  Segmenter seg(img, std::move(o), p);
  seg.distance_map({10, 10});  // builds the table
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> X(0, img.cols - 1), Y(0, img.rows - 1);
  for (auto _ : st) {
    st.PauseTiming();
    seg.clear_cache();
    std::vector<Click> clicks = {{static_cast<double>(X(rng)), static_cast<double>(Y(rng)), true}};
    st.ResumeTiming();
    benchmark::DoNotOptimize(seg.segment(clicks).mask.data);
  }
}

// BM_Click with the operator placed by the first argument; image 480p.
void BM_ClickOn(benchmark::State& st) {
  const int where = static_cast<int>(st.range(0)), g = static_cast<int>(st.range(1));
  if (skip_without_cuda(st, where)) return;
  M2N2Params p;
  p.op = placed(where);
  time_clicks(st, make_image(image_size(0)), op_on(g, where), p);
  st.SetLabel(std::string(placement_name(where)) + ", grid " + std::to_string(g));
}

void BM_UpsamplingTable(benchmark::State& st) {
  const cv::Mat img = make_image(image_size(static_cast<int>(st.range(0))));
  const int g = static_cast<int>(st.range(1));
  for (auto _ : st) {
    JointBilateralUpsampler u(img, g, g, JbuParams{});
    benchmark::DoNotOptimize(u.table_bytes());
  }
}

void BM_UpsamplingApply(benchmark::State& st) {
  const cv::Mat img = make_image(image_size(static_cast<int>(st.range(0))));
  const int g = static_cast<int>(st.range(1));
  const int64_t mode = st.range(2);  // 0 tabulated, 1 reference arithmetic, 2 vectorised, both without table
  JointBilateralUpsampler u(img, g, g, JbuParams{}, mode != 0 ? 0.0 : 4e9);
  cv::Mat low(g, g, CV_32F);
  cv::randu(low, 0, 50);
  for (auto _ : st) benchmark::DoNotOptimize((mode == 2 ? u.apply_untabulated(low) : u.apply(low)).data);
  st.SetLabel(mode == 1 ? "direct (reference arithmetic, no table)" : mode == 2 ? "untabulated (vectorised, no table)" : "tabulated");
}

void BM_FloodFill(benchmark::State& st) {
  const cv::Size s = image_size(static_cast<int>(st.range(0)));
  cv::Mat small(8, 8, CV_32F);
  cv::randu(small, 0, 1);
  cv::Mat h;
  cv::resize(small, h, s, 0, 0, cv::INTER_CUBIC);
  for (auto _ : st) benchmark::DoNotOptimize(minimax_flood_fill(h, {s.width / 3, s.height / 2}).data);
}

void BM_ThresholdScoring(benchmark::State& st) {
  const cv::Size s = image_size(static_cast<int>(st.range(0)));
  cv::Mat small(8, 8, CV_32F);
  cv::randu(small, 0, 1);
  cv::Mat d;
  cv::resize(small, d, s, 0, 0, cv::INTER_CUBIC);
  for (auto _ : st) {
    auto c = threshold_curve(d, 1024);
    auto ch = choose_threshold(c, {0.0f}, {0.7f}, 1.0f, ScoringParams{});
    benchmark::DoNotOptimize(ch.index);
  }
}

void BM_Click(benchmark::State& st) {
  const int g = static_cast<int>(st.range(1));
  time_clicks(st, make_image(image_size(static_cast<int>(st.range(0)))), op(g), M2N2Params{});
}

void BM_DefaultSource(benchmark::State& st) {
  const cv::Mat img = make_image(image_size(static_cast<int>(st.range(0))));
  DefaultSourceSettings s;
  s.grid = static_cast<int>(st.range(1));
  for (auto _ : st) benchmark::DoNotOptimize(default_attention(img, s).maps.size());
}

}  // namespace

BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorPreparation)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorPreparation)->Arg(128)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorPreparationTwoPass)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorTemperatureOnly)->Args({64, 0})->Args({64, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MarkovStep)->Args({32, 1})->Args({64, 1})->Args({64, 4})->Args({128, 1})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MarkovMap)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorPreparationOn)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {64}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OperatorPreparationOn)->ArgsProduct({{1, 2}, {128}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MarkovStepOn)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {64}, {1, 4}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MarkovStepOn)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {128}, {1}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MarkovMapOn)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {64}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MarkovMapOn)->ArgsProduct({{1, 2}, {128}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ClickOn)->ArgsProduct({{0, 1, 2, 5}, {64}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ClickOn)->ArgsProduct({{1, 2}, {128}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_UpsamplingTable)->Args({0, 64})->Args({1, 64})->Args({0, 32})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_UpsamplingApply)->Args({0, 64, 0})->Args({1, 64, 0})->Args({0, 64, 1})->Args({0, 64, 2})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_FloodFill)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ThresholdScoring)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Click)->Args({0, 64})->Args({1, 64})->Args({0, 32})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DefaultSource)->Args({0, 64})->Args({1, 64})->Args({0, 32})->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  m2n2::set_num_threads(0);
  m2n2::keep_freed_memory();  // as the m2n2 executable does
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
