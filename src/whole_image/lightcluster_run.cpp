// LightCluster over a folder (spec lightcluster.md A2–A8): features through the engine,
// the three levels per category, refinement, components, class labels from CLS tokens.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <random>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/m2n2.hpp"
#include "m2n2/whole_image/lightcluster.hpp"
#include "core/check.hpp"
#include "m2n2/io/json_read.hpp"

namespace m2n2 {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Seen {  // what pass 1 keeps of an image
  std::string path, stem;
  std::vector<float> cls;  // unit
  bool ok = false;
};

std::vector<float> unit(const std::vector<float>& v) { return unit_rows(v.data(), 1, static_cast<int>(v.size())); }

// The embedding of a region: CLS of a second pass on its box, or its mean patch token.
std::vector<float> embed_region(Engine& engine, const cv::Mat& rgb, const cv::Mat& component, int label, const cv::Rect& box,
                                const FeatureMap* tokens, int gh, int gw, const std::string& how) {
  if (how == "crop") {
    const int px = (rgb.cols + gw - 1) / gw, py = (rgb.rows + gh - 1) / gh;  // 2 patches of margin
    cv::Rect r(box.x - 2 * px, box.y - 2 * py, box.width + 4 * px, box.height + 4 * py);
    r &= cv::Rect(0, 0, rgb.cols, rgb.rows);
    const Attention a = engine.attention(rgb(r).clone());
    return unit(require_feature(a, "cls", "lightcluster --region-embed crop").data);
  }
  std::vector<double> sum(tokens->dim, 0.0);
  int n = 0;
  for (int i = 0; i < gh; ++i)
    for (int j = 0; j < gw; ++j) {
      const int x = std::min(rgb.cols - 1, static_cast<int>((j + 0.5) * rgb.cols / gw));
      const int y = std::min(rgb.rows - 1, static_cast<int>((i + 0.5) * rgb.rows / gh));
      if (component.at<uint16_t>(y, x) != label) continue;
      const float* t = tokens->data.data() + static_cast<int64_t>(i * gw + j) * tokens->dim;
      for (int c = 0; c < tokens->dim; ++c) sum[c] += t[c];
      ++n;
    }
  if (n == 0) {  // a region smaller than a patch centre: the patch under its box's centre
    const int i = std::min(gh - 1, (box.y + box.height / 2) * gh / rgb.rows);
    const int j = std::min(gw - 1, (box.x + box.width / 2) * gw / rgb.cols);
    const float* t = tokens->data.data() + static_cast<int64_t>(i * gw + j) * tokens->dim;
    for (int c = 0; c < tokens->dim; ++c) sum[c] = t[c];
  }
  std::vector<float> e(sum.begin(), sum.end());
  return unit(e);
}

// An image's regions: the patch votes refined to the image, 8-connected components
// (the small ones dropped) numbered 1..R, and each region's unit embedding.
struct Regions {
  cv::Mat labels;  // CV_16U
  std::vector<std::vector<float>> embeddings;
};

Regions regions_of(Engine& engine, const cv::Mat& rgb, const Attention& a, const ImageMask& pm, int gh, int gw,
                   const LightClusterRun& run) {
  const LightClusterParams& p = run.params;
  cv::Mat s(gh, gw, CV_32F);
  // Refined: the votes, or, where no patch passed the vote and the empty guard took the
  // image level's mask, that mask.
  const bool voted = std::any_of(pm.score.begin(), pm.score.end(), [&](float v) { return v * 3.0f >= p.vote - 0.01f; });
  for (int i = 0; i < gh * gw; ++i) s.at<float>(i / gw, i % gw) = voted ? pm.score[i] : static_cast<float>(pm.fg[i]);
  cv::Mat up;
  if (run.refine == "jbu") {
    JbuParams jp;
    jp.spatial_sigma = run.jbu_spatial_sigma;
    jp.range_sigma = run.jbu_range_sigma;
    up = JointBilateralUpsampler(rgb, gh, gw, jp, 0.0).apply(s);  // one map: no table
  } else {
    up = upsample_bilinear(s, rgb.rows, rgb.cols);
  }
  const cv::Mat fg = up >= static_cast<float>((p.vote - 0.5) / 3.0);
  cv::Mat comp, stats, centres;
  const int n = cv::connectedComponentsWithStats(fg, comp, stats, centres, 8, CV_32S);
  Regions out;
  out.labels = cv::Mat::zeros(rgb.size(), CV_16U);
  int next = 0;
  const double min_area = run.min_component * rgb.total();
  const FeatureMap* tokens = run.region_embed == "pool" ? &require_feature(a, "patch_tokens", "lightcluster") : nullptr;
  for (int r = 1; r < n && next < 65535; ++r) {
    if (stats.at<int>(r, cv::CC_STAT_AREA) < min_area) continue;
    out.labels.setTo(++next, comp == r);
    const cv::Rect box(stats.at<int>(r, cv::CC_STAT_LEFT), stats.at<int>(r, cv::CC_STAT_TOP),
                       stats.at<int>(r, cv::CC_STAT_WIDTH), stats.at<int>(r, cv::CC_STAT_HEIGHT));
    out.embeddings.push_back(embed_region(engine, rgb, out.labels, next, box, tokens, gh, gw, run.region_embed));
  }
  return out;
}

// Whether high-norm tokens are left out (spec A9): on, off, or auto = the archive is a
// DINOv2 without registers (its metadata says so).
bool drop_high_norm(const LightClusterParams& p, const Attention& a) {
  if (p.high_norm != "auto") return p.high_norm == "on";
  const auto it = a.meta.find("metadata");
  if (it == a.meta.end()) return false;
  json meta;
  try {
    meta = read_json(it->second, "attention metadata");
  } catch (const std::exception&) {
    return false;
  }
  std::string id = meta.value("model_id", "");
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::tolower(c); });
  const json prefix = meta.value("prefix_tokens", json::object());
  return id.find("dinov2") != std::string::npos && prefix.value("registers", 0) == 0;
}

