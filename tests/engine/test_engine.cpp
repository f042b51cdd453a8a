// The engine / session API, and attention values that stay on their device.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include "attention/device_values.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/m2n2.hpp"
#include "test_util.hpp"

using namespace m2n2;

namespace {

AttentionMap random_map(int g, int seed, float peak = 1.0f) {
  AttentionMap m;
  m.name = "layer" + std::to_string(seed);
  m.h = m.w = g;
  const int n = g * g;
  m.data.resize(static_cast<size_t>(n) * n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < n; ++j) {
      // Local attention: near tokens weigh more (so that masks have shape).
      const int dy = i / g - j / g, dx = i % g - j % g;
      const float v = u(rng) * std::exp(-peak * static_cast<float>(dx * dx + dy * dy) / 4.0f);
      s += (m.data[static_cast<size_t>(i) * n + j] = v);
    }
    for (int j = 0; j < n; ++j) m.data[static_cast<size_t>(i) * n + j] /= static_cast<float>(s);
  }
  return m;
}

AttentionMap on_device(const AttentionMap& m) {
  at::Tensor t = at::from_blob(const_cast<float*>(m.data.data()), {static_cast<int64_t>(m.data.size())}, at::kFloat).clone();
  return m2n2::detail::device_map(m.name, m.h, m.w, m.weight, t);
}

cv::Mat two_tone(int h, int w) {
  cv::Mat rgb(h, w, CV_8UC3, cv::Scalar(30, 60, 200));
  cv::rectangle(rgb, cv::Rect(w / 4, h / 4, w / 2, h / 2), cv::Scalar(220, 200, 40), cv::FILLED);
  return rgb;
}

std::string write_map(const AttentionMap& m) {
  const std::string p = test::temp_dir() + "/att.npy";
  write_npy(p, m.data.data(), {m.h, m.w, m.h, m.w});
  return p;
}

// An engine on the CPU reading `m` from a .npy file.
EngineOptions file_source_on_cpu(const AttentionMap& m) {
  EngineOptions eo;
  eo.source = "file:" + write_map(m);
  eo.device = Device::Cpu;
  return eo;
}

}  // namespace

TEST(EngineSession, SegmentsExactlyLikeTheSegmenterItWraps) {
  const AttentionMap a = random_map(8, 3);
  const EngineOptions eo = file_source_on_cpu(a);
  Engine engine(eo);
  const cv::Mat rgb = two_tone(48, 64);
  auto session = engine.open(rgb, "two-tone");
  EXPECT_FALSE(session->prepared());
  const std::vector<Click> clicks = {{30, 24, true}, {4, 4, false}};
  const auto r = session->segment(clicks);
  EXPECT_TRUE(session->prepared());

  M2N2Params p = eo.params;
  p.op.device = Device::Cpu;
  Segmenter direct(rgb, std::make_shared<MarkovOperator>(a, p.op), p);
  const auto d = direct.segment(clicks);
  EXPECT_EQ(cv::countNonZero(r.mask != d.mask), 0);
  EXPECT_GT(cv::countNonZero(r.mask), 0);
  EXPECT_EQ(r.choices.size(), 2u);
  EXPECT_EQ(session->markov_map({30, 24}).size(), cv::Size(8, 8));
  EXPECT_EQ(cv::countNonZero(session->distance_map({30, 24}) != direct.distance_map({30, 24})), 0);
}

