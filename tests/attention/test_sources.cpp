#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include <filesystem>

#include <opencv2/imgproc.hpp>

#include "m2n2/attention/attention_cache.hpp"
#include "m2n2/attention/attention_file.hpp"
#include "m2n2/attention/default_source.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/eval/metrics.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/interactive/segmenter.hpp"
#include "test_util.hpp"

using namespace m2n2;
namespace fs = std::filesystem;

namespace {

void expect_row_stochastic(const AttentionMap& m, float tol) {
  const int64_t n = m.tokens();
  ASSERT_EQ(static_cast<int64_t>(m.data.size()), n * n);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_GE(m.data[i * n + j], 0.0f);
      s += m.data[i * n + j];
    }
    ASSERT_NEAR(s, 1.0, tol) << m.name << " row " << i;
  }
}

// Two regions: a blob and a background of different colours, with noise.
cv::Mat two_regions(cv::Mat& labels) {
  labels = cv::Mat::zeros(120, 160, CV_8U);
  cv::ellipse(labels, {70, 60}, {40, 30}, 20, 0, 360, cv::Scalar(1), cv::FILLED);
  return test::paint(labels, {{60, 110, 50}, {210, 60, 50}}, 10.0);
}

class CountingSource : public AttentionSource {
 public:
  explicit CountingSource(std::unique_ptr<AttentionSource> inner) : inner_(std::move(inner)) {}
  std::string id() const override { return inner_->id(); }
  Attention compute(const cv::Mat& rgb) override {
    ++calls;
    return inner_->compute(rgb);
  }
  int calls = 0;

 private:
  std::unique_ptr<AttentionSource> inner_;
};

}  // namespace

TEST(DefaultSource, DeliversRowStochasticMapsAtEveryLevel) {
  cv::Mat labels;
  const cv::Mat img = two_regions(labels);
  DefaultSourceSettings s;
  s.grid = 16;
  const Attention a = default_attention(img, s);
  ASSERT_EQ(a.maps.size(), 3u);  // 16, 8, 4 (levels stop below 4)
  EXPECT_EQ(a.maps[0].h, 16);
  EXPECT_EQ(a.maps[1].h, 8);
  EXPECT_EQ(a.maps[0].weight, 1.0f);
  EXPECT_EQ(a.maps[1].weight, 0.0f);
  for (const auto& m : a.maps) expect_row_stochastic(m, 1e-4f);
}

TEST(DefaultSource, ImageSmallerThanTheGridStaysRowStochastic) {
  // 20×12 pixels on a 32×32 grid: cells without a pixel of their own still get
  // their region jumps (the regions are found on an upsampled working image).
  cv::Mat labels;
  cv::Mat img;
  cv::resize(two_regions(labels), img, cv::Size(20, 12), 0, 0, cv::INTER_AREA);
  DefaultSourceSettings s;
  s.grid = 32;
  ASSERT_GT(s.region_weight, 0.0);
  const Attention a = default_attention(img, s);
  for (const auto& m : a.maps) expect_row_stochastic(m, 1e-4f);
}

TEST(DefaultSource, RegionJumpsStayInsideTheCellsRegion) {
  // Left half dark, right half bright, flat: the graph segmentation finds the two
  // halves at every scale (the blurred pixels at the border may form a sliver).
  // With only region jumps (region_weight 1, floor 0) a cell wholly inside one
  // half sends all of its mass to that half, the same amount to each cell away
  // from the border.
  cv::Mat img(64, 64, CV_8UC3, cv::Scalar(30, 30, 30));
  img(cv::Rect(32, 0, 32, 64)).setTo(cv::Scalar(220, 220, 220));
  const auto s = DefaultSourceSettings::parse("grid=8,levels=1,floor=0,region_weight=1,edge_weight=0");
  const Attention a = default_attention(img, s);
  ASSERT_EQ(a.maps.size(), 1u);
  const AttentionMap& m = a.maps[0];
  const int n = 64;
  for (int i : {0, 9, 3 * 8 + 2, 7 * 8 + 7, 4 * 8 + 5}) {
    const bool left_i = i % 8 < 4;
    const int ref = left_i ? 0 : 7;  // a cell in the same half, away from the border
    double inside = 0;
    for (int j = 0; j < n; ++j) {
      const int col = j % 8;
      if ((col < 4) != left_i) continue;
      inside += m.data[i * n + j];
      if (col != 3 && col != 4) EXPECT_NEAR(m.data[i * n + j], m.data[i * n + ref], 1e-6) << i << " -> " << j;
      else EXPECT_LE(m.data[i * n + j], m.data[i * n + ref] + 1e-6f) << i << " -> " << j;
    }
    EXPECT_NEAR(inside, 1.0, 1e-5) << "row " << i;
    EXPECT_GE(m.data[i * n + ref], 1.0f / 32 - 1e-6f);
  }
  expect_row_stochastic(m, 1e-5f);
}