std::vector<uint8_t> outliers_of(const FeatureMap& keys, bool drop) {
  return drop ? high_norm_tokens(keys.data.data(), keys.rows(), keys.dim) : std::vector<uint8_t>();
}

// The nearest of k unit centroids (k×d) to a unit vector.
int nearest(const std::vector<float>& centroids, const std::vector<float>& v) {
  const int d = static_cast<int>(v.size());
  int best = 0;
  float bv = -2;
  for (int c = 0; c * d < static_cast<int>(centroids.size()); ++c) {
    float dot = 0;
    for (int j = 0; j < d; ++j) dot += centroids[static_cast<size_t>(c) * d + j] * v[j];
    if (dot > bv) {
      bv = dot;
      best = c;
    }
  }
  return best;
}

json settings_json(const LightClusterRun& run) {
  const LightClusterParams& p = run.params;
  return {{"sample", p.sample},          {"restarts", p.restarts},
          {"max_iterations", p.max_iterations}, {"tolerance", p.tolerance},
          {"seed", p.seed},              {"categories", p.categories},
          {"vote", p.vote},              {"fg_rule", p.fg_rule},
          {"classes", run.classes},      {"refine", run.refine},
          {"region_embed", run.region_embed}, {"min_component", run.min_component},
          {"jbu_spatial_sigma", run.jbu_spatial_sigma}, {"jbu_range_sigma", run.jbu_range_sigma},
          {"high_norm", p.high_norm}};
}

}  // namespace

