// LightCluster's three-level clustering of ViT keys into patch masks (spec lightcluster.md A2–A6).
#include "m2n2/whole_image/lightcluster.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "core/check.hpp"

namespace m2n2 {

void check_params(const LightClusterParams& p) {
  check::at_least("sample", p.sample, 2);
  check::in_range("restarts", p.restarts, 1, 1000);
  check::in_range("max_iterations", p.max_iterations, 1, 100000);
  check::non_negative("tolerance", p.tolerance);
  check::at_least("categories", p.categories, 1);
  check::in_range("vote", p.vote, 1, 3);
  check::one_of("high_norm", p.high_norm, {"auto", "on", "off"});
  check::one_of("fg_rule", p.fg_rule, {"border", "cls-attn"});
}

std::vector<float> unit_rows(const float* data, int64_t n, int d) {
  std::vector<float> out(data, data + n * d);
  for (int64_t i = 0; i < n; ++i) {
    float* r = out.data() + i * d;
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(r[j]) * r[j];
    if (s > 0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(s));
      for (int j = 0; j < d; ++j) r[j] *= inv;
    }
  }
  return out;
}

namespace {

float dot(const float* a, const float* b, int d) {
  float s = 0;
  for (int j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

// Assigns every point to its nearest centroid; returns the objective.
double assign(const std::vector<float>& x, int d, const std::vector<float>& mu, int k, std::vector<int>& labels) {
  const int64_t n = static_cast<int64_t>(x.size()) / d;
  labels.resize(n);
  double obj = 0;
#pragma omp parallel for num_threads(num_threads()) reduction(+ : obj) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int best = 0;
    float bv = -std::numeric_limits<float>::infinity();
    for (int c = 0; c < k; ++c) {
      const float v = dot(x.data() + i * d, mu.data() + static_cast<int64_t>(c) * d, d);
      if (v > bv) {
        bv = v;
        best = c;
      }
    }
    labels[i] = best;
    obj += bv;
  }
  return obj;
}

// One Lloyd run from `mu`; an emptied cluster falls back to `fallback`'s centroid.
KMeans lloyd(const std::vector<float>& x, int d, int k, std::vector<float> mu, const std::vector<float>& fallback,
             const LightClusterParams& p) {
  KMeans r;
  double prev = 0;
  for (int it = 0;; ++it) {
    r.objective = assign(x, d, mu, k, r.labels);
    if (it + 1 >= p.max_iterations || (it > 0 && std::fabs(r.objective - prev) <= p.tolerance * std::fabs(r.objective)))
      break;
    prev = r.objective;
    std::vector<double> sum(static_cast<size_t>(k) * d, 0.0);
    std::vector<int64_t> count(k, 0);
    for (size_t i = 0; i < r.labels.size(); ++i) {
      const int c = r.labels[i];
      ++count[c];
      for (int j = 0; j < d; ++j) sum[static_cast<size_t>(c) * d + j] += x[i * d + j];
    }
    for (int c = 0; c < k; ++c) {
      float* m = mu.data() + static_cast<int64_t>(c) * d;
      double norm = 0;
      for (int j = 0; j < d; ++j) norm += sum[static_cast<size_t>(c) * d + j] * sum[static_cast<size_t>(c) * d + j];
      if (count[c] == 0 || norm <= 0) {
        std::copy(fallback.begin() + static_cast<int64_t>(c) * d, fallback.begin() + static_cast<int64_t>(c + 1) * d, m);
        continue;
      }
      const double inv = 1.0 / std::sqrt(norm);
      for (int j = 0; j < d; ++j) m[j] = static_cast<float>(sum[static_cast<size_t>(c) * d + j] * inv);
    }
  }
  r.centroids = std::move(mu);
  return r;
}

// k-means++ on the sphere: the next centre drawn with probability ∝ 1 − cos to the nearest.
std::vector<float> plus_plus(const std::vector<float>& x, int d, int k, std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(x.size()) / d;
  std::vector<float> mu;
  std::uniform_int_distribution<int64_t> first(0, n - 1);
  const int64_t i0 = first(rng);
  mu.insert(mu.end(), x.begin() + i0 * d, x.begin() + (i0 + 1) * d);
  std::vector<double> dist(n, std::numeric_limits<double>::infinity());
  for (int c = 1; c < k; ++c) {
    const float* last = mu.data() + static_cast<int64_t>(c - 1) * d;
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      dist[i] = std::min(dist[i], std::max(0.0, 1.0 - static_cast<double>(dot(x.data() + i * d, last, d))));
      total += dist[i];
    }
    int64_t pick = 0;
    if (total > 0) {
      double u = std::uniform_real_distribution<double>(0.0, total)(rng);
      for (pick = 0; pick < n - 1 && (u -= dist[pick]) > 0; ++pick) {
      }
    } else {
      pick = first(rng);
    }
    mu.insert(mu.end(), x.begin() + pick * d, x.begin() + (pick + 1) * d);
  }
  return mu;
}

}  // namespace