// Attention mass from cell (row 3, column 1) of an 8×8 grid into the right half,
// with a plain global colour kernel plus `extra` settings.
static double mass_into_right_half(const cv::Mat& img, const std::string& extra) {
  const std::string base =
      "grid=8,levels=1,floor=0,region_weight=0,edge_weight=0,texture_weight=0,radius=0,sigma_position=10,"
      "context_weight=0,sigma_color=0.1,lightness_weight=1";
  const Attention a = default_attention(img, DefaultSourceSettings::parse(base + extra));
  const AttentionMap& m = a.maps.at(0);
  expect_row_stochastic(m, 1e-5f);
  double mass = 0;
  for (int j = 0; j < 64; ++j)
    if (j % 8 >= 4) mass += m.data[(3 * 8 + 1) * 64 + j];
  return mass;
}

TEST(DefaultSource, TextureFeatureSeparatesFlatFromTextured) {
  // Left half flat grey, right half a one-pixel checkerboard around the same grey:
  // their cell means are close, so colour alone links them; the cells' Lab spread
  // (texture_feature) tells them apart.
  cv::Mat img(64, 64, CV_8UC3, cv::Scalar(128, 128, 128));
  for (int y = 0; y < 64; ++y)
    for (int x = 32; x < 64; ++x) img.at<cv::Vec3b>(y, x) = (x + y) % 2 ? cv::Vec3b(78, 78, 78) : cv::Vec3b(178, 178, 178);
  const double plain = mass_into_right_half(img, ""), textured = mass_into_right_half(img, ",texture_feature=2");
  EXPECT_GT(plain, 0.2);
  EXPECT_LT(textured, 0.05);
}

TEST(DefaultSource, OrientFeatureSeparatesStripeDirections) {
  // Left half vertical stripes, right half horizontal stripes of the same two
  // colours: every cell has the same mean and spread, only the orientation differs.
  cv::Mat img(64, 64, CV_8UC3);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) {
      const bool on = x < 32 ? x % 2 : y % 2;
      img.at<cv::Vec3b>(y, x) = on ? cv::Vec3b(78, 78, 78) : cv::Vec3b(178, 178, 178);
    }
  const double plain = mass_into_right_half(img, ""), oriented = mass_into_right_half(img, ",orient_feature=3");
  EXPECT_GT(plain, 0.4);
  EXPECT_LT(oriented, 0.05);
  // Off by default, and then absent from the id, so cached default attention stays valid.
  EXPECT_EQ(DefaultSourceSettings().to_string().find("orient"), std::string::npos);
  EXPECT_NE(DefaultSourceSettings::parse("orient_feature=3").to_string().find("orient_feature=3"), std::string::npos);
}

TEST(DefaultSource, LightnessWeightLinksShadesOfOneHue) {
  // Left half dark grey, right half light grey: a step in lightness only
  // (ΔL* ≈ 41, no chroma). With L at full weight the colour kernel keeps the
  // halves apart; with L weighted down they become one region.
  cv::Mat img(64, 64, CV_8UC3, cv::Scalar(60, 60, 60));
  img(cv::Rect(32, 0, 32, 64)).setTo(cv::Scalar(160, 160, 160));
  const double full = mass_into_right_half(img, ",lightness_weight=1"), low = mass_into_right_half(img, ",lightness_weight=0.25");
  EXPECT_LT(full, 0.01);
  EXPECT_GT(low, 0.2);
  // A step in chroma at nearly equal lightness (sRGB red vs. a green of the same L*)
  // is barely affected by the weight.
  cv::Mat chroma(64, 64, CV_8UC3, cv::Scalar(200, 40, 40));
  chroma(cv::Rect(32, 0, 32, 64)).setTo(cv::Scalar(60, 120, 40));
  const double c_full = mass_into_right_half(chroma, ",lightness_weight=1"),
               c_low = mass_into_right_half(chroma, ",lightness_weight=0.25");
  EXPECT_LT(c_full, 0.01);
  EXPECT_LT(c_low, 0.01);
  EXPECT_THROW(DefaultSourceSettings::parse("lightness_weight=0"), Error);
}

