// Parity with the authors' reference code: every case and every click step in
// shared/testdata/m2n2, at the tolerances of its README.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "m2n2/attention/attention.hpp"
#include "m2n2/attention/attention_file.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/eval/metrics.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/interactive/segmenter.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace m2n2;

namespace {

// Case folders: the compact copies in tests/data/parity (always), then the full set of
// shared/testdata/m2n2 when it is beside the clone.
std::vector<std::string> case_dirs(const fs::path& root) {
  std::vector<std::string> out;
  if (fs::is_directory(root))
    for (const auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "case.json")) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}
std::vector<std::string> compact_cases() { return case_dirs(fs::path(test::data_dir()) / "parity"); }
std::vector<std::string> shared_cases() { return case_dirs(fs::path(test::shared_dir()) / "testdata" / "m2n2"); }

NpyArray read_case_npy(const fs::path& p) { return parse_npy(test::read_maybe_gz(p.string()), p.string()); }

std::string case_label(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = fs::path(info.param).filename().string();
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Tolerances of shared/testdata/README for fp32 (on the CPU and on CUDA alike).
struct Tolerance {
  float doubly_stochastic = 1e-5f, markov = 1e-2f, distance = 1e-3f;
  double mask_iou = 0.995;
  // Reduced precision: at most this fraction of tokens (pixels) may exceed the fp32
  // tolerance of 1e-2 steps (1e-3); every one stays within `markov` (`distance`).
  double markov_fraction = 0, distance_fraction = 0;
};

double fraction_above(const float* a, const float* b, size_t n, float tol) {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) k += std::fabs(a[i] - b[i]) > tol;
  return n ? static_cast<double>(k) / n : 0.0;
}

void check_parity(const std::string& case_dir, Device device, Precision precision, const Tolerance& tol,
                  bool libtorch = false) {
  const fs::path dir(case_dir);
  const std::string name = (dir.parent_path().filename() == "parity" ? "compact:" : "") + dir.filename().string();
  const auto cfg = nlohmann::json::parse(read_file((dir / "case.json").string()));
  const auto& prm = cfg["params"];
  M2N2Params p;
  p.op.temperature = prm["temperature"].get<double>();
  p.op.ipf_iterations = prm["ipf_iterations"].get<int>();
  p.markov.threshold = prm["markov_threshold"].get<float>();
  p.markov.max_iterations = prm["markov_max_iterations"].get<int>();
  p.jbu.spatial_sigma = prm["jbu_spatial_sigma"].get<double>();
  p.jbu.range_sigma = prm["jbu_range_sigma"].get<double>();
  p.scoring.max_area = prm["max_area_prior"].get<float>();
  p.flood_fill = prm["flood_fill"].get<bool>();
  p.op.device = device;
  p.op.precision = precision;
  p.op.libtorch = libtorch;

  const cv::Mat rgb = read_rgb((dir / cfg["image"].get<std::string>()).string()).rgb;
  const fs::path att_path = dir / cfg["attention"].get<std::string>();
  AttentionMap att;
  {
    const NpyArray a = read_case_npy(att_path);
    ASSERT_EQ(a.shape.size(), 4u);
    att.name = att_path.string();
    att.h = static_cast<int>(a.shape[0]);
    att.w = static_cast<int>(a.shape[1]);
    att.data = a.data;
    validate_attention(att, att.name);
  }
  auto op = std::make_shared<MarkovOperator>(att, p.op);

  // The compact copies keep every 8th row of the doubly-stochastic matrix.
  const NpyArray ds = read_case_npy(dir / cfg["attention_doubly_stochastic"].get<std::string>());
  const auto dense_all = op->dense();
  std::vector<float> dense;
  const int64_t n = op->tokens();
  if (cfg.contains("doubly_stochastic_rows")) {
    for (int64_t r : cfg["doubly_stochastic_rows"].get<std::vector<int64_t>>())
      dense.insert(dense.end(), dense_all.begin() + r * n, dense_all.begin() + (r + 1) * n);
  } else {
    dense = dense_all;
  }
  ASSERT_EQ(dense.size(), ds.data.size());
  const float ds_diff = max_abs_diff(dense.data(), ds.data.data(), dense.size());
  EXPECT_LE(ds_diff, tol.doubly_stochastic);

  Segmenter seg(rgb, op, p);
  std::vector<Click> clicks;
  float worst_markov = 0, worst_distance = 0;
  double lowest_iou = 1.0;
  int step = 0;
  for (const auto& s : cfg["steps"]) {
    Click c{s["click"]["x"].get<double>(), s["click"]["y"].get<double>(), s["click"]["positive"].get<bool>()};
    clicks.push_back(c);
    const cv::Point px = click_pixel(c);
    const NpyArray mm = read_case_npy(dir / s["markov_lowres"].get<std::string>());
    const cv::Mat& low = seg.lowres_markov_map(px);
    ASSERT_EQ(static_cast<int64_t>(low.total()), mm.size());
    const float md = max_abs_diff(low.ptr<float>(), mm.data.data(), low.total());
    EXPECT_LE(md, tol.markov) << "Markov-map, step " << step;
    EXPECT_LE(fraction_above(low.ptr<float>(), mm.data.data(), low.total(), 1e-2f), tol.markov_fraction)
        << "Markov-map tokens off by more than 1e-2, step " << step;
    const NpyArray dd = read_case_npy(dir / s["distance"].get<std::string>());
    const cv::Mat d = seg.distance_map(px);
    ASSERT_EQ(static_cast<int64_t>(d.total()), dd.size());
    const float dist = max_abs_diff(d.ptr<float>(), dd.data.data(), d.total());
    EXPECT_LE(dist, tol.distance) << "distance map, step " << step;
    if (tol.distance > 1e-3f)
      EXPECT_LE(fraction_above(d.ptr<float>(), dd.data.data(), d.total(), 1e-3f), tol.distance_fraction)
          << "distance pixels off by more than 1e-3, step " << step;
    const cv::Mat ref = read_mask((dir / s["mask_after"].get<std::string>()).string());
    const cv::Mat mask = seg.segment(clicks).mask;
    const double v = iou(mask, ref);
    EXPECT_GE(v, tol.mask_iou) << "mask, step " << step;
    worst_markov = std::max(worst_markov, md);
    worst_distance = std::max(worst_distance, dist);
    lowest_iou = std::min(lowest_iou, v);
    ++step;
  }
  std::printf("[parity %s %s%s] %-16s steps %d  doubly-stochastic %.2e  markov %.2e  distance %.2e  min mask IoU %.6f\n",
              to_string(device).c_str(), to_string(precision).c_str(), libtorch ? " libtorch" : "", name.c_str(), step,
              ds_diff, worst_markov, worst_distance, lowest_iou);
  ::testing::Test::RecordProperty("worst_markov", std::to_string(worst_markov));
  ::testing::Test::RecordProperty("worst_distance", std::to_string(worst_distance));
  ::testing::Test::RecordProperty("lowest_iou", std::to_string(lowest_iou));
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, MatchesReferenceAtEveryStep) { check_parity(GetParam(), Device::Cpu, Precision::Float32, {}); }