TEST(EngineSession, PreparesOnceAndReportsProgressInOrder) {
  std::vector<std::pair<std::string, double>> seen;
  EngineOptions eo = file_source_on_cpu(random_map(6, 5));
  eo.progress = [&](const std::string& stage, double f) { seen.emplace_back(stage, f); };
  Engine engine(eo);
  auto session = engine.open(two_tone(40, 40));
  session->prepare();
  const SessionTimings t = session->timings();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].first, "attention");
  EXPECT_EQ(seen[1].first, "operator");
  EXPECT_EQ(seen[2].first, "table");
  EXPECT_EQ(seen[3].first, "ready");
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i].second, seen[i - 1].second);
  EXPECT_DOUBLE_EQ(seen.back().second, 1.0);
  // Clicks reuse the preparation: nothing is reported or recomputed.
  session->segment({{20, 20, true}});
  session->segment({{20, 20, true}, {2, 2, false}});
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(session->timings().op, t.op);
  EXPECT_EQ(session->cached_points(), 2u);
  session->clear_points();
  EXPECT_EQ(session->cached_points(), 0u);
  EXPECT_EQ(session->device(), Device::Cpu);
}

TEST(EngineSession, BadInputIsOneLineNamingIt) {
  EngineOptions eo;
  eo.source = "file:/nonexistent/att.npy";
  try {
    Engine engine(eo);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/att.npy"), std::string::npos) << e.what();
  }
  eo.source = "file:" + write_map(random_map(4, 1));
  Engine engine(eo);
  EXPECT_THROW(engine.open(cv::Mat(), "empty.png"), Error);
  try {
    check_clicks_inside({{5, 5, true}, {40, 3, true}}, cv::Size(40, 30));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "click (40,3) is outside the 40x30 image");
  }
  try {
    check_clicks_inside({{-1.5, 2.25, false}}, cv::Size(40, 30));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "click (-1.5,2.25) is outside the 40x30 image");
  }
  auto session = engine.open(two_tone(30, 40));
  EXPECT_THROW(session->segment({{40, 3, true}}), Error);
}

TEST(EngineSession, TheMemoryGuardNamesTheDeviceThatHoldsTheOperator) {
  try {
    check_memory(4e9, 0, 1e9, "GPU", "the Markov operator of a 128x128 grid", "use a smaller grid");
    FAIL();
  } catch (const MemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("is available on the GPU"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_memory(1e9, 0, 0, "GPU", "x", "y"));  // unknown: not guessed
  EXPECT_GT(device_free_bytes(Device::Cpu), 0.0);
}

// glibc maps a 64 MiB block afresh on every malloc (over its 32 MiB dynamic cap) and
// each 4 KiB page then faults on first write; after keep_freed_memory() the block
// freed by one image is the next image's, already mapped.
TEST(Memory, AFreedLargeBlockIsReusedWithoutPageFaults) {
#if defined(__SANITIZE_ADDRESS__) || !defined(__GLIBC__)
  GTEST_SKIP() << "the sanitizer's allocator (or a C library other than glibc) does not follow mallopt";
#else
  keep_freed_memory();
  auto minor_faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<long>(u.ru_minflt);
  };
  const size_t n = 64u << 20;
  volatile char sink = 0;
  auto use_block = [&](char fill) {
    char* p = static_cast<char*>(std::malloc(n));
    ASSERT_NE(p, nullptr);
    asm volatile("" : : "r"(p) : "memory");  // the block escapes: no call is elided
    std::memset(p, fill, n);
    asm volatile("" : : "r"(p) : "memory");
    sink = sink + p[n / 2];
    std::free(p);
  };
  use_block(1);  // maps it once
  const long before = minor_faults();
  use_block(2);
  use_block(3);
  EXPECT_LT(minor_faults() - before, 200) << "64 MiB is 16384 pages";
#endif
}

TEST(AttentionHandOver, OneChosenMapMovesAndTheOperatorTakesItsStorage) {
  Attention att;
  att.maps.push_back(random_map(6, 2));
  const float* storage = att.maps[0].data.data();
  AttentionMap m = combine_for_m2n2(std::move(att));
  EXPECT_EQ(m.data.data(), storage);  // moved, not copied

  const AttentionMap copy = m;
  MarkovOperator by_copy(copy, OperatorParams{});
  MarkovOperator taken(std::move(m), OperatorParams{});
  EXPECT_TRUE(m.data.empty());
  EXPECT_EQ(by_copy.dense(), taken.dense());
}

