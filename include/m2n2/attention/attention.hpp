// m2n2 — self-attention maps and the interface every attention source implements.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "m2n2/core/device.hpp"

namespace m2n2 {

// A map's values held by LibTorch on a compute device (opaque here). A source that
// computes on a GPU leaves them there, so that they reach the operator with no host
// round trip; to_host() brings them over where the host needs them.
struct DeviceValues;
struct Attention;

// One self-attention map over an h×w token grid: N×N, N = h·w, row-major tokens,
// rows = queries, each row a probability distribution over keys.
struct AttentionMap {
  std::string name;
  int h = 0, w = 0;
  float weight = 1.0f;      // weight when maps are combined for M2N2
  std::vector<float> data;  // N*N on the host; empty while `device_values` holds them
  std::shared_ptr<DeviceValues> device_values;  // null for host maps
  int64_t tokens() const { return static_cast<int64_t>(h) * w; }
  bool on_host() const { return device_values == nullptr; }
};

// The number of values a map holds, wherever they are.
int64_t attention_values(const AttentionMap& m);
// Brings device values to `data` (one transfer; nothing to do for host maps).
void to_host(AttentionMap& m);
void to_host(Attention& att);

// Per-patch (or per-image) features a ViT export may deliver beside its maps (export
// format m2n2-attention/2): "keys" of a layer (N×C, heads concatenated), the final
// "patch_tokens" (N×C), the final "cls" token (C), and "cls_attention" of a layer (N, the
// CLS query's head-mean distribution over the patches). Prefix tokens (CLS, registers)
// are never among the N rows.
struct FeatureMap {
  std::string name;       // as in the export's output, e.g. "keys.11"
  std::string kind;       // keys | patch_tokens | cls | cls_attention
  int layer = -1;         // the block it comes from (-1: the final norm, or none)
  int h = 0, w = 0;       // patch grid (1×1 for "cls")
  int dim = 0;            // values per row (1 for "cls_attention")
  std::vector<float> data;  // rows (tokens, row-major over the grid) × dim
  int64_t rows() const { return static_cast<int64_t>(h) * w; }
};

// Everything a source delivers for one image.
struct Attention {
  std::vector<AttentionMap> maps;
  std::vector<FeatureMap> features;         // empty for sources without features
  std::map<std::string, std::string> meta;  // source id, settings, model id ...
};

// keys, patch_tokens, cls or cls_attention.
bool is_feature_kind(const std::string& kind);
// Checks shape (by kind), size and finiteness, and that "cls_attention" sums to 1
// (± 2e-2). Throws Error("<what>: <problem>").
void validate_feature(const FeatureMap& f, const std::string& what);
// The first feature of `kind` (from `layer`, unless -1); nullptr if there is none.
const FeatureMap* find_feature(const Attention& att, const std::string& kind, int layer = -1);
// As find_feature, for a method that needs it: a missing kind is an InvalidArgument (the
// source does not fit the method, whatever the image) in one line naming the
// method, the kind and the export flag ("export the ViT with --features keys").
const FeatureMap& require_feature(const Attention& att, const std::string& kind, const std::string& method,
                                  int layer = -1);

// Checks shape, finiteness, non-negativity and row sums (|sum-1| <= tol).
// Throws Error("<what>: <problem>").
void validate_attention(const AttentionMap& m, const std::string& what, float row_tolerance = 1e-3f);

// Checks on a map's device (row sums and finiteness reduced there; only the verdict
// and the first bad position come back). Host maps go to validate_attention.
void validate_attention_values(const AttentionMap& m, const std::string& what, float row_tolerance = 1e-3f);

// Combines the weighted maps of the finest grid that has non-zero weight (the M2N2
// recipe: a weighted mean of chosen layers), renormalising rows. Device maps are
// combined on their device. The rvalue form moves a single chosen map out (no copy).
AttentionMap combine_for_m2n2(const Attention& att);
AttentionMap combine_for_m2n2(Attention&& att);

// Maps grouped by grid size (all maps of one resolution averaged), finest first.
std::vector<AttentionMap> maps_by_resolution(const Attention& att);

struct SourceOptions {
  Device device = Device::Auto;
  int grid = 0;                 // default source: token grid (0 = its default)
  double max_memory_bytes = 0;  // 0 = use what the system reports as available
  // Receives the one-line warnings of a source (e.g. a network output that was
  // recomputed); the core never prints. Empty = dropped.
  std::function<void(const std::string&)> warn;
};

class AttentionSource {
 public:
  virtual ~AttentionSource() = default;
  // A stable identifier of the source and every setting that changes its output;
  // used as part of the cache key.
  virtual std::string id() const = 0;
  // rgb: CV_8UC3, RGB order, any size.
  virtual Attention compute(const cv::Mat& rgb) = 0;
};

// "default", "default:grid=48", "torchscript:PATH", "file:PATH".
std::unique_ptr<AttentionSource> make_source(const std::string& spec, const SourceOptions& opt);

}  // namespace m2n2