// The operator built and applied by LibTorch (the code path of a CUDA device) on the CPU.
TEST_P(Parity, MatchesReferenceThroughLibTorchOnCpu) {
  check_parity(GetParam(), Device::Cpu, Precision::Float32, {}, true);
}

// The same cases with the operator on the GPU; skipped where LibTorch sees no CUDA device.
TEST_P(Parity, MatchesReferenceOnCuda) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_parity(GetParam(), Device::Cuda, Precision::Float32, {});
}

// fp16/bf16 storage of K: the balancing is fp32, so the operator stays doubly stochastic to
// about the storage precision, but single tokens may cross the Markov threshold at another step
// (bf16 moved one token of synthetic_1_0 by 48 steps on an H100). Measured there: lowest step
// IoU 0.9978 (fp16) and 0.9948 (bf16), doubly-stochastic error 7.0e-5 / 5.5e-4, distance
// error 1.0e-3 (fp16) and 0.13 (bf16, following the moved tokens). The bounds below are those
// figures with headroom, and the moved-token effect is bounded by how many tokens and pixels
// it may touch rather than by its largest value.
TEST_P(Parity, ReducedPrecisionOnCudaKeepsTheMasks) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  Tolerance half;
  half.doubly_stochastic = 5e-4f;
  half.markov = 64.0f;  // one moved token: 48 steps measured
  half.markov_fraction = 0.02;  // tokens off by more than 1e-2 steps
  half.distance = 1e-2f;
  half.mask_iou = 0.99;
  check_parity(GetParam(), Device::Cuda, Precision::Float16, half);
  Tolerance bf = half;
  bf.doubly_stochastic = 5e-3f;
  bf.distance = 0.25f;            // 0.13 measured
  bf.distance_fraction = 0.02;    // pixels off by more than 1e-3
  check_parity(GetParam(), Device::Cuda, Precision::BFloat16, bf);
}

// fp16 storage on the CPU (--precision fp16) keeps M = diag(r1) K diag(c1), K after one
// fp32 Sinkhorn iteration, scaled by a power of two, and balances M itself
// (markov_operator.cpp), so no entry that matters is subnormal. Held to the bar of issue 18
// for a compact encoding: every mask IoU >= 0.995 and every distance map within 1e-3 of
// the reference's. Measured on the six cases: lowest IoU 0.9981, distance 8.1e-5,
// Markov-map 1.3e-2 steps, doubly-stochastic 5.8e-5.
TEST_P(Parity, HalfStorageOnCpuKeepsMasksAndDistances) {
  Tolerance half;
  half.doubly_stochastic = 2e-4f;
  half.markov = 0.1f;
  half.markov_fraction = 1;  // the bound above holds for every token
  half.distance = 1e-3f;
  half.mask_iou = 0.995;
  check_parity(GetParam(), Device::Cpu, Precision::Float16, half);
}

INSTANTIATE_TEST_SUITE_P(Compact, Parity, ::testing::ValuesIn(compact_cases()), case_label);
INSTANTIATE_TEST_SUITE_P(Cases, Parity, ::testing::ValuesIn(shared_cases()), case_label);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Parity);

TEST(ParityData, CompactCopyIsPresent) { EXPECT_GE(compact_cases().size(), 2u) << "tests/data/parity missing"; }

TEST(ParityData, SharedSetIsPresent) {
  M2N2_REQUIRE_SHARED();
  EXPECT_GE(shared_cases().size(), 4u) << "shared/testdata/m2n2 not found at " << test::shared_dir();
}

}  // namespace