KMeans spherical_kmeans(const std::vector<float>& points, int d, int k, const std::vector<float>& init,
                        const LightClusterParams& p) {
  const int64_t n = d > 0 ? static_cast<int64_t>(points.size()) / d : 0;
  if (d <= 0 || k < 1 || n < 1) throw InvalidArgument("k-means: no points or no clusters");
  if (!init.empty()) {
    if (static_cast<int64_t>(init.size()) != static_cast<int64_t>(k) * d) throw InvalidArgument("k-means: init is not k x d");
    return lloyd(points, d, k, init, init, p);
  }
  KMeans best;
  best.objective = -std::numeric_limits<double>::infinity();
  for (int r = 0; r < p.restarts; ++r) {
    std::mt19937_64 rng(p.seed * 1000003ULL + static_cast<uint64_t>(r));
    std::vector<float> mu = plus_plus(points, d, static_cast<int>(std::min<int64_t>(k, n)), rng);
    // Fewer points than clusters: the extra clusters start at the first centre and stay empty.
    while (static_cast<int64_t>(mu.size()) < static_cast<int64_t>(k) * d) {
      const std::vector<float> first(mu.begin(), mu.begin() + d);
      mu.insert(mu.end(), first.begin(), first.end());
    }
    KMeans run = lloyd(points, d, k, mu, mu, p);
    if (run.objective > best.objective) best = std::move(run);
  }
  return best;
}

DatasetLevel fit_dataset_level(const std::vector<float>& sample, int d, const std::vector<uint8_t>& border,
                               const std::vector<float>* cls_attention, const LightClusterParams& p) {
  check_params(p);
  const int64_t n = d > 0 ? static_cast<int64_t>(sample.size()) / d : 0;
  if (n < 2) throw InvalidArgument("LightCluster: fewer than 2 patches to cluster");
  if (static_cast<int64_t>(border.size()) != n) throw InvalidArgument("LightCluster: one border flag per sampled patch");
  const KMeans km = spherical_kmeans(sample, d, 2, {}, p);
  double share[2] = {0, 0}, count[2] = {0, 0};
  int fg = 0;
  if (p.fg_rule == "cls-attn") {
    if (!cls_attention || static_cast<int64_t>(cls_attention->size()) != n)
      throw InvalidArgument("LightCluster: --fg-rule cls-attn needs the CLS attention of every sampled patch");
    double mass[2] = {0, 0};
    for (int64_t i = 0; i < n; ++i) {
      mass[km.labels[i]] += (*cls_attention)[i];
      count[km.labels[i]] += 1;
    }
    fg = mass[1] / std::max(1.0, count[1]) > mass[0] / std::max(1.0, count[0]) ? 1 : 0;
  }
  double borders = 0;
  for (int64_t i = 0; i < n; ++i)
    if (border[i]) {
      share[km.labels[i]] += 1;
      borders += 1;
    }
  if (borders > 0) {
    share[0] /= borders;
    share[1] /= borders;
  }
  if (p.fg_rule == "border") {
    for (int64_t i = 0; i < n; ++i) count[km.labels[i]] += 1;
    // The object touches the border less; on a tie, the smaller cluster is the object.
    fg = share[1] < share[0] || (share[1] == share[0] && count[1] < count[0]) ? 1 : 0;
  }
  DatasetLevel out;
  out.fg.assign(km.centroids.begin() + fg * d, km.centroids.begin() + (fg + 1) * d);
  out.bg.assign(km.centroids.begin() + (1 - fg) * d, km.centroids.begin() + (2 - fg) * d);
  out.border_share_fg = share[fg];
  out.border_share_bg = share[1 - fg];
  return out;
}

