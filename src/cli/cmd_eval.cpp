// m2n2 eval (NoC on a benchmark), eval-merge (of shards) and plot (of runs).
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/eval/benchmark.hpp"
#include "m2n2/eval/plot.hpp"
#include "m2n2/io/image_io.hpp"

namespace m2n2::cli {

namespace {

struct EvalOptions {
  CommonOptions common;
  M2N2Flags m2n2;
  BenchmarkOptions run;
  std::string protocol = "m2n2", shard;
  int jobs = 1, shard_count = 0;
};

int run_eval(EvalOptions& o) {
  try {
    o.run.protocol = parse_protocol(o.protocol);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  std::tie(o.run.shard, o.run.shards) = resolve_shard(o.shard, o.shard_count);
  check_range("--limit", o.run.limit, 0, 1 << 30);
  o.run.device_label = o.common.device;
  o.run.source_label = o.common.source;
  // With several images at once, each gets its share of the threads and of the memory,
  // and an engine of its own.
  const auto engines = make_job_engines(o.common, o.m2n2, o.jobs);
  std::vector<Engine*> jobs;
  for (const auto& e : engines) jobs.push_back(e.get());
  Progress bar(0, !o.common.quiet, "eval");
  BenchmarkCallbacks cb;
  cb.progress = [&](int done, int total, const std::string& note) { bar.update(done, note, total); };
  cb.info = [](const std::string& m) { log_info(m); };
  cb.error = [&](const std::string& m) { log_error(m); };
  BenchmarkOutcome r = run_benchmark(jobs, o.run, cb);
  bar.finish();
  std::fprintf(stderr, "%s", summary_table(r.metrics).c_str());
  std::cout << r.metrics.dump() << "\n";
  return r.failures ? kSomeFailed : kOk;
}

}  // namespace

void register_eval(CLI::App& app, int& code) {
  auto o = std::make_shared<EvalOptions>();
  auto* sub = app.add_subcommand("eval", "NoC85/90/95 and mIoU per click on a dataset with a click simulator");
  sub->add_option("--dataset", o->run.dataset, "Folder with images/ and masks/, or a COCO instances JSON")->required();
  sub->add_option("--images", o->run.images, "Image folder of a COCO dataset (default: the JSON's folder)");
  sub->add_option("--protocol", o->protocol, "Click simulator: m2n2 or ritm")->capture_default_str();
  sub->add_option("--max-clicks", o->run.max_clicks, "Clicks per instance")->capture_default_str();
  sub->add_option("--out", o->run.out, "Output folder (metrics.json, instances.csv, instances.jsonl, miou_curve.png)")->required();
  sub->add_option("--shard", o->shard,
                  "Evaluate only shard I of N (I/N, 0-based), e.g. $SLURM_ARRAY_TASK_ID/8; auto: I and N from the scheduler "
                  "(SLURM array, or Kubernetes Indexed Job with --shard-count)");
  sub->add_option("--shard-count", o->shard_count, "N for --shard auto under a Kubernetes Indexed Job (its completions)");
  sub->add_flag("--resume", o->run.resume, "Skip instances already finished in --out");
  sub->add_flag("--overwrite", o->run.overwrite, "Start over, discarding finished instances in --out");
  sub->add_option("--mask-format", o->run.mask_format, "Folder masks: grabcut (>128 object, 128 void) or davis (>0 object)")
      ->capture_default_str();
  sub->add_option("--limit", o->run.limit, "Evaluate at most this many instances (0 = all)");
  sub->add_option("--subset", o->run.subset,
                  "Evaluate a random subset of this many instances (0 = all), drawn as numpy.random.seed(SEED); "
                  "numpy.random.permutation(n)[:N] over the sorted instances");
  sub->add_option("--seed", o->run.seed, "Seed of --subset")->capture_default_str();
  sub->add_option("--jobs", o->jobs,
                  "Images evaluated at once, each with its share of --threads and of the memory and an engine of its "
                  "own (CPU); records and metrics in dataset order, as --jobs 1 makes them with one job's share of --threads")
      ->capture_default_str();
  add_common(sub, o->common);
  add_exif_option(sub);
  add_m2n2_flags(sub, o->m2n2);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      return run_eval(*o);
    });
  });

  struct MergeOpt {
    CommonOptions common;
    std::string out;
    std::vector<std::string> inputs;
  };
  auto mo = std::make_shared<MergeOpt>();
  auto* merge = app.add_subcommand("eval-merge", "Combine the outputs of eval shards into one set of metrics");
  merge->add_option("--out", mo->out, "Output folder")->required();
  merge->add_option("shards", mo->inputs, "Shard output folders")->required();
  add_common(merge, mo->common, false);
  merge->callback([mo, &code]() {
    code = guarded([&]() {
      setup(mo->common);
      auto r = merge_benchmarks(mo->inputs, mo->out);
      std::fprintf(stderr, "%s", summary_table(r.metrics).c_str());
      std::cout << r.metrics.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });

  struct PlotOpt {
    CommonOptions common;
    std::string out, title = "mIoU per click";
    std::vector<std::string> runs, labels;
  };
  auto po = std::make_shared<PlotOpt>();
  auto* plot = app.add_subcommand("plot", "Draw the mIoU-per-click curves of several eval runs on one picture");
  plot->add_option("--out", po->out, "Output PNG")->required();
  plot->add_option("--label", po->labels, "Legend label per run (default: the run's source)");
  plot->add_option("--title", po->title, "Title");
  plot->add_option("runs", po->runs, "Eval output folders (or metrics.json files)")->required();
  add_common(plot, po->common, false);
  plot->callback([po, &code]() {
    code = guarded([&]() {
      setup(po->common);
      std::vector<Curve> curves;
      for (size_t i = 0; i < po->runs.size(); ++i) {
        const nlohmann::json m = read_metrics(po->runs[i]);
        char noc[32];
        std::snprintf(noc, sizeof noc, " NoC90 %.2f", m.value("NoC90", 0.0));
        std::filesystem::path file(po->runs[i]);
        if (std::filesystem::is_directory(file)) file /= "metrics.json";
        const std::string fallback = file.parent_path().filename().string();
        curves.push_back({i < po->labels.size() ? po->labels[i] : m.value("source_label", fallback) + noc,
                          m.at("mIoU_per_click").get<std::vector<double>>()});
      }
      write_png_atomic(po->out, plot_curves(curves, po->title));
      std::cout << nlohmann::json{{"png", po->out}, {"runs", po->runs.size()}}.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });
}

}  // namespace m2n2::cli
