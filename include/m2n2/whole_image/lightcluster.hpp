// m2n2 — LightCluster's patch masks (spec lightcluster.md, part A): ViT attention keys
// clustered at three levels — dataset, category, image — into foreground/background,
// kept consistent by initialising each level at the one above (the foreground centroid
// stays foreground), and merged by a vote. The paper gives the levels and the output
// (arXiv 2311.18628, abstract); k = 2, cosine k-means, the border prior, the
// inheritance and the vote are reconstructions (spec A2–A6), each a setting here.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace m2n2 {

struct LightClusterParams {
  int64_t sample = 262144;  // dataset level: patches fitted at most (uniform sample)
  int restarts = 10;        // k-means++ restarts of the free fits (dataset, categories)
  int max_iterations = 100; // Lloyd iterations at most
  double tolerance = 1e-6;  // stop below this relative change of the objective
  uint64_t seed = 0;
  int categories = 20;      // category level: clusters of the images' CLS (capped by the image count)
  int vote = 2;             // foreground iff at least this many levels say so (1 union, 3 intersection)
  std::string fg_rule = "border";  // border: the cluster with the smaller share of border patches;
                                   // cls-attn: the cluster with more CLS attention
  // Leave high-norm key tokens (median + 6·MAD of their image) out of the fits and label them
  // from their neighbours: "auto" = when the archive is a DINOv2 without registers.
  std::string high_norm = "auto";  // auto | on | off
};

// Throws InvalidArgument naming the first setting out of range.
void check_params(const LightClusterParams& p);

struct KMeans {
  std::vector<float> centroids;  // k×d, unit rows
  std::vector<int> labels;       // per point
  double objective = 0;          // Σ max_c <x, μ_c> (larger is better)
};

// Spherical k-means of n unit rows of dimension d: assignment by the largest dot
// product, centroids the renormalised means. With `init` (k×d) one Lloyd run from it, a
// cluster that empties keeps its initial centroid; without, the best of `restarts`
// k-means++ starts (seeded). Deterministic for a seed.
KMeans spherical_kmeans(const std::vector<float>& points, int d, int k, const std::vector<float>& init,
                        const LightClusterParams& p);

// Rows scaled to unit length (zero rows stay zero).
std::vector<float> unit_rows(const float* data, int64_t n, int d);

// Dataset level (spec A3): 2-means of a uniform sample of all images' unit keys and the
// foreground decision. `border[i]`: the sample's point i lies on its image's outer patch
// ring; `cls_attention` (optional, may be null): the CLS attention of each point, for
// fg_rule cls-attn.
struct DatasetLevel {
  std::vector<float> fg, bg;  // unit centroids
  double border_share_fg = 0, border_share_bg = 0;
};
DatasetLevel fit_dataset_level(const std::vector<float>& sample, int d, const std::vector<uint8_t>& border,
                               const std::vector<float>* cls_attention, const LightClusterParams& p);

// Category level, part 1 (spec A4): each image's category from its CLS descriptor
// (unit rows, one per image): spherical k-means into min(categories, images) groups.
std::vector<int> image_categories(const std::vector<float>& cls, int d, const LightClusterParams& p);
// The same with the categories' CLS centroids (to place new images).
KMeans fit_image_categories(const std::vector<float>& cls, int d, const LightClusterParams& p);

// One image's keys (raw, n = h·w rows of d values; row-major over the patch grid).
struct ImageKeys {
  const float* keys = nullptr;
  int h = 0, w = 0, d = 0;
};

// The vote of the three levels (spec A6) for one patch: foreground iff at least `vote` of
// them say so.
inline bool vote_foreground(int dataset, int category, int image, int vote) {
  return dataset + category + image >= vote;
}

// The category level's centroids (unit): one Lloyd run over (a uniform sample of) the
// category's unit keys, started at the dataset centroids, so that its centroid 0 stays
// the foreground (an emptied cluster keeps its dataset centroid).
struct CategoryLevel {
  std::vector<float> fg, bg;
};
CategoryLevel fit_category_level(const std::vector<float>& sample, int d, const DatasetLevel& dataset,
                                 const LightClusterParams& p);

