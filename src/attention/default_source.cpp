#include "m2n2/attention/default_source.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "attention/sources.hpp"
#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/attention/graph_segmentation.hpp"
#include "m2n2/core/memory.hpp"

namespace m2n2 {

DefaultSourceSettings DefaultSourceSettings::parse(const std::string& text) {
  DefaultSourceSettings s;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw Error("source default: expected key=value, got '" + item + "'");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    double x;
    try {
      size_t pos;
      x = std::stod(v, &pos);
      if (pos != v.size()) throw 0;
    } catch (...) {
      throw Error("source default: value of " + k + " is not a number: '" + v + "'");
    }
    if (!std::isfinite(x)) throw Error("source default: " + k + " must be finite");
    // Integer settings: range-checked before the cast (a double beyond int is UB).
    const auto integer = [&]() {
      if (!(std::fabs(x) <= 1e6) || x != std::floor(x))
        throw Error("source default: " + k + " must be an integer in -1000000..1000000, got '" + v + "'");
      return static_cast<int>(x);
    };
    if (k == "grid") s.grid = integer();
    else if (k == "sigma_color") s.sigma_color = x;
    else if (k == "sigma_position") s.sigma_position = x;
    else if (k == "texture_weight") s.texture_weight = x;
    else if (k == "context_weight") s.context_weight = x;
    else if (k == "context_sigma") s.context_sigma = x;
    else if (k == "levels") s.levels = integer();
    else if (k == "edge_weight") s.edge_weight = x;
    else if (k == "edge_sigma") s.edge_sigma = x;
    else if (k == "radius") s.radius = integer();
    else if (k == "floor") s.floor = x;
    else if (k == "region_weight") s.region_weight = x;
    else if (k == "region_k") s.region_k = x;
    else if (k == "region_scales") s.region_scales = integer();
    else if (k == "region_min") s.region_min = integer();
    else if (k == "texture_feature") s.texture_feature = x;
    else if (k == "texture_sigma") s.texture_sigma = x;
    else if (k == "orient_feature") s.orient_feature = x;
    else if (k == "lightness_weight") s.lightness_weight = x;
    else if (k == "smooth") s.smooth = integer();
    else if (k == "smooth_sigma") s.smooth_sigma = x;
    else throw Error("source default: unknown setting '" + k + "'");
  }
  s.validate();
  return s;
}

void DefaultSourceSettings::validate() const {
  const DefaultSourceSettings& s = *this;
  if (s.grid < kMinGrid || s.grid > kMaxGrid)
    throw Error("grid must be in " + std::to_string(kMinGrid) + ".." + std::to_string(kMaxGrid) + ", got " +
                std::to_string(s.grid));
  if (s.levels < 1 || s.levels > 8) throw Error("source default: levels must be in 1..8");
  if (s.radius < 0) throw Error("source default: radius must be >= 0");
  if (s.smooth < 0 || s.smooth > 100) throw Error("source default: smooth must be in 0..100");
  if (!(s.sigma_color > 0) || !(s.sigma_position > 0)) throw Error("source default: sigmas must be > 0");
  if (!(s.floor >= 0 && s.floor < 1)) throw Error("source default: floor must be in [0, 1)");
  if (!(s.region_weight >= 0 && s.region_weight <= 1)) throw Error("source default: region_weight must be in [0, 1]");
  if (!(s.region_k > 0) || s.region_scales < 1 || s.region_scales > 8 || s.region_min < 1)
    throw Error("source default: region_k must be > 0, region_scales in 1..8, region_min >= 1");
  if (!(s.lightness_weight > 0)) throw Error("source default: lightness_weight must be > 0");
  if (s.texture_feature < 0 || s.texture_sigma < 0 || s.orient_feature < 0)
    throw Error("source default: texture_feature, texture_sigma and orient_feature must be >= 0");
}

double default_source_memory_bytes(const DefaultSourceSettings& s) {
  double bytes = 0;
  int g = s.grid;
  for (int level = 0; level < s.levels && g >= 4; ++level, g /= 2) {
    const double n = static_cast<double>(g) * g;
    bytes += 4.0 * n * n;  // one N×N fp32 map per level
  }
  return bytes;
}

