// m2n2 — the NoC benchmark run: click simulation over a dataset's instances with one
// engine, durable per-instance records (resumable, shardable), and the outputs
// (metrics.json, instances.csv, instances.jsonl, miou_curve.png).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "m2n2/eval/click_simulator.hpp"
#include "m2n2/eval/datasets.hpp"
#include "m2n2/eval/metrics.hpp"

namespace m2n2 {

class Engine;
class Session;

// One instance: `max_clicks` simulated clicks, the IoU after each, and the clicks made
// ([x, y, positive] triples). The session's per-point maps are kept for the next
// instance of the same image.
struct InstanceRecord {
  InstanceResult result;
  nlohmann::json clicks = nlohmann::json::array();
};
InstanceRecord evaluate_instance(Session& session, const GroundTruth& gt, Protocol protocol, int max_clicks);

struct BenchmarkOptions {
  std::string dataset, images;  // see read_dataset
  std::string mask_format = "grabcut";
  Protocol protocol = Protocol::M2N2;
  int max_clicks = 20;
  int shard = 0, shards = 1;  // whole images: every `shards`-th from `shard`
  int limit = 0;              // at most this many instances (0 = all)
  int subset = 0;             // a seeded random subset of this many instances (0 = all)
  uint32_t seed = 2024;       // of the subset (select_subset)
  std::string out;            // output folder
  bool resume = false, overwrite = false;
  std::string device_label = "auto";   // recorded in run.json (the --device given)
  std::string source_label = "default";
};

struct BenchmarkCallbacks {
  std::function<void(int done, int total, const std::string& note)> progress;
  std::function<void(const std::string&)> info;   // e.g. "resuming: ..."
  std::function<void(const std::string&)> error;  // an instance that failed ("id: problem")
};

struct BenchmarkOutcome {
  nlohmann::json metrics;  // what metrics.json holds, plus "failed"
  int failures = 0;
};

// Runs (or resumes) a benchmark into options.out. A bad dataset, an existing run
// without resume/overwrite, or a resumed run with other settings: InvalidArgument.
// A failed instance is reported through callbacks.error and counted; the run goes on.
BenchmarkOutcome run_benchmark(Engine& engine, const BenchmarkOptions& options, const BenchmarkCallbacks& callbacks);
// The same with one job per engine: whole images run at once on as many threads (make
// each engine's work fit its share of the cores and memory); the records, metrics and
// callbacks are those of one engine, in dataset order, on the calling thread.
BenchmarkOutcome run_benchmark(const std::vector<Engine*>& engines, const BenchmarkOptions& options,
                               const BenchmarkCallbacks& callbacks);

// The engine settings that change results, as run.json records them under "settings".
nlohmann::json engine_settings(const Engine& engine);
// The first key (dotted into objects) in which two settings objects differ, with both
// values, or "" when they agree.
std::string settings_difference(const nlohmann::json& a, const nlohmann::json& b);
// Appends one line and makes it durable before returning: a SIGKILL after it never loses
// the line; one during the write leaves a torn last line, which drop_torn_line removes.
void append_line_durable(const std::string& path, const std::string& line);
void drop_torn_line(const std::string& path);

// Combines shard folders into `out` (settings must agree, instances must not repeat).
BenchmarkOutcome merge_benchmarks(const std::vector<std::string>& shards, const std::string& out);

// The few lines of a run's figures that a front end shows (NoC, NoF90, mIoU@k).
std::string summary_table(const nlohmann::json& metrics);

// The metrics.json of a run folder (or the file itself).
nlohmann::json read_metrics(const std::string& path);

}  // namespace m2n2