LightClusterResult run_lightcluster(Engine& engine, const std::vector<std::string>& images, const std::string& out_dir,
                                    const LightClusterRun& run,
                                    const std::function<void(const std::string&, int, int)>& progress) {
  const LightClusterParams& p = run.params;
  check_params(p);
  check::one_of("refine", run.refine, {"jbu", "none"});
  check::one_of("region_embed", run.region_embed, {"crop", "pool"});
  check::at_least("classes", run.classes, 1);
  check::in_interval("min_component", run.min_component, 0, false, 1, true);
  auto tick = [&](const char* stage, int done, int total) {
    if (progress) progress(stage, done, total);
  };
  LightClusterResult result;
  const int n_img = static_cast<int>(images.size());
  std::vector<Seen> seen(n_img);
  std::vector<LightClusterImage>& out = result.images;
  out.resize(n_img);

  // ---- pass 1: features, a uniform (reservoir) sample of unit keys, each image's CLS
  int d = 0, gh = 0, gw = 0;
  std::vector<float> sample;
  std::vector<uint8_t> border;
  std::vector<float> sample_cls_attn;
  std::mt19937_64 rng(p.seed);
  int64_t seen_patches = 0;
  const bool cls_attn = p.fg_rule == "cls-attn";
  bool high_norm = false;
  for (int m = 0; m < n_img; ++m) {
    out[m].image = images[m];
    seen[m].path = images[m];
    seen[m].stem = fs::path(images[m]).stem().string();
    try {
      const cv::Mat rgb = read_rgb(images[m]).rgb;
      const Attention a = engine.attention(rgb);
      const FeatureMap& keys = require_feature(a, "keys", "lightcluster");
      const FeatureMap& cls = require_feature(a, "cls", "lightcluster");
      const FeatureMap* ca = cls_attn ? &require_feature(a, "cls_attention", "lightcluster --fg-rule cls-attn") : nullptr;
      if (run.region_embed == "pool") require_feature(a, "patch_tokens", "lightcluster --region-embed pool");
      if (d == 0) {
        d = keys.dim;
        gh = keys.h;
        gw = keys.w;
      } else if (keys.dim != d || keys.h != gh || keys.w != gw) {
        throw Error("keys of " + std::to_string(keys.h) + "x" + std::to_string(keys.w) + "x" + std::to_string(keys.dim) +
                    " differ from the first image's " + std::to_string(gh) + "x" + std::to_string(gw) + "x" + std::to_string(d));
      }
      const std::vector<float> u = unit_rows(keys.data.data(), keys.rows(), d);
      high_norm = drop_high_norm(p, a);  // the same for every image of one source
      const std::vector<uint8_t> skip = outliers_of(keys, high_norm);
      for (int64_t i = 0; i < keys.rows(); ++i, ++seen_patches) {
        if (!skip.empty() && skip[i]) continue;  // not in the fits
        const int y = static_cast<int>(i / gw), x = static_cast<int>(i % gw);
        const uint8_t b = y == 0 || x == 0 || y == gh - 1 || x == gw - 1;
        int64_t slot = static_cast<int64_t>(border.size());
        if (slot >= p.sample) {
          slot = std::uniform_int_distribution<int64_t>(0, seen_patches)(rng);
          if (slot >= p.sample) continue;
        }
        if (slot == static_cast<int64_t>(border.size())) {
          sample.insert(sample.end(), u.begin() + i * d, u.begin() + (i + 1) * d);
          border.push_back(b);
          if (ca) sample_cls_attn.push_back(ca->data[i]);
        } else {
          std::copy(u.begin() + i * d, u.begin() + (i + 1) * d, sample.begin() + slot * d);
          border[slot] = b;
          if (ca) sample_cls_attn[slot] = ca->data[i];
        }
      }
      seen[m].cls = unit(cls.data);
      seen[m].ok = true;
    } catch (const InvalidArgument&) {
      throw;  // the source lacks a kind: the same for every image
    } catch (const std::exception& e) {
      out[m].error = one_line_message(e);
      ++result.failures;
    }
    tick("features", m + 1, n_img);
  }
  std::vector<int> ok;
  for (int m = 0; m < n_img; ++m)
    if (seen[m].ok) ok.push_back(m);
  if (ok.empty()) throw Error("lightcluster: no image could be read");

  // ---- dataset level and categories
  const DatasetLevel level = fit_dataset_level(sample, d, border, cls_attn ? &sample_cls_attn : nullptr, p);
  std::vector<float> cls_all;
  for (int m : ok) cls_all.insert(cls_all.end(), seen[m].cls.begin(), seen[m].cls.end());
  const int cls_dim = static_cast<int>(seen[ok[0]].cls.size());
  const KMeans cat_model = fit_image_categories(cls_all, cls_dim, p);
  const std::vector<int>& cat_of = cat_model.labels;
  const int n_cat = cat_of.empty() ? 0 : *std::max_element(cat_of.begin(), cat_of.end()) + 1;

  // ---- pass 2, a category at a time: patch masks, refinement, components, embeddings.
  // Each image's components and region embeddings go to a work folder (embeddings first,
  // the component map last: its presence marks the image done); a run with the same
  // source, settings and images resumes from it.
  const fs::path tmp = fs::path(out_dir) / ".lightcluster-work";
  const json signature = {{"source", engine.source_id()}, {"settings", settings_json(run)}, {"images", images}};
  std::error_code ec;
  bool resuming = false;
  try {
    resuming = fs::exists(tmp / "run.json", ec) && json::parse(read_file((tmp / "run.json").string())) == signature;
  } catch (const std::exception&) {
    resuming = false;
  }
  if (!resuming) fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw Error(tmp.string() + ": cannot create (" + ec.message() + ")");
  if (!resuming) write_file_atomic((tmp / "run.json").string(), signature.dump());
  auto done_file = [&](int m) { return tmp / (seen[m].stem + ".png"); };
  auto emb_file = [&](int m) { return tmp / (seen[m].stem + ".emb.json"); };
  std::vector<std::vector<float>> embeddings;  // per region, in (image, label) order
  std::vector<std::pair<int, int>> owner;      // (image, component label)
  json categories = json::array();
  int done = 0;
  auto take_saved = [&](int m, int c) {  // an image finished by an earlier run
    const json e = json::parse(read_file(emb_file(m).string()));
    for (size_t r = 0; r < e.size(); ++r) {
      embeddings.push_back(e[r].get<std::vector<float>>());
      owner.emplace_back(m, static_cast<int>(r) + 1);
    }
    out[m].category = c;
    out[m].regions = static_cast<int>(e.size());
    ++result.resumed;
  };
  for (int c = 0; c < n_cat; ++c) {
    std::vector<int> members;
    for (size_t k = 0; k < ok.size(); ++k)
      if (cat_of[k] == c) members.push_back(ok[k]);
    const fs::path cat_file = tmp / ("category" + std::to_string(c) + ".json");
    const bool all_done = std::all_of(members.begin(), members.end(), [&](int m) { return fs::exists(done_file(m), ec); });
    json names = json::array();
    for (int m : members) names.push_back(seen[m].stem);
    if (all_done && fs::exists(cat_file, ec)) {
      for (int m : members) {
        take_saved(m, c);
        tick("masks", ++done, static_cast<int>(ok.size()));
      }
      categories.push_back(json::parse(read_file(cat_file.string())));
      continue;
    }
    // The category level from a uniform sample of its images' keys (memory: the sample).
    std::vector<float> cat_sample;
    int64_t cat_seen = 0;
    std::mt19937_64 cat_rng(p.seed + 7919ULL * static_cast<uint64_t>(c + 1));
    for (int m : members) {
      const Attention a = engine.attention(read_rgb(seen[m].path).rgb);  // a cache hit when the cache is on
      const FeatureMap& keys = require_feature(a, "keys", "lightcluster");
      const std::vector<float> u = unit_rows(keys.data.data(), keys.rows(), d);
      const std::vector<uint8_t> skip = outliers_of(keys, high_norm);
      for (int64_t i = 0; i < keys.rows(); ++i, ++cat_seen) {
        if (!skip.empty() && skip[i]) continue;
        int64_t slot = static_cast<int64_t>(cat_sample.size()) / d;
        if (slot >= p.sample) {
          slot = std::uniform_int_distribution<int64_t>(0, cat_seen)(cat_rng);
          if (slot >= p.sample) continue;
          std::copy(u.begin() + i * d, u.begin() + (i + 1) * d, cat_sample.begin() + slot * d);
        } else {
          cat_sample.insert(cat_sample.end(), u.begin() + i * d, u.begin() + (i + 1) * d);
        }
      }
    }
    const CategoryLevel cat = fit_category_level(cat_sample, d, level, p);
    cat_sample = std::vector<float>();
    for (size_t k = 0; k < members.size(); ++k) {
      const int m = members[k];
      out[m].category = c;
      if (fs::exists(done_file(m), ec)) {
        take_saved(m, c);
        tick("masks", ++done, static_cast<int>(ok.size()));
        continue;
      }
      try {
        const cv::Mat rgb = read_rgb(seen[m].path).rgb;
        const Attention a = engine.attention(rgb);
        const FeatureMap& keys = require_feature(a, "keys", "lightcluster");
        const std::vector<uint8_t> skip = outliers_of(keys, high_norm);
        const ImageMask pm = image_patch_mask({keys.data.data(), gh, gw, d}, level, cat, p, skip.empty() ? nullptr : &skip);
        const Regions reg = regions_of(engine, rgb, a, pm, gh, gw, run);
        json saved = json::array();
        for (size_t r = 0; r < reg.embeddings.size(); ++r) {
          embeddings.push_back(reg.embeddings[r]);
          owner.emplace_back(m, static_cast<int>(r) + 1);
          saved.push_back(reg.embeddings[r]);
        }
        const cv::Mat& labels = reg.labels;
        const int next = static_cast<int>(reg.embeddings.size());
        out[m].regions = next;
        write_file_atomic(emb_file(m).string(), saved.dump());
        write_png_atomic(done_file(m).string(), labels);  // last: marks the image done
      } catch (const std::exception& e) {
        out[m].error = one_line_message(e);
        ++result.failures;
      }
      tick("masks", ++done, static_cast<int>(ok.size()));
    }
    const json cat_json = {{"cls", std::vector<float>(cat_model.centroids.begin() + static_cast<int64_t>(c) * cls_dim,
                                                       cat_model.centroids.begin() + static_cast<int64_t>(c + 1) * cls_dim)},
                           {"fg", cat.fg},
                           {"bg", cat.bg},
                           {"images", names},
                           {"sampled_patches", std::min<int64_t>(cat_seen, p.sample)}};
    write_file_atomic(cat_file.string(), cat_json.dump());
    categories.push_back(cat_json);
  }

  // ---- classes: spherical k-means of the region embeddings; labels written
  std::vector<int> class_of(embeddings.size(), 0);
  std::vector<float> class_centroids;
  int n_classes = 0;
  if (!embeddings.empty()) {
    const int e = static_cast<int>(embeddings[0].size());
    std::vector<float> all;
    for (const auto& v : embeddings) all.insert(all.end(), v.begin(), v.end());
    n_classes = static_cast<int>(std::min<size_t>(run.classes, embeddings.size()));
    const KMeans km = spherical_kmeans(all, e, n_classes, {}, p);
    class_of = km.labels;
    class_centroids = km.centroids;
  }
  std::map<std::pair<int, int>, int> class_of_region;
  for (size_t i = 0; i < owner.size(); ++i) class_of_region[owner[i]] = class_of[i];
  done = 0;
  for (int m : ok) {
    if (!out[m].error.empty()) continue;
    const fs::path t = done_file(m);
    try {
      cv::Mat labels = cv::imread(t.string(), cv::IMREAD_UNCHANGED);
      if (labels.empty()) throw Error(t.string() + ": lost");
      for (int y = 0; y < labels.rows; ++y)
        for (int x = 0; x < labels.cols; ++x) {
          uint16_t& v = labels.at<uint16_t>(y, x);
          if (v) v = static_cast<uint16_t>(1 + class_of_region[{m, v}]);
        }
      out[m].labels = (fs::path(out_dir) / (seen[m].stem + ".png")).string();
      write_png_atomic(out[m].labels, labels);
    } catch (const std::exception& e) {
      out[m].error = one_line_message(e);
      ++result.failures;
    }
    tick("labels", ++done, static_cast<int>(ok.size()));
  }

  json classes = json::array();
  for (int k = 0; k < n_classes; ++k) {
    const int e = static_cast<int>(class_centroids.size()) / n_classes;
    classes.push_back(std::vector<float>(class_centroids.begin() + k * e, class_centroids.begin() + (k + 1) * e));
  }
  result.model = {{"method", "lightcluster"},
                  {"source", engine.source_id()},
                  {"keys", {{"grid", {gh, gw}}, {"dim", d}, {"high_norm_filtered", high_norm}}},
                  {"settings", settings_json(run)},
                  {"dataset",
                   {{"fg", level.fg}, {"bg", level.bg}, {"border_share_fg", level.border_share_fg},
                    {"border_share_bg", level.border_share_bg}, {"sampled_patches", border.size()},
                    {"patches", seen_patches}}},
                  {"categories", categories},
                  {"classes", classes},
                  {"labels", "0 = background, 1 + k = region class k (the nearest of classes)"}};
  write_file_atomic((fs::path(out_dir) / "lightcluster.json").string(), result.model.dump(1) + "\n");
  if (result.failures == 0) fs::remove_all(tmp, ec);  // kept after failures: a rerun resumes
  return result;
}

