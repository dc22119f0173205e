// `sparsetune profile CONFIG [--schedule FILE] [--warmup N] [--repeats N] [--top N]
// [--trace out.json] [--json]`: one generation of the config's first calibration sample (the
// shape workload's synthetic sample), dense or under a schedule, through the profiler: CUPTI
// kernel times on a CUDA config with a GPU, the wall clock otherwise. Prints the per-category
// table and the top kernels; --trace writes the timed repeats as a Chrome trace (docs/gpu.md).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "evaluators/profile.h"
#include "kernels/schedule.h"
#include "profiler/profiler.h"

namespace sparsetune::cli {

namespace {

struct ProfileCliOptions {
  std::string config;    // job config naming the workload and device
  std::string schedule;  // schedule v1 file; empty = dense
  std::string trace;     // Chrome trace output path; empty = none
  int warmup = -1;       // < 0: the config's latency.warmup
  int repeats = -1;      // < 1: the config's latency.repeats
  int top = 10;          // kernels listed (all with --top -1)
  bool json = false;     // one JSON object instead of the tables
  int overhead_rounds = 0;  // > 0: measure CUPTI's overhead in this many rounds instead
};

ProfileOptions ToProfileOptions(const ProfileCliOptions& o) {
  ProfileOptions options;
  if (!o.schedule.empty()) {
    options.schedule = LoadSchedule(o.schedule);
    options.schedule_name = o.schedule;
  }
  options.warmup = o.warmup;
  options.repeats = o.repeats;
  return options;
}

EvaluatorOptions ProgressToStderr() {
  EvaluatorOptions options;
  options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  return options;
}

// `--overhead N`: plain vs CUPTI-traced generations, both timed with CUDA events.
int RunOverhead(const ProfileCliOptions& o) {
  if (!o.trace.empty()) throw InputError("--overhead and --trace cannot be combined");
  const JobConfig config = LoadJobConfig(o.config);
  if (config.device.device != "cuda") {
    throw InputError(o.config + ": field 'device.device': is '" + config.device.device +
                     "'; --overhead measures CUPTI on \"cuda\" configs");
  }
  const ProfileOptions options = ToProfileOptions(o);
  Evaluator evaluator(config, ProgressToStderr());
  std::cerr << "measuring CUPTI overhead of " << options.schedule_name << " on "
            << evaluator.device_name() << " (" << o.overhead_rounds << " rounds)\n";
  const OverheadReport r = ProfileOverhead(evaluator, options, o.overhead_rounds);
  Json j = OverheadToJson(r);
  j["config"] = o.config;
  j["schedule"] = options.schedule_name;
  j["device"] = evaluator.device_name();
  if (o.json) {
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << "CUPTI overhead on one generation of " << evaluator.workload().geometry().name
            << " (" << options.schedule_name << ") on " << evaluator.device_name() << "\n";
  std::printf("  plain (CUDA events)          %10.3f ms median of %zu, spread %.2f%%\n",
              r.plain_median_ns / 1e6, r.plain_ns.size(), 100 * r.plain_spread);
  std::printf("  under CUPTI (CUDA events)    %10.3f ms median of %zu, spread %.2f%%\n",
              r.traced_median_ns / 1e6, r.traced_ns.size(), 100 * r.traced_spread);
  std::printf("  CUPTI device busy time       %10.3f ms (%.1f%% of the traced event time)\n",
              r.busy_median_ns / 1e6, 100 * r.busy_share);
  std::printf("  overhead                     %+10.2f%%\n", 100 * r.overhead);
  for (const std::string& w : r.warnings) std::cout << "  warning: " << w << "\n";
  return 0;
}

void PrintRows(const Json& rows, bool with_category) {
  std::printf("  %-44s %-14s %9s %12s %12s %7s\n", with_category ? "kernel" : "category",
              with_category ? "category" : "", "launches", "total_ms", "per_gen_ms", "share");
  for (const Json& r : rows) {
    std::string name = r.at("name").get<std::string>();
    if (name.size() > 44) name = name.substr(0, 41) + "...";
    std::printf("  %-44s %-14s %9lld %12.3f %12.3f %6.1f%%\n", name.c_str(),
                with_category ? r.at("category").get<std::string>().c_str() : "",
                static_cast<long long>(r.at("launches").get<int64_t>()),
                r.at("total_ms").get<double>(), r.at("per_generation_ms").get<double>(),
                100.0 * r.at("share").get<double>());
  }
}

int RunProfile(const ProfileCliOptions& o) {
  if (o.overhead_rounds > 0) return RunOverhead(o);
  const JobConfig config = LoadJobConfig(o.config);
  const ProfileOptions options = ToProfileOptions(o);
  Evaluator evaluator(config, ProgressToStderr());
  std::cerr << "profiling " << options.schedule_name << " on " << evaluator.device_name() << "\n";
  const ProfileReport report = ProfileGeneration(evaluator, options);

  if (!o.trace.empty()) {
    std::ofstream out(o.trace);
    if (!out) throw InputError("--trace: cannot write '" + o.trace + "'");
    out << ChromeTrace(report.measurement.records, "sparsetune profile").dump() << "\n";
    if (!out) throw RunError("--trace: writing '" + o.trace + "' failed");
  }

  const Json j = ProfileToJson(report, o.top);
  if (o.json) {
    Json out = j;
    out["config"] = o.config;
    if (!o.trace.empty()) out["trace"] = o.trace;
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << "profile of " << report.workload << " (" << report.schedule << ") on "
            << report.device << "\n";
  std::printf("  latency %.3f ms per generation (%s, median of %d after %d warm-up, spread %.1f%%)\n",
              j.at("median_ms").get<double>(), j.at("source").get<std::string>().c_str(),
              report.repeats, report.warmup, 100.0 * j.at("spread").get<double>());
  std::printf("  attention density %.3f, token density %.3f\n", j.at("density").get<double>(),
              j.at("token_density").get<double>());
  if (!report.fallback.empty()) std::cout << "  wall clock because: " << report.fallback << "\n";
  for (const Json& w : j.at("warnings")) std::cout << "  warning: " << w.get<std::string>() << "\n";
  std::cout << "per category (sum over " << report.repeats << " repeats):\n";
  PrintRows(j.at("categories"), false);
  std::cout << "top kernels (" << j.at("kernels").size() << " of "
            << j.at("distinct_kernels").get<int64_t>() << "):\n";
  PrintRows(j.at("kernels"), true);
  if (!o.trace.empty()) std::cout << "trace written to " << o.trace << "\n";
  return 0;
}

}  // namespace

void AddProfileCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ProfileCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Profile one generation of the config's first calibration sample (dense, or under "
      "--schedule): latency as CUPTI device busy time on a CUDA config (wall clock on the CPU), "
      "time per kernel category and the top kernels. Progress goes to stderr.");
  cmd->add_option("CONFIG", o->config, "Job config (JSON) naming the workload and device")
      ->required();
  cmd->add_option("--schedule", o->schedule, "Schedule v1 file to run (default: dense)");
  cmd->add_option("--trace", o->trace,
                  "Write the timed repeats' records as Chrome trace JSON (Perfetto, "
                  "chrome://tracing)");
  cmd->add_option("--warmup", o->warmup, "Untimed generations first (default: latency.warmup)");
  cmd->add_option("--repeats", o->repeats, "Timed generations (default: latency.repeats)");
  cmd->add_option("--top", o->top, "Kernels to list, longest total first (default 10; -1 all)");
  cmd->add_option("--overhead", o->overhead_rounds,
                  "Instead of profiling, measure CUPTI's overhead: N rounds, each of --repeats "
                  "generations without and then with CUPTI tracing, all timed with CUDA events "
                  "(cuda configs only)")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", o->json,
                "Print one JSON object (median_ms, source, categories, kernels, ...; with "
                "--overhead: plain/traced medians and the overhead) instead of the tables");
  cmd->callback([o, &exit_code] { exit_code = RunProfile(*o); });
}

}  // namespace sparsetune::cli