std::string DefaultSourceSettings::to_string() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "grid=%d,sigma_color=%g,sigma_position=%g,texture_weight=%g,context_weight=%g,context_sigma=%g,"
                "edge_weight=%g,edge_sigma=%g,radius=%d,floor=%g,region_weight=%g,region_k=%g,region_scales=%d,"
                "region_min=%d,smooth=%d,smooth_sigma=%g,texture_feature=%g,texture_sigma=%g,levels=%d,lightness_weight=%g",
                grid, sigma_color, sigma_position, texture_weight, context_weight, context_sigma, edge_weight, edge_sigma,
                radius, floor, region_weight, region_k, region_scales, region_min, smooth, smooth_sigma, texture_feature, texture_sigma, levels,
                lightness_weight);
  std::string out = buf;
  if (orient_feature > 0) {
    std::snprintf(buf, sizeof buf, ",orient_feature=%g", orient_feature);
    out += buf;
  }
  return out;
}

namespace {

// Features of every cell of a g×g grid: Lab mean, Lab spread, blurred context.
// Oriented texture energy of the image (off by default): |second directional
// derivative| of lightness at two scales and four orientations, scale-normalised,
// at full resolution. Independent of the grid, so it is computed once per image.
std::vector<cv::Mat> oriented_energy(const cv::Mat& lab) {
  std::vector<cv::Mat> ch, out;
  cv::split(lab, ch);
  const double base = std::max(lab.cols, lab.rows) / 512.0;
  for (double sg : {1.0, 2.5}) {
    cv::Mat L, xx, yy, xy;
    cv::GaussianBlur(ch[0], L, cv::Size(0, 0), sg * base, sg * base, cv::BORDER_REFLECT);
    cv::Sobel(L, xx, CV_32F, 2, 0, 3, 1, 0, cv::BORDER_REFLECT);
    cv::Sobel(L, yy, CV_32F, 0, 2, 3, 1, 0, cv::BORDER_REFLECT);
    cv::Sobel(L, xy, CV_32F, 1, 1, 3, 1, 0, cv::BORDER_REFLECT);
    const double norm = sg * base * sg * base;
    for (int o = 0; o < 4; ++o) {
      const double th = o * CV_PI / 4, c = std::cos(th), si = std::sin(th);
      out.push_back(cv::abs(c * c * xx + si * si * yy + 2 * si * c * xy) * norm);
    }
  }
  return out;
}

// `energy`: oriented_energy() of the image, or empty when that feature is off.
std::vector<float> cell_features(const cv::Mat& lab, const cv::Mat& lab2, int g, const DefaultSourceSettings& s,
                                 const std::vector<cv::Mat>& energy, int& dim) {
  cv::Mat mean, sq;
  cv::resize(lab, mean, cv::Size(g, g), 0, 0, cv::INTER_AREA);
  cv::resize(lab2, sq, cv::Size(g, g), 0, 0, cv::INTER_AREA);
  cv::Mat ctx;
  const double cs = s.context_sigma * g / 64.0;
  if (cs > 0.05) cv::GaussianBlur(mean, ctx, cv::Size(0, 0), cs, cs, cv::BORDER_REFLECT);
  else ctx = mean.clone();
  // Per cell: Lab mean (3), weighted neighbourhood colour (3), optionally the
  // blurred Lab standard deviation as texture (3), and, last, the cell's colour
  // variance, which widens the colour kernel (cells as Gaussian colour
  // distributions: a cell on a boundary overlaps both sides instead of neither).
  const cv::Mat variance = cv::max(sq - mean.mul(mean), 0.0);
  const bool tex = s.texture_feature > 0;
  const double ts = s.texture_sigma * g / 64.0;  // blur of the texture maps, in cells
  cv::Mat sd;
  if (tex) {
    cv::sqrt(variance, sd);
    if (ts > 0.05) cv::GaussianBlur(sd, sd, cv::Size(0, 0), ts, ts, cv::BORDER_REFLECT);
  }
  // Oriented energy averaged per cell and blurred like the texture map.
  std::vector<cv::Mat> orient(energy.size());
  for (size_t q = 0; q < energy.size(); ++q) {
    cv::resize(energy[q], orient[q], cv::Size(g, g), 0, 0, cv::INTER_AREA);
    if (ts > 0.05) cv::GaussianBlur(orient[q], orient[q], cv::Size(0, 0), ts, ts, cv::BORDER_REFLECT);
  }
  const int base_dim = tex ? 10 : 7;
  dim = base_dim + static_cast<int>(orient.size());
  std::vector<float> f(static_cast<size_t>(g) * g * dim);
  for (int y = 0; y < g; ++y)
    for (int x = 0; x < g; ++x) {
      const cv::Vec3f m = mean.at<cv::Vec3f>(y, x), v = variance.at<cv::Vec3f>(y, x), c = ctx.at<cv::Vec3f>(y, x);
      float* o = &f[(static_cast<size_t>(y) * g + x) * dim];
      for (int ch = 0; ch < 3; ++ch) {
        o[ch] = m[ch];
        o[3 + ch] = static_cast<float>(s.context_weight) * c[ch];
      }
      const float var = v[0] + v[1] + v[2];
      if (tex) {
        const cv::Vec3f t = sd.at<cv::Vec3f>(y, x);
        for (int ch = 0; ch < 3; ++ch) o[6 + ch] = static_cast<float>(s.texture_feature) * t[ch];
      }
      for (size_t q = 0; q < orient.size(); ++q)
        o[base_dim - 1 + q] = static_cast<float>(s.orient_feature) * orient[q].at<float>(y, x);
      o[dim - 1] = static_cast<float>(s.texture_weight) * var / 3.0f;
    }
  return f;
}

// Edge strength per cell of a (2g)×(2g) grid: the maximum over the cell of the Lab
// gradient magnitude (a step of height h over one pixel gives h).
cv::Mat fine_edges(const cv::Mat& lab, int g, double blur) {
  cv::Mat sm;
  if (blur > 0) cv::GaussianBlur(lab, sm, cv::Size(0, 0), blur, blur, cv::BORDER_REFLECT);
  else sm = lab;
  cv::Mat gx, gy;
  cv::Sobel(sm, gx, CV_32F, 1, 0, 3, 0.25, 0, cv::BORDER_REFLECT);
  cv::Sobel(sm, gy, CV_32F, 0, 1, 3, 0.25, 0, cv::BORDER_REFLECT);
  const int F = 2 * g;
  cv::Mat out = cv::Mat::zeros(F, F, CV_32F);
  for (int y = 0; y < lab.rows; ++y) {
    const int fy = std::min(F - 1, y * F / lab.rows);
    const cv::Vec3f* ax = gx.ptr<cv::Vec3f>(y);
    const cv::Vec3f* ay = gy.ptr<cv::Vec3f>(y);
    float* o = out.ptr<float>(fy);
    for (int x = 0; x < lab.cols; ++x) {
      const int fx = std::min(F - 1, x * F / lab.cols);
      const float m = std::sqrt(ax[x].dot(ax[x]) + ay[x].dot(ay[x]));
      o[fx] = std::max(o[fx], m);
    }
  }
  return out;
}

// How the cells of a g×g grid share image regions, at several segmentation
// scales: per scale, the cells of each region with the fraction of their pixels
// in it, and per cell its regions. Two cells are related by the chance that a
// random pixel of each lies in the same region.
struct RegionMembership {
  struct Part {
    int32_t other;  // cell (in `cells`) or region (in `regions`)
    float frac;     // fraction of the cell's pixels in the region
  };
  std::vector<std::vector<std::vector<Part>>> cells;    // [scale][region] -> cells
  std::vector<std::vector<std::vector<Part>>> regions;  // [scale][cell] -> regions
  std::vector<std::vector<float>> region_mass;          // [scale][region] -> sum of fractions
};

// Pixel-level regions of the image at every scale, found once per image on a
// working image of at most 8 and at least 1 pixel per cell of the finest grid.
struct ImageRegions {
  std::vector<cv::Mat> labels;  // [scale] CV_32S, working-image size
  std::vector<int> counts;      // [scale] number of regions
};

ImageRegions image_regions(const cv::Mat& lab, int g, const DefaultSourceSettings& s) {
  cv::Mat work;
  const int ww = std::max(g, std::min(lab.cols, 8 * g)), wh = std::max(g, std::min(lab.rows, 8 * g));
  if (ww != lab.cols || wh != lab.rows) cv::resize(lab, work, cv::Size(ww, wh), 0, 0, cv::INTER_AREA);
  else work = lab.clone();
  work *= 100.0;  // Lab with L in 0..100: region_k is in ΔE·pixels
  cv::GaussianBlur(work, work, cv::Size(0, 0), 0.8, 0.8, cv::BORDER_REFLECT);
  ImageRegions ir;
  std::vector<double> ks;
  double k = s.region_k;
  for (int sc = 0; sc < s.region_scales; ++sc, k *= 4) ks.push_back(k);
  ir.labels = graph_segmentation(work, ks, s.region_min, &ir.counts);
  return ir;
}

RegionMembership region_membership(const ImageRegions& ir, int g) {
  const int ww = ir.labels[0].cols, wh = ir.labels[0].rows;
  const int n = g * g;
  // Pixels of each cell in row-major order (every cell has at least one: the
  // working image has at least g pixels a side).
  std::vector<std::vector<int>> pixels_of_cell(n);
  for (int y = 0; y < wh; ++y)
    for (int x = 0; x < ww; ++x) pixels_of_cell[(y * g / wh) * g + x * g / ww].push_back(y * ww + x);
  RegionMembership rm;
  for (size_t sc = 0; sc < ir.labels.size(); ++sc) {
    const int count = ir.counts[sc];
    const int* label = ir.labels[sc].ptr<int>();
    std::vector<std::vector<RegionMembership::Part>> regions(n), cells(count);
    std::vector<float> mass(count, 0.0f);
    std::vector<int> hist(count, 0), touched;
    for (int c = 0; c < n; ++c) {
      touched.clear();
      for (int p : pixels_of_cell[c])
        if (hist[label[p]]++ == 0) touched.push_back(label[p]);
      const float px = static_cast<float>(pixels_of_cell[c].size());
      for (int r : touched) {
        const float fr = static_cast<float>(hist[r]) / px;
        regions[c].push_back({r, fr});
        cells[r].push_back({c, fr});
        mass[r] += fr;
        hist[r] = 0;
      }
    }
    rm.cells.push_back(std::move(cells));
    rm.regions.push_back(std::move(regions));
    rm.region_mass.push_back(std::move(mass));
  }
  return rm;
}

AttentionMap kernel_attention(const std::vector<float>& f, int dim, int g, const DefaultSourceSettings& s,
                              const cv::Mat& edges, const RegionMembership* rm) {
  AttentionMap m;
  m.h = m.w = g;
  m.name = "default/" + std::to_string(g);
  const int64_t n = static_cast<int64_t>(g) * g;
  m.data.reserve(static_cast<size_t>(n * n));  // not yet written: huge pages can still back it
  advise_huge_pages(m.data.data(), static_cast<size_t>(n * n) * sizeof(float));
  m.data.resize(static_cast<size_t>(n * n));
  const float ic = static_cast<float>(1.0 / (2.0 * s.sigma_color * s.sigma_color));
  const float sc2 = static_cast<float>(s.sigma_color * s.sigma_color);
  const float ip = static_cast<float>(1.0 / (2.0 * s.sigma_position * s.sigma_position));
  const float ew = static_cast<float>(s.edge_weight);
  const int radius = s.radius > 0 ? std::max(1, s.radius * g / s.grid) : 0;
  // The intervening-contour samples of a line depend only on the offset (dy, dx)
  // between the cells: per offset, the samples' fine-grid positions relative to
  // 2·(iy, ix), as linear offsets into the 2g×2g edge map.
  const int R = radius > 0 ? radius : g - 1, D = 2 * R + 1, F = 2 * g;
  std::vector<int> first(static_cast<size_t>(D) * D + 1, 0), samples;
  if (ew > 0) {
    for (int dy = -R; dy <= R; ++dy)
      for (int dx = -R; dx <= R; ++dx) {
        first[static_cast<size_t>((dy + R) * D + dx + R)] = static_cast<int>(samples.size());
        if (radius > 0 && dy * dy + dx * dx > radius * radius) continue;
        const int steps = 2 * std::max(std::abs(dy), std::abs(dx));
        for (int t = 0; t <= steps; ++t) {
          const int oy = steps ? static_cast<int>(std::lround((2.0 * dy) * t / steps)) : 0;
          const int ox = steps ? static_cast<int>(std::lround((2.0 * dx) * t / steps)) : 0;
          samples.push_back(oy * F + ox);
        }
      }
    first.back() = static_cast<int>(samples.size());
  }
  const float* E = ew > 0 ? edges.ptr<float>() : nullptr;
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float* row = m.data.data() + i * n;
    const float* fi = &f[static_cast<size_t>(i) * dim];
    const float yi = (static_cast<float>(i / g) + 0.5f) / g, xi = (static_cast<float>(i % g) + 0.5f) / g;
    float mx = -std::numeric_limits<float>::infinity();
    const int iy = static_cast<int>(i / g), ix = static_cast<int>(i % g);
    for (int64_t j = 0; j < n; ++j) {
      const int jy = static_cast<int>(j / g), jx = static_cast<int>(j % g);
      if (radius > 0 && (std::abs(jy - iy) > radius || std::abs(jx - ix) > radius ||
                         (jy - iy) * (jy - iy) + (jx - ix) * (jx - ix) > radius * radius)) {
        row[j] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const float* fj = &f[static_cast<size_t>(j) * dim];
      float dc = 0;
      for (int k = 0; k < dim - 1; ++k) {
        const float d = fi[k] - fj[k];
        dc += d * d;
      }
      dc *= sc2 / (sc2 + fi[dim - 1] + fj[dim - 1]);
      const float dy = yi - (static_cast<float>(jy) + 0.5f) / g, dx = xi - (static_cast<float>(jx) + 0.5f) / g;
      float logit = -dc * ic - (dy * dy + dx * dx) * ip;
      if (ew > 0) {
        // Intervening contour: the strongest edge on the straight line between the
        // two cell centres, sampled on the fine grid. The query cell's own edges are
        // on every line, its self-attention included, so that a cell lying on an edge
        // does not keep its walk to itself.
        // (Samples at 2·(iy, ix) + offset and one fine cell down-right of it.)
        const size_t off = static_cast<size_t>((jy - iy + R) * D + jx - ix + R);
        const float* e = E + (2 * iy) * F + 2 * ix;
        float emax = 0;
        for (int t = first[off]; t < first[off + 1]; ++t)
          emax = std::max(emax, std::max(e[samples[t]], e[samples[t] + F + 1]));
        logit -= ew * emax;
      }
      row[j] = logit;
      mx = std::max(mx, logit);
    }
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    // A uniform share keeps the walk irreducible: M2N2's chain must be able to
    // leave any region (the Markov-map counts steps until every token is reached).
    const double alpha = rm ? s.region_weight : 0.0;
    const float inv = static_cast<float>((1.0 - s.floor) * (1.0 - alpha) / sum);
    const float uni = static_cast<float>(s.floor / static_cast<double>(n));
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] * inv + uni;
    if (alpha > 0) {
      // Region jumps: from cell i to a random pixel of one of i's regions (picked by
      // i's pixels), then to that pixel's cell; scales are averaged.
      const size_t scales = rm->regions.size();
      const double share = (1.0 - s.floor) * alpha / static_cast<double>(scales);
      for (size_t sc = 0; sc < scales; ++sc)
        for (const auto& pr : rm->regions[sc][static_cast<size_t>(i)]) {
          const float wgt = static_cast<float>(share * pr.frac / rm->region_mass[sc][pr.other]);
          for (const auto& pc : rm->cells[sc][pr.other]) row[pc.other] += wgt * pc.frac;
        }
    }
  }
  return m;
}

}  // namespace