LightClusterResult apply_lightcluster(Engine& engine, const std::vector<std::string>& images, const std::string& out_dir,
                                      const json& model, const std::string& model_name,
                                      const std::function<void(const std::string&, int, int)>& progress) {
  LightClusterRun run;
  DatasetLevel level;
  std::vector<CategoryLevel> cats;
  std::vector<float> cat_cls, classes;
  int gh = 0, gw = 0, d = 0;
  try {
    if (model.at("method") != "lightcluster") throw InvalidArgument(model_name + ": not a LightCluster model");
    const json& st = model.at("settings");
    LightClusterParams& p = run.params;
    p.vote = st.at("vote").get<int>();
    p.fg_rule = st.at("fg_rule").get<std::string>();
    p.max_iterations = st.at("max_iterations").get<int>();
    p.tolerance = st.at("tolerance").get<double>();
    run.refine = st.at("refine").get<std::string>();
    run.region_embed = st.at("region_embed").get<std::string>();
    run.min_component = st.at("min_component").get<double>();
    run.jbu_spatial_sigma = st.value("jbu_spatial_sigma", 1.0);
    run.jbu_range_sigma = st.value("jbu_range_sigma", 0.1);
    p.high_norm = st.value("high_norm", std::string("auto"));
    gh = model.at("keys").at("grid").at(0).get<int>();
    gw = model.at("keys").at("grid").at(1).get<int>();
    d = model.at("keys").at("dim").get<int>();
    level.fg = model.at("dataset").at("fg").get<std::vector<float>>();
    level.bg = model.at("dataset").at("bg").get<std::vector<float>>();
    for (const auto& c : model.at("categories")) {
      cats.push_back({c.at("fg").get<std::vector<float>>(), c.at("bg").get<std::vector<float>>()});
      const auto v = c.at("cls").get<std::vector<float>>();
      cat_cls.insert(cat_cls.end(), v.begin(), v.end());
    }
    for (const auto& c : model.at("classes")) {
      const auto v = c.get<std::vector<float>>();
      classes.insert(classes.end(), v.begin(), v.end());
    }
    if (cats.empty() || static_cast<int>(level.fg.size()) != d) throw InvalidArgument(model_name + ": inconsistent centroids");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw InvalidArgument(model_name + ": not a LightCluster model (" + one_line_message(e) + ")");
  }
  check_params(run.params);
  LightClusterResult result;
  result.model = model;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  for (size_t m = 0; m < images.size(); ++m) {
    LightClusterImage im;
    im.image = images[m];
    try {
      const cv::Mat rgb = read_rgb(images[m]).rgb;
      const Attention a = engine.attention(rgb);
      const FeatureMap& keys = require_feature(a, "keys", "lightcluster");
      const FeatureMap& cls = require_feature(a, "cls", "lightcluster");
      if (keys.h != gh || keys.w != gw || keys.dim != d)
        throw InvalidArgument(model_name + ": made with " + std::to_string(gh) + "x" + std::to_string(gw) + "x" +
                              std::to_string(d) + " keys, the source gives " + std::to_string(keys.h) + "x" +
                              std::to_string(keys.w) + "x" + std::to_string(keys.dim));
      im.category = nearest(cat_cls, unit(cls.data));
      const std::vector<uint8_t> skip = outliers_of(keys, drop_high_norm(run.params, a));
      const ImageMask pm =
          image_patch_mask({keys.data.data(), gh, gw, d}, level, cats[im.category], run.params, skip.empty() ? nullptr : &skip);
      Regions reg = regions_of(engine, rgb, a, pm, gh, gw, run);
      std::vector<int> class_of(reg.embeddings.size());
      for (size_t r = 0; r < reg.embeddings.size(); ++r) class_of[r] = classes.empty() ? 0 : nearest(classes, reg.embeddings[r]);
      for (int y = 0; y < reg.labels.rows; ++y)
        for (int x = 0; x < reg.labels.cols; ++x) {
          uint16_t& v = reg.labels.at<uint16_t>(y, x);
          if (v) v = static_cast<uint16_t>(1 + class_of[v - 1]);
        }
      im.regions = static_cast<int>(reg.embeddings.size());
      im.labels = (fs::path(out_dir) / (fs::path(images[m]).stem().string() + ".png")).string();
      write_png_atomic(im.labels, reg.labels);
    } catch (const InvalidArgument&) {
      throw;
    } catch (const std::exception& e) {
      im.error = one_line_message(e);
      ++result.failures;
    }
    result.images.push_back(im);
    if (progress) progress("labels", static_cast<int>(m + 1), static_cast<int>(images.size()));
  }
  return result;
}

}  // namespace m2n2