TEST(DefaultSource, SettingsParseAndReject) {
  const auto s = DefaultSourceSettings::parse("grid=32,sigma_color=0.2");
  EXPECT_EQ(s.grid, 32);
  EXPECT_DOUBLE_EQ(s.sigma_color, 0.2);
  EXPECT_THROW(DefaultSourceSettings::parse("grid=2"), Error);
  EXPECT_THROW(DefaultSourceSettings::parse("colour=1"), Error);
  EXPECT_THROW(DefaultSourceSettings::parse("grid=abc"), Error);
  EXPECT_THROW(DefaultSourceSettings::parse("texture_feature=-1"), Error);
  EXPECT_THROW(DefaultSourceSettings::parse("orient_feature=-1"), Error);
}

TEST(DefaultSource, SegmentsATwoRegionImageFromOneClick) {
  cv::Mat labels;
  const cv::Mat img = two_regions(labels);
  auto src = make_source("default", SourceOptions{});
  const AttentionMap m = combine_for_m2n2(src->compute(img));
  auto op = std::make_shared<MarkovOperator>(m, OperatorParams{});
  Segmenter seg(img, op, M2N2Params{});
  const cv::Mat mask = seg.segment({{70, 60, true}}).mask;
  const double v = iou(mask, labels);
  EXPECT_GE(v, 0.95) << "IoU " << v;
}

TEST(AttentionCache, HitReturnsTheSameTensorWithoutComputing) {
  cv::Mat labels;
  const cv::Mat img = two_regions(labels);
  CountingSource src(make_source("default:grid=16", SourceOptions{}));
  const std::string dir = test::temp_dir();
  AttentionCache cache(dir);
  const Attention a = cache.get(src, img);
  EXPECT_EQ(src.calls, 1);
  EXPECT_EQ(cache.computed(), 1);
  AttentionCache again(dir);  // a new process would start like this
  const Attention b = again.get(src, img);
  EXPECT_EQ(src.calls, 1) << "a cache hit must not compute";
  EXPECT_EQ(again.hits(), 1);
  ASSERT_EQ(a.maps.size(), b.maps.size());
  for (size_t i = 0; i < a.maps.size(); ++i) {
    EXPECT_EQ(a.maps[i].h, b.maps[i].h);
    EXPECT_EQ(a.maps[i].weight, b.maps[i].weight);
    EXPECT_EQ(a.maps[i].data, b.maps[i].data);
  }
  // Another image misses.
  cv::Mat other = img.clone();
  other.at<cv::Vec3b>(0, 0)[0] ^= 1;
  again.get(src, other);
  EXPECT_EQ(src.calls, 2);
  // With no cache folder the result is the same (rounded to the cache dtype).
  AttentionCache none("");
  const Attention c = none.get(src, img);
  EXPECT_EQ(c.maps[0].data, a.maps[0].data);
}

TEST(AttentionCache, KilledWritersLeaveNothingALaterRunReads) {
  cv::Mat labels;
  const cv::Mat img = two_regions(labels);
  CountingSource src(make_source("default:grid=16", SourceOptions{}));
  const std::string dir = test::temp_dir();
  AttentionCache cache(dir);
  cache.get(src, img);  // one complete entry: KEY.txt + KEY_0.npy
  namespace fs = std::filesystem;
  auto touch = [&](const std::string& name) { write_file_atomic((fs::path(dir) / name).string(), "x"); };
  touch(".abc_0.npy.tmp123");    // a temporary of a writer killed mid-file
  touch("deadbeef-0123_0.npy");  // maps of an entry whose index never came
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  fs::last_write_time(fs::path(dir) / ".abc_0.npy.tmp123", old);
  fs::last_write_time(fs::path(dir) / "deadbeef-0123_0.npy", old);
  touch("cafe-42_0.npy");  // as young as a writer still at work elsewhere: kept
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) entries += e.path().extension() == ".txt";
  ASSERT_EQ(entries, 1);
  AttentionCache later(dir);
  EXPECT_EQ(later.remove_stale(), 2);
  EXPECT_FALSE(fs::exists(fs::path(dir) / ".abc_0.npy.tmp123"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "deadbeef-0123_0.npy"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "cafe-42_0.npy"));
  // The complete entry is untouched and still a hit.
  const Attention a = later.get(src, img);
  EXPECT_EQ(later.hits(), 1);
  EXPECT_EQ(src.calls, 1);
}

