// The attention cache's size cap (least recently used eviction), stats and clear.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "m2n2/attention/attention_cache.hpp"
#include "m2n2/io/npy.hpp"
#include "test_util.hpp"

using namespace m2n2;
namespace fs = std::filesystem;

namespace {

// Uniform attention on a g×g grid; counts computations.
class UniformSource : public AttentionSource {
 public:
  explicit UniformSource(int g) : g_(g) {}
  std::string id() const override { return "uniform:" + std::to_string(g_); }
  Attention compute(const cv::Mat&) override {
    ++calls;
    AttentionMap m;
    m.name = "u";
    m.h = m.w = g_;
    const int64_t n = m.tokens();
    m.data.assign(static_cast<size_t>(n * n), 1.0f / static_cast<float>(n));
    Attention a;
    a.maps.push_back(std::move(m));
    return a;
  }
  int calls = 0;

 private:
  int g_;
};

cv::Mat image(int seed) { return cv::Mat(8, 8, CV_8UC3, cv::Scalar(seed, 2 * seed, 3 * seed)); }

// One grid-16 entry: 256² fp16 values + the .npy header + the index.
constexpr double kEntry = 256.0 * 256 * 2;

void tick() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }  // distinct mtimes

}  // namespace

TEST(AttentionCacheCap, EvictsTheLeastRecentlyUsedAndNeverTheEntryInUse) {
  const std::string dir = test::temp_dir();
  UniformSource src(16);
  AttentionCache cache(dir);
  cache.set_max_bytes(3.5 * kEntry);  // room for three entries
  for (int i = 1; i <= 3; ++i) {
    cache.get(src, image(i));
    tick();
  }
  EXPECT_EQ(cache.stats().entries, 3);
  cache.get(src, image(1));  // a hit: image 1 becomes the most recently used
  EXPECT_EQ(src.calls, 3);
  tick();
  cache.get(src, image(4));  // a fourth entry: image 2, the least recently used, goes
  const auto st = cache.stats();
  EXPECT_EQ(st.entries, 3);
  EXPECT_LE(st.bytes, 3.5 * kEntry);
  EXPECT_GE(st.newest_use, st.oldest_use);
  cache.get(src, image(1));
  cache.get(src, image(3));
  cache.get(src, image(4));
  EXPECT_EQ(src.calls, 4);  // 1, 3 and 4 were kept
  cache.get(src, image(2));
  EXPECT_EQ(src.calls, 5);  // 2 was evicted

  // Eviction passes over the entry in use even when it is the least recently used.
  tick();
  cache.get(src, image(1));  // a miss (1 went when 2 came back): entries 4, 2, 1, oldest first
  EXPECT_EQ(src.calls, 6);
  EXPECT_EQ(cache.evict(0, AttentionCache::key(src, image(4))), 2);
  EXPECT_EQ(cache.stats().entries, 1);
  cache.get(src, image(4));
  EXPECT_EQ(src.calls, 6);  // the entry in use survived
}

TEST(AttentionCacheCap, AnEntryLargerThanTheCapIsNotWrittenAndSaidOnce) {
  const std::string dir = test::temp_dir();
  UniformSource src(16);
  AttentionCache cache(dir);
  std::vector<std::string> warnings;
  cache.set_warn([&](const std::string& m) { warnings.push_back(m); });
  cache.set_max_bytes(kEntry / 4);
  const Attention a = cache.get(src, image(1));
  cache.get(src, image(2));
  EXPECT_EQ(a.maps.size(), 1u);
  EXPECT_EQ(cache.stats().entries, 0);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("--cache-max-size"), std::string::npos) << warnings[0];
}

TEST(AttentionCacheCap, ClearRemovesEntriesAndLeftoversButNotOtherFiles) {
  const std::string dir = test::temp_dir();
  UniformSource src(8);
  AttentionCache cache(dir);
  cache.get(src, image(1));
  cache.get(src, image(2));
  write_file_atomic(dir + "/notes.txt", "a user's file\n");
  write_file_atomic(dir + "/0123456789abcdef-0123456789abcdef_0.npy", "orphan map");  // its index never came
  write_file_atomic(dir + "/.0123456789abcdef-0123456789abcdef.txt.tmp1", "x");
  const auto before = cache.stats();
  EXPECT_EQ(before.entries, 2);
  EXPECT_EQ(before.stale_files, 2);
  EXPECT_EQ(cache.clear(), 2 * 2 + 2);  // two entries of index + one map, two leftovers
  const auto after = cache.stats();
  EXPECT_EQ(after.entries, 0);
  EXPECT_EQ(after.stale_files, 0);
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));
}