Attention default_attention(const cv::Mat& rgb, const DefaultSourceSettings& s) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw Error("default source: expected an 8-bit RGB image");
  // OpenCV 4.6 fills its Lab tables on the first conversion without a lock: two threads
  // converting at once (segment/eval --jobs) race there and leak a table. The first
  // conversion is made once, here, before any other.
  static std::once_flag lab_tables;
  std::call_once(lab_tables, [] {
    const cv::Mat pixel(1, 1, CV_32FC3, cv::Scalar(0.5, 0.5, 0.5));
    cv::Mat out;
    cv::cvtColor(pixel, out, cv::COLOR_RGB2Lab);
  });
  cv::Mat f32, lab;
  rgb.convertTo(f32, CV_32FC3, 1.0 / 255.0);
  cv::cvtColor(f32, lab, cv::COLOR_RGB2Lab);
  lab *= 0.01;  // L in [0,1], a/b roughly [-1,1]
  if (s.lightness_weight != 1.0) {
    std::vector<cv::Mat> ch;
    cv::split(lab, ch);
    ch[0] *= s.lightness_weight;
    cv::merge(ch, lab);
  }
  // Edge-preserving smoothing flattens texture inside regions and keeps their
  // borders: contours and regions are found on the smoothed image.
  cv::Mat lab_s = lab;
  for (int it = 0; it < s.smooth; ++it) {
    cv::Mat t;
    cv::bilateralFilter(lab_s, t, 0, s.smooth_sigma, 3.0, cv::BORDER_REFLECT);
    lab_s = t;
  }
  cv::Mat lab2 = lab.mul(lab);
  ImageRegions regions;
  if (s.region_weight > 0) regions = image_regions(lab_s, s.grid, s);
  const std::vector<cv::Mat> energy = s.orient_feature > 0 ? oriented_energy(lab) : std::vector<cv::Mat>();
  Attention a;
  int g = s.grid;
  for (int level = 0; level < s.levels && g >= 4; ++level, g /= 2) {
    int dim = 0;
    auto f = cell_features(lab, lab2, g, s, energy, dim);
    const cv::Mat edges = s.edge_weight > 0 ? fine_edges(lab_s, g, s.edge_sigma) : cv::Mat();
    RegionMembership rm;
    if (s.region_weight > 0) rm = region_membership(regions, g);
    AttentionMap m = kernel_attention(f, dim, g, s, edges, s.region_weight > 0 ? &rm : nullptr);
    m.weight = level == 0 ? 1.0f : 0.0f;
    a.maps.push_back(std::move(m));
  }
  a.meta["source"] = "default";
  a.meta["settings"] = s.to_string();
  return a;
}