TEST(AttentionCache, AnUnwritableCacheWarnsOnceAndStillComputes) {
  const std::string file = test::temp_dir() + "/not-a-folder";
  write_file_atomic(file, "x");
  AttentionCache cache(file + "/cache");  // under a regular file: cannot be created, even as root
  std::vector<std::string> warnings;
  cache.set_warn([&](const std::string& w) { warnings.push_back(w); });
  CountingSource src(make_source("default:grid=16", SourceOptions{}));
  cv::Mat labels;
  cv::Mat img = two_regions(labels);
  const Attention a = cache.get(src, img);
  img.at<cv::Vec3b>(0, 0)[0] ^= 1;
  cache.get(src, img);
  EXPECT_EQ(src.calls, 2);
  EXPECT_FALSE(a.maps.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("not-a-folder"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("going on without it"), std::string::npos) << warnings[0];
}

TEST(Sources, SpecErrors) {
  EXPECT_THROW(make_source("bogus", SourceOptions{}), Error);
  EXPECT_THROW(make_source("file:", SourceOptions{}), Error);
  EXPECT_THROW(make_source("file:/nonexistent.npy", SourceOptions{}), Error);
  EXPECT_THROW(make_source("torchscript:/nonexistent.pt", SourceOptions{}), Error);
  EXPECT_THROW(make_source("default:grid=1000", SourceOptions{}), Error);
}

// The committed fixture: shapes and row sums as its metadata declares.
TEST(Torchscript, FixtureDeliversDeclaredMaps) {
  const std::string path = test::source_dir() + "/models/tiny-test-attention.pt";
  auto src = make_source("torchscript:" + path, SourceOptions{Device::Cpu});
  cv::Mat labels;
  const Attention a = src->compute(two_regions(labels));
  ASSERT_EQ(a.maps.size(), 3u);
  EXPECT_EQ(a.maps[0].name, "up_blocks.3.attentions.0");
  EXPECT_EQ(a.maps[0].h, 8);
  EXPECT_EQ(a.maps[2].h, 4);
  EXPECT_FLOAT_EQ(a.maps[0].weight, 0.5f);
  for (const auto& m : a.maps) expect_row_stochastic(m, 1e-4f);
  // M2N2 combines the two weighted 8×8 layers and runs end to end.
  const AttentionMap m = combine_for_m2n2(a);
  EXPECT_EQ(m.h, 8);
  auto op = std::make_shared<MarkovOperator>(m, OperatorParams{});
  cv::Mat img = two_regions(labels);
  Segmenter seg(img, op, M2N2Params{});
  const cv::Mat mask = seg.segment({{70, 60, true}}).mask;
  // Known answer: the mask this fixture gives (tests/data/known/torchscript_two_regions.png,
  // written with M2N2_REGENERATE_KNOWN_ANSWERS=1). Any other operator, upsampling or merge
  // moves it; the clicked pixel alone (always forced on) would give IoU ~0.
  const std::string known = test::data_dir() + "/known/torchscript_two_regions.png";
  if (std::getenv("M2N2_REGENERATE_KNOWN_ANSWERS")) write_png_atomic(known, mask);
  const cv::Mat want = read_mask(known);
  ASSERT_EQ(want.size(), mask.size());
  EXPECT_GE(iou(mask, want), 0.999);
  EXPECT_GT(cv::countNonZero(want), 100);
}

TEST(Torchscript, ForeignFilesGiveClearErrors) {
  const std::string d = test::temp_dir();
  write_file_atomic(d + "/text.pt", "this is not a model");
  try {
    make_source("torchscript:" + d + "/text.pt", SourceOptions{Device::Cpu});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a loadable TorchScript"), std::string::npos) << e.what();
  }
  // A .npy handed to the TorchScript loader.
  std::vector<float> v(16, 0.25f);
  write_npy(d + "/a.npy", v.data(), {4, 4});
  EXPECT_THROW(make_source("torchscript:" + d + "/a.npy", SourceOptions{Device::Cpu}), Error);
  // A folder.
  EXPECT_THROW(make_source("torchscript:" + d, SourceOptions{Device::Cpu}), Error);
}

// ---------------------------------------------------------------- features (format /2)

// The tiny ViT (scripts/make_test_model.py --vit): CLS + 1 register dropped, every kind.
TEST(Torchscript, VitFixtureDeliversMapsAndEveryFeatureKind) {
  const std::string path = test::source_dir() + "/models/tiny-vit-features.pt";
  auto src = make_source("torchscript:" + path, SourceOptions{Device::Cpu});
  cv::Mat labels;
  const Attention a = src->compute(two_regions(labels));
  ASSERT_EQ(a.maps.size(), 2u);
  for (const auto& m : a.maps) {
    EXPECT_EQ(m.h, 8);  // 112 / 14: prefix tokens are not in the grid
    expect_row_stochastic(m, 1e-4f);
  }
  EXPECT_FLOAT_EQ(a.maps[1].weight, 1.0f);
  ASSERT_EQ(a.features.size(), 4u);
  const FeatureMap& keys = require_feature(a, "keys", "test", 1);
  EXPECT_EQ(keys.name, "keys.1");
  EXPECT_EQ(keys.rows(), 64);
  EXPECT_EQ(keys.dim, 32);
  EXPECT_EQ(require_feature(a, "patch_tokens", "test").dim, 32);
  const FeatureMap& cls = require_feature(a, "cls", "test");
  EXPECT_EQ(cls.rows(), 1);
  EXPECT_EQ(cls.data.size(), 32u);
  const FeatureMap& ca = require_feature(a, "cls_attention", "test", 1);
  double sum = 0;
  for (float v : ca.data) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-4);
  EXPECT_EQ(find_feature(a, "keys", 0), nullptr);  // only the last block's keys were exported
  // Keys differ between patches (not a constant or a prefix token repeated).
  EXPECT_GT(cv::norm(cv::Mat(1, 32, CV_32F, const_cast<float*>(keys.data.data())),
                     cv::Mat(1, 32, CV_32F, const_cast<float*>(keys.data.data() + 32 * 63))),
            1e-3);
  // The whole metadata is in the source id (so in the cache key).
  EXPECT_NE(src->id().find("cls_attention.1"), std::string::npos);
}

