// CLI helpers shared by the subcommands: flags, logging, the attention pipeline,
// click parsing, progress bar, exit codes. No LibTorch here.
#pragma once
#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "m2n2/attention/attention.hpp"
#include "m2n2/attention/attention_cache.hpp"
#include "m2n2/interactive/segmenter.hpp"

namespace m2n2::cli {

enum Exit { kOk = 0, kSomeFailed = 1, kUsage = 2 };

// A bad flag value or file given on the command line (exit 2).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CommonOptions {
  std::string source = "default";
  std::string device = "auto";
  int threads = 0;
  std::string cache_dir;
  bool no_cache = false;
  std::string log_level = "info";
  bool quiet = false;
  std::string max_memory;
  int grid = 0;
};

struct M2N2Flags {
  double temperature = 0.65;
  int ipf_iterations = 200;
  float markov_threshold = 0.3f;
  int max_iterations = 1000;
  bool no_interpolation = false;
  double jbu_spatial_sigma = 1.0;
  double jbu_range_sigma = 0.1;
  bool no_flood_fill = false;
  float max_area = 0.4f;
  bool no_prior = false, no_edge = false, no_pos = false, no_neg = false;
  std::string precision = "fp32";
  int max_side = 0;
  M2N2Params params(Device device) const;
};

void add_common(CLI::App* app, CommonOptions& o, bool with_source = true);
void add_m2n2_flags(CLI::App* app, M2N2Flags& f);
// Applies logging level, threads; call first in every subcommand.
void setup(const CommonOptions& o);
double max_memory_bytes(const CommonOptions& o);

// Attention source + cache + operator preparation for one image at a time.
class Pipeline {
 public:
  Pipeline(const CommonOptions& o, const M2N2Flags& f);
  Attention attention(const cv::Mat& rgb);
  // Attention and operator of one image. `name` (the image) is used in messages. With
  // --device auto, an out-of-memory failure on the GPU is retried once on the CPU.
  std::shared_ptr<const MarkovOperator> prepare(const cv::Mat& rgb, double* seconds = nullptr,
                                                const std::string& name = "");
  // The M2N2 session of one image: its working copy (--max-side), attention, operator
  // and segmenter, which answers at the image's full size.
  std::unique_ptr<Segmenter> session(const cv::Mat& rgb, double* seconds = nullptr, const std::string& name = "");
  const M2N2Params& params() const { return params_; }
  std::string source_id() const { return source_->id(); }
  AttentionCache& cache() { return cache_; }

 private:
  std::shared_ptr<const MarkovOperator> build(const cv::Mat& rgb, AttentionSource& source, const M2N2Params& params,
                                              const std::string& name);
  CommonOptions opt_;
  M2N2Params params_;
  SourceOptions source_options_;
  std::unique_ptr<AttentionSource> source_;
  std::unique_ptr<AttentionSource> cpu_source_;  // made on the first CPU retry
  AttentionCache cache_;
};

// "I/N" -> shard I of N (0 <= I < N); throws UsageError naming `flag`.
std::pair<int, int> parse_shard(const std::string& s, const char* flag = "--shard");

// "X,Y,+" / "X,Y,-" (also "pos"/"neg"/"1"/"0").
Click parse_click(const std::string& s);
// "X,Y"
cv::Point2d parse_point(const std::string& s);

// Progress on stderr when it is a terminal (done/total, rate, ETA, extra text).
class Progress {
 public:
  Progress(int total, bool enabled, std::string label);
  void update(int done, const std::string& extra = "");
  void finish();

 private:
  int total_;
  bool enabled_;
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool drawn_ = false;
};

bool stderr_is_tty();
// Range check of an integer flag: throws UsageError "FLAG must be in LO..HI, got V".
void check_range(const char* flag, long long value, long long lo, long long hi);
// Runs a subcommand body, mapping exceptions to messages and exit codes.
int guarded(const std::function<int()>& body);

}  // namespace m2n2::cli