// One image's labels at the three levels, the vote and the empty guard: y^D and y^C by
// the nearest centroid, y^I by 2-means started at the category's centroids (a side left
// with < 2 patches keeps y^C).
struct ImageMask {
  std::vector<uint8_t> fg, dataset, category, image;  // h·w each, 1 = foreground
  std::vector<float> score;                           // votes / 3
};
// `outliers` (optional, h·w): patches left out of the image-level fit; each then takes the
// majority label of its other 4-neighbours (spec A9, for DINOv2 without registers).
ImageMask image_patch_mask(const ImageKeys& image, const DatasetLevel& dataset, const CategoryLevel& category,
                           const LightClusterParams& p, const std::vector<uint8_t>* outliers = nullptr);

// High-norm artefact tokens (spec A9): keys whose norm exceeds median + k·MAD of the image's.
std::vector<uint8_t> high_norm_tokens(const float* keys, int64_t n, int d, double k = 6.0);

struct PatchMasks {
  std::vector<std::vector<uint8_t>> fg;    // per image, h·w, 1 = foreground
  std::vector<std::vector<float>> score;   // per image, h·w, votes / 3
  std::vector<std::vector<uint8_t>> dataset, category, image;  // each level's labels (1 = fg)
  std::vector<float> category_fg, category_bg;  // the category's centroids
};

// fit_category_level on all patches of a category's images, then image_patch_mask for
// each (spec A4–A6); an image where no patch passes the vote takes its image-level mask if
// that covers 1–90 % of the grid, else it is all background.
PatchMasks category_patch_masks(const std::vector<ImageKeys>& images, const DatasetLevel& dataset,
                                const LightClusterParams& p);

// The empty guard alone: `fg` from the vote, `image_level` the image's own labels.
void empty_guard(std::vector<uint8_t>& fg, const std::vector<uint8_t>& image_level);

// ------------------------------------------------------------- the whole dataset (A2–A8)

class Engine;

struct LightClusterRun {
  LightClusterParams params;
  int classes = 20;                    // clusters of the region embeddings (capped by the regions)
  std::string refine = "jbu";          // jbu (M2N2's joint bilateral upsampler) | none (bilinear)
  std::string region_embed = "crop";   // crop: CLS of a second pass on the region's box | pool: mean patch tokens
  double min_component = 0.01;         // components smaller than this share of the image become background
  double jbu_spatial_sigma = 1.0, jbu_range_sigma = 0.1;
};

// Per image: the outcome (label PNG written, or the error).
struct LightClusterImage {
  std::string image, labels, error;
  int category = -1, regions = 0;
};

struct LightClusterResult {
  std::vector<LightClusterImage> images;
  nlohmann::json model;  // what lightcluster.json holds: settings and every centroid
  int failures = 0;
  int resumed = 0;       // images whose masks an interrupted run had finished
};

// LightCluster on a folder's images through `engine`'s attention source, which must
// deliver "keys" and "cls" features (and "cls_attention" for fg_rule cls-attn,
// "patch_tokens" for region_embed pool); otherwise InvalidArgument naming the kind.
// Pass 1 reads each image's features (cached by the engine when its cache is on) and
// keeps a uniform sample of at most params.sample keys and each image's CLS; pass 2
// clusters one category at a time (its images' keys in memory), refines, finds the
// components and embeds them; then the region embeddings are clustered into classes and
// OUT/<stem>.png (16-bit: 0 background, 1 + class) and OUT/lightcluster.json written.
// An image that fails is reported and left out. Pass 2's results are kept per image in
// OUT/.lightcluster-work until the run succeeds; a rerun with the same source, settings
// and images resumes there. `progress(stage, done, total)`.
LightClusterResult run_lightcluster(Engine& engine, const std::vector<std::string>& images, const std::string& out_dir,
                                    const LightClusterRun& run,
                                    const std::function<void(const std::string&, int, int)>& progress = {});

// Labels new images with a model that run_lightcluster wrote (lightcluster.json): each
// image's category is the nearest CLS centroid, its patch masks come from that category's
// and the dataset's centroids, and each region's class is the nearest class centroid; no
// clustering. The model's settings apply. OUT/<stem>.png as run_lightcluster writes them.
// A model that is not one (or was made with other keys) is an InvalidArgument naming
// `model_name`.
LightClusterResult apply_lightcluster(Engine& engine, const std::vector<std::string>& images, const std::string& out_dir,
                                      const nlohmann::json& model, const std::string& model_name,
                                      const std::function<void(const std::string&, int, int)>& progress = {});

}  // namespace m2n2