TEST(Torchscript, FeaturesGoThroughTheCacheAndAMissingKindIsOneLine) {
  const std::string path = test::source_dir() + "/models/tiny-vit-features.pt";
  auto src = make_source("torchscript:" + path, SourceOptions{Device::Cpu});
  AttentionCache cache(test::temp_dir());
  cv::Mat labels;
  const cv::Mat img = two_regions(labels);
  const Attention miss = cache.get(*src, img);
  const Attention hit = cache.get(*src, img);
  EXPECT_EQ(hit.meta.at("cache"), "hit");
  ASSERT_EQ(hit.features.size(), miss.features.size());
  for (size_t i = 0; i < miss.features.size(); ++i) {
    EXPECT_EQ(hit.features[i].name, miss.features[i].name);
    EXPECT_EQ(hit.features[i].kind, miss.features[i].kind);
    EXPECT_EQ(hit.features[i].layer, miss.features[i].layer);
    EXPECT_EQ(hit.features[i].dim, miss.features[i].dim);
    EXPECT_EQ(hit.features[i].data, miss.features[i].data);  // both rounded to fp16: equal
  }
  // An archive of format /1 has no features: a method that needs them says which.
  auto sd = make_source("torchscript:" + test::source_dir() + "/models/tiny-test-attention.pt", SourceOptions{Device::Cpu});
  const Attention plain = sd->compute(img);
  EXPECT_TRUE(plain.features.empty());
  try {
    require_feature(plain, "keys", "lightcluster");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("lightcluster needs 'keys'"), std::string::npos) << m;
    EXPECT_NE(m.find("--features keys"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
}

TEST(Features, ValidationNamesTheProblem) {
  FeatureMap f;
  f.name = "cls_attention.11";
  f.kind = "cls_attention";
  f.h = f.w = 2;
  f.dim = 1;
  f.data = {0.25f, 0.25f, 0.25f, 0.25f};
  EXPECT_NO_THROW(validate_feature(f, "x"));
  f.data[0] = 0.5f;  // sums to 1.25
  EXPECT_THROW(validate_feature(f, "x"), Error);
  f.data = {0.25f, 0.25f, 0.25f};
  try {
    validate_feature(f, "model.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.pt feature 'cls_attention.11': expected 4x1 values, got 3"), std::string::npos)
        << e.what();
  }
  FeatureMap k{"keys.1", "keys", 1, 2, 2, 3, std::vector<float>(12, 1.0f)};
  EXPECT_NO_THROW(validate_feature(k, "x"));
  k.data[5] = std::nanf("");
  EXPECT_THROW(validate_feature(k, "x"), Error);
  k.kind = "queries";
  EXPECT_THROW(validate_feature(k, "x"), Error);
}
