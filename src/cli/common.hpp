// CLI helpers shared by the subcommands: flags, logging, the engine of the flags,
// click parsing, progress bar, exit codes. No LibTorch here.
#pragma once
#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "m2n2/m2n2.hpp"

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
  std::string cache_max_size = "20G";
  bool no_cache = false;
  std::string log_level = "info";
  bool quiet = false;
  std::string max_memory;
  int grid = 0;
};

// The M2N2 flags: values bound straight to the parameters (their defaults are the
// authors'), the --no-* switches and the precision name beside them.
struct M2N2Flags {
  M2N2Params p;
  bool no_interpolation = false, no_flood_fill = false, no_prior = false, no_edge = false, no_pos = false, no_neg = false;
  std::string precision = "fp32";
  M2N2Params params(Device device) const;
};

void add_common(CLI::App* app, CommonOptions& o, bool with_source = true);
// --exif apply|ignore: which pixel grid a JPEG with an EXIF orientation gives (process-wide).
void add_exif_option(CLI::App* app);
void add_m2n2_flags(CLI::App* app, M2N2Flags& f);
// Applies logging level, threads; call first in every subcommand.
void setup(const CommonOptions& o);
double max_memory_bytes(const CommonOptions& o);
double cache_max_bytes(const CommonOptions& o);  // "0" = no cap
std::string cache_dir(const CommonOptions& o);    // --cache-dir, else the default folder

// The engine of the common flags (source, device, cache, memory limit, M2N2 flags);
// warnings go to the log. A bad --source or --device is a UsageError. One of `share`
// engines that work at once gets 1/share of the memory (--max-memory, else what the
// device has free now).
std::unique_ptr<Engine> make_engine(const CommonOptions& o, const M2N2Flags& f, int share = 1);
// The engines of `--jobs N` (checked: 1..64): N engines of make_engine(o, f, N), after
// giving every job its share of the threads (--threads / N, at least 1).
std::vector<std::unique_ptr<Engine>> make_job_engines(const CommonOptions& o, const M2N2Flags& f, int jobs);
// The options make_engine uses, for a front end that makes its engine itself.
EngineOptions engine_options(const CommonOptions& o, const M2N2Flags& f);

void log_info(const std::string& message);
void log_warn(const std::string& message);
void log_error(const std::string& message);

// Progress on stderr when it is a terminal (done/total, rate, ETA, extra text).
class Progress {
 public:
  Progress(int total, bool enabled, std::string label);
  // `total` < 0 keeps the total given before.
  void update(int done, const std::string& extra = "", int total = -1);
  void finish();

 private:
  int total_;
  bool enabled_;
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool drawn_ = false;
};

// Range check of an integer flag: throws UsageError "FLAG must be in LO..HI, got V".
void check_range(const char* flag, long long value, long long lo, long long hi);
// A library message with the field it names first ("temperature must be > 0, got -1")
// renamed to the flag that sets it ("--temperature must be > 0, got -1").
std::string flag_message(const std::string& library_message);
// A --shard value: "I/N", or "auto" for the scheduler's index, read from SLURM_ARRAY_TASK_ID
// (count from SLURM_ARRAY_TASK_COUNT, or from SLURM_ARRAY_TASK_MIN/MAX and _STEP) or from
// JOB_COMPLETION_INDEX (Kubernetes Indexed Job, count from `shard_count`). A missing or
// inconsistent index: UsageError in one line. `shard_count` 0 = not given; "" = {0, 1}.
std::pair<int, int> resolve_shard(const std::string& spec, int shard_count, const char* flag = "--shard");
// The records of a batch that can be rerun: OUT/`records` (one JSON line per finished
// item, appended with append_line_durable) made with the settings in OUT/`settings_file`.
// With `resume`: a torn last line is dropped, `settings` must equal the recorded ones
// (UsageError naming the first difference), and the recorded lines are returned. Without:
// the records start afresh and `settings` is written. Creates OUT.
std::vector<nlohmann::json> open_run_records(const std::string& out, const std::string& records, const std::string& settings_file,
                                             const nlohmann::json& settings, bool resume);
// Runs a subcommand body, mapping exceptions to messages and exit codes.
int guarded(const std::function<int()>& body);

}  // namespace m2n2::cli