namespace detail {
namespace {
class DefaultSource : public AttentionSource {
 public:
  DefaultSource(DefaultSourceSettings s, double max_memory) : s_(s), max_memory_(max_memory) {}
  // The version tag changes whenever the construction changes, so that cached
  // attention of an older build is never reused.
  std::string id() const override { return "default@4:" + s_.to_string(); }
  Attention compute(const cv::Mat& rgb) override {
    // The maps plus the operator that will be built from the finest one.
    const double n = static_cast<double>(s_.grid) * s_.grid;
    check_memory(default_source_memory_bytes(s_) + 8.0 * n * n,
                 max_memory_, "the default source's attention at grid " + std::to_string(s_.grid),
                 "use a smaller grid (--grid)");
    return default_attention(rgb, s_);
  }

 private:
  DefaultSourceSettings s_;
  double max_memory_ = 0;
};
}  // namespace

std::unique_ptr<AttentionSource> make_default_source(const std::string& settings, const SourceOptions& opt) {
  DefaultSourceSettings s = DefaultSourceSettings::parse(settings);
  if (opt.grid != 0) {
    s.grid = opt.grid;
    s.validate();
  }
  return std::make_unique<DefaultSource>(s, opt.max_memory_bytes);
}
}  // namespace detail
}  // namespace m2n2