TEST(DeviceValues, ChecksCombinationAndOperatorMatchTheHostPath) {
  const AttentionMap a = random_map(6, 11), b = random_map(6, 12, 0.3f);
  const AttentionMap da = on_device(a), db = on_device(b);
  EXPECT_FALSE(da.on_host());
  EXPECT_EQ(attention_values(da), 36 * 36);
  EXPECT_NO_THROW(validate_attention(da, "da"));

  // The same messages as the host checks.
  auto message = [](const AttentionMap& m) {
    try {
      validate_attention(m, "layer");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (float bad : {std::nanf(""), -0.5f, 3.0f}) {
    AttentionMap h = a;
    h.data[5 * 36 + 7] = bad;
    EXPECT_EQ(message(on_device(h)), message(h)) << bad;
    EXPECT_FALSE(message(h).empty());
  }

  // Two layers combined on the device equal the host combination.
  Attention host, dev;
  host.maps = {a, b};
  host.maps[1].weight = 3;
  dev.maps = {da, db};
  dev.maps[1].weight = 3;
  AttentionMap hc = combine_for_m2n2(host), dc = combine_for_m2n2(dev);
  EXPECT_FALSE(dc.on_host());
  to_host(dc);
  ASSERT_EQ(dc.data.size(), hc.data.size());
  for (size_t i = 0; i < hc.data.size(); ++i) ASSERT_NEAR(dc.data[i], hc.data[i], 1e-7f) << i;

  // The whole-image methods' per-grid means read device maps like host maps.
  const auto hr = maps_by_resolution(host), dr = maps_by_resolution(dev);
  ASSERT_EQ(dr.size(), hr.size());
  EXPECT_EQ(dr[0].data, hr[0].data);
  EXPECT_FALSE(dev.maps[0].on_host());  // the input stays on its device

  // The operator from device values (taken over, not copied) equals the host one.
  MarkovOperator from_host(a, OperatorParams{});
  MarkovOperator from_device(on_device(a), OperatorParams{});
  const auto x = from_host.dense(), y = from_device.dense();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], 1e-7f) << i;

  // A shared device map is copied before the operator writes into it.
  AttentionMap shared = on_device(a);
  const AttentionMap other = shared;
  MarkovOperator op(std::move(shared), OperatorParams{});
  AttentionMap back = other;
  to_host(back);
  EXPECT_EQ(back.data, a.data);
}

// With one click point announced, no upsampling table is built: the one map is filtered
// directly (to float rounding, the same distance map); a second point builds the table.
TEST(EngineSession, OneAnnouncedPointIsFilteredWithoutATable) {
  const AttentionMap a = random_map(8, 4);
  Engine engine(file_source_on_cpu(a));
  const cv::Mat rgb = two_tone(60, 90);
  auto tabulated = engine.open(rgb, "table");
  auto lean = engine.open(rgb, "no table");
  lean->expect_points(1);
  tabulated->prepare();
  lean->prepare();
  EXPECT_GT(tabulated->memory_bytes() - lean->memory_bytes(), 60.0 * 90 * 16 * 4 * 0.5);  // the table's bytes
  const cv::Mat dt = tabulated->distance_map({45, 30}), dl = lean->distance_map({45, 30});
  EXPECT_LE(cv::norm(dt, dl, cv::NORM_INF), 1e-4);
  EXPECT_EQ(cv::countNonZero(tabulated->segment({{45, 30, true}}).mask != lean->segment({{45, 30, true}}).mask), 0);
  const double before = lean->memory_bytes();
  lean->distance_map({5, 5});  // more points than announced: the table is built after all
  EXPECT_GT(lean->memory_bytes() - before, 60.0 * 90 * 16 * 4 * 0.5);
  EXPECT_LE(cv::norm(tabulated->distance_map({5, 5}), lean->distance_map({5, 5}), cv::NORM_INF), 0.0);
}