KMeans fit_image_categories(const std::vector<float>& cls, int d, const LightClusterParams& p) {
  const int64_t n = d > 0 ? static_cast<int64_t>(cls.size()) / d : 0;
  if (n == 0) return {};
  const int k = static_cast<int>(std::min<int64_t>(p.categories, n));
  return spherical_kmeans(unit_rows(cls.data(), n, d), d, k, {}, p);
}

std::vector<int> image_categories(const std::vector<float>& cls, int d, const LightClusterParams& p) {
  return fit_image_categories(cls, d, p).labels;
}

void empty_guard(std::vector<uint8_t>& fg, const std::vector<uint8_t>& image_level) {
  if (std::any_of(fg.begin(), fg.end(), [](uint8_t v) { return v != 0; })) return;
  const double n = static_cast<double>(image_level.size());
  const double c = static_cast<double>(std::count(image_level.begin(), image_level.end(), uint8_t(1)));
  if (n > 0 && c >= 0.01 * n && c <= 0.9 * n) fg = image_level;
}

CategoryLevel fit_category_level(const std::vector<float>& sample, int d, const DatasetLevel& dataset,
                                 const LightClusterParams& p) {
  if (static_cast<int>(dataset.fg.size()) != d) throw InvalidArgument("LightCluster: key width differs from the dataset level's");
  std::vector<float> init = dataset.fg;
  init.insert(init.end(), dataset.bg.begin(), dataset.bg.end());
  // One Lloyd run from the dataset centroids: centroid 0 stays the foreground.
  const KMeans cat = spherical_kmeans(sample, d, 2, init, p);
  CategoryLevel out;
  out.fg.assign(cat.centroids.begin(), cat.centroids.begin() + d);
  out.bg.assign(cat.centroids.begin() + d, cat.centroids.end());
  return out;
}

std::vector<uint8_t> high_norm_tokens(const float* keys, int64_t n, int d, double k) {
  std::vector<double> norm(n);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(keys[i * d + j]) * keys[i * d + j];
    norm[i] = std::sqrt(s);
  }
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::nth_element(v.begin(), v.begin() + static_cast<int64_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  const double med = median(norm);
  std::vector<double> dev(n);
  for (int64_t i = 0; i < n; ++i) dev[i] = std::fabs(norm[i] - med);
  const double mad = median(dev);
  std::vector<uint8_t> out(n, 0);
  if (mad > 0)
    for (int64_t i = 0; i < n; ++i) out[i] = norm[i] > med + k * mad;
  return out;
}

ImageMask image_patch_mask(const ImageKeys& im, const DatasetLevel& dataset, const CategoryLevel& category,
                           const LightClusterParams& p, const std::vector<uint8_t>* outliers) {
  const int d = im.d;
  if (im.h <= 0 || im.w <= 0 || !im.keys || static_cast<int>(dataset.fg.size()) != d ||
      static_cast<int>(category.fg.size()) != d)
    throw InvalidArgument("LightCluster: keys of another width than the centroids'");
  const int64_t n = static_cast<int64_t>(im.h) * im.w;
  const std::vector<float> u = unit_rows(im.keys, n, d);
  std::vector<float> ds = dataset.fg, cs = category.fg;
  ds.insert(ds.end(), dataset.bg.begin(), dataset.bg.end());
  cs.insert(cs.end(), category.bg.begin(), category.bg.end());
  std::vector<int> ld, lc;
  assign(u, d, ds, 2, ld);
  assign(u, d, cs, 2, lc);
  ImageMask out;
  out.dataset.resize(n);
  out.category.resize(n);
  out.image.resize(n);
  out.fg.resize(n);
  out.score.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    out.dataset[i] = ld[i] == 0;
    out.category[i] = lc[i] == 0;
  }
  // Image level from the category's centroids, fitted without the outlier patches; a
  // side left with < 2 patches keeps y^C.
  const bool drop = outliers && std::any_of(outliers->begin(), outliers->end(), [](uint8_t v) { return v != 0; });
  std::vector<float> fit;
  if (drop) {
    for (int64_t i = 0; i < n; ++i)
      if (!(*outliers)[i]) fit.insert(fit.end(), u.begin() + i * d, u.begin() + (i + 1) * d);
  }
  std::vector<int> li;
  int64_t fit_n = n;
  if (drop && !fit.empty()) {
    const KMeans img = spherical_kmeans(fit, d, 2, cs, p);
    assign(u, d, img.centroids, 2, li);
    fit_n = static_cast<int64_t>(fit.size()) / d;
  } else {
    li = spherical_kmeans(u, d, 2, cs, p).labels;
  }
  int64_t fg_count = 0;
  for (int64_t i = 0; i < n; ++i) fg_count += li[i] == 0 && !(drop && (*outliers)[i]);
  for (int64_t i = 0; i < n; ++i) out.image[i] = (fg_count < 2 || fit_n - fg_count < 2) ? out.category[i] : li[i] == 0;
  for (int64_t i = 0; i < n; ++i) {
    out.fg[i] = vote_foreground(out.dataset[i], out.category[i], out.image[i], p.vote);
    out.score[i] = static_cast<float>(out.dataset[i] + out.category[i] + out.image[i]) / 3.0f;
  }
  if (drop) {  // an outlier patch takes the majority of its non-outlier 4-neighbours
    const std::vector<uint8_t> fg0 = out.fg;
    const std::vector<float> s0 = out.score;
    for (int64_t i = 0; i < n; ++i) {
      if (!(*outliers)[i]) continue;
      const int y = static_cast<int>(i / im.w), x = static_cast<int>(i % im.w);
      int votes = 0, count = 0;
      float score = 0;
      const int nb[4][2] = {{-1, 0}, {1, 0}, {0, -1}, {0, 1}};
      for (const auto& o : nb) {
        const int yy = y + o[0], xx = x + o[1];
        if (yy < 0 || xx < 0 || yy >= im.h || xx >= im.w) continue;
        const int64_t j = static_cast<int64_t>(yy) * im.w + xx;
        if ((*outliers)[j]) continue;
        votes += fg0[j];
        score += s0[j];
        ++count;
      }
      out.fg[i] = count > 0 && 2 * votes > count;
      out.score[i] = count > 0 ? score / static_cast<float>(count) : 0.0f;
    }
  }
  empty_guard(out.fg, out.image);
  return out;
}

PatchMasks category_patch_masks(const std::vector<ImageKeys>& images, const DatasetLevel& dataset,
                                const LightClusterParams& p) {
  check_params(p);
  PatchMasks out;
  if (images.empty()) return out;
  const int d = images[0].d;
  std::vector<float> all;
  for (const ImageKeys& im : images) {
    if (im.d != d || im.h <= 0 || im.w <= 0 || !im.keys) throw InvalidArgument("LightCluster: images of one category need keys of one width");
    const auto u = unit_rows(im.keys, static_cast<int64_t>(im.h) * im.w, d);
    all.insert(all.end(), u.begin(), u.end());
  }
  const CategoryLevel cat = fit_category_level(all, d, dataset, p);
  out.category_fg = cat.fg;
  out.category_bg = cat.bg;
  for (const ImageKeys& im : images) {
    ImageMask m = image_patch_mask(im, dataset, cat, p);
    out.fg.push_back(std::move(m.fg));
    out.score.push_back(std::move(m.score));
    out.dataset.push_back(std::move(m.dataset));
    out.category.push_back(std::move(m.category));
    out.image.push_back(std::move(m.image));
  }
  return out;
}

}  // namespace m2n2
