#include "evaluators/profile.h"

#include <algorithm>

#include "core/error.h"

namespace sparsetune {

namespace {

// The schedule a profile runs: options.schedule checked against the workload, else dense.
Schedule ScheduleToProfile(Evaluator& evaluator, const ProfileOptions& options) {
  if (!options.schedule) return evaluator.base_schedule();
  CheckGeometryMatches(*options.schedule, evaluator.workload().geometry(), options.schedule_name);
  return *options.schedule;
}

}  // namespace

ProfileReport ProfileGeneration(Evaluator& evaluator, const ProfileOptions& options) {
  const JobConfig& config = evaluator.config();
  Workload& workload = evaluator.workload();
  ProfileReport report;
  report.workload = workload.geometry().name;
  report.device = evaluator.device_name();
  report.schedule = options.schedule_name;
  report.warmup = options.warmup >= 0 ? options.warmup : static_cast<int>(config.latency.warmup);
  report.repeats =
      options.repeats >= 1 ? options.repeats : static_cast<int>(config.latency.repeats);
  if (report.warmup < 0 || report.repeats < 1) {
    throw InputError("profile: warm-up must be >= 0 and repeats >= 1 (got " +
                     std::to_string(report.warmup) + " and " + std::to_string(report.repeats) +
                     ")");
  }
  if (!config.workload.calibration.empty()) report.sample = config.workload.calibration.front();

  const Schedule schedule = ScheduleToProfile(evaluator, options);
  const bool cuda = config.device.device == "cuda";
  std::string why;
  std::unique_ptr<Profiler> profiler = MakeProfiler(cuda, &why);
  if (cuda && profiler->source() != "cupti") report.fallback = why;

  torch::NoGradGuard no_grad;
  Runtime runtime(schedule);
  const auto region = [&] {
    workload.run(report.sample, runtime);
    report.stats = runtime.stats();
  };
  report.measurement = profiler->measure(region, report.warmup, report.repeats,
                                         [&workload] { workload.synchronize(); });
  report.categories = AggregateCategories(report.measurement.kernels);
  return report;
}

OverheadReport ProfileOverhead(Evaluator& evaluator, const ProfileOptions& options, int rounds) {
  const JobConfig& config = evaluator.config();
  if (config.device.device != "cuda") {
    throw InputError("profile --overhead: the config's device is '" + config.device.device +
                     "'; CUPTI overhead is measured on \"cuda\" configs");
  }
  Workload& workload = evaluator.workload();
  const int warmup = options.warmup >= 0 ? options.warmup : static_cast<int>(config.latency.warmup);
  const int repeats =
      options.repeats >= 1 ? options.repeats : static_cast<int>(config.latency.repeats);
  SampleSpec sample;
  if (!config.workload.calibration.empty()) sample = config.workload.calibration.front();
  const Schedule schedule = ScheduleToProfile(evaluator, options);
  torch::NoGradGuard no_grad;
  Runtime runtime(schedule);
  return MeasureCuptiOverhead([&] { workload.run(sample, runtime); },
                              [&workload] { workload.synchronize(); }, warmup, rounds, repeats);
}

namespace {

Json TimeRow(const KernelTime& k, int repeats, double busy_ns) {
  Json row = {{"name", k.name},
              {"category", k.category},
              {"launches", k.launches},
              {"total_ms", k.total_ns / 1e6},
              {"per_generation_ms", k.total_ns / 1e6 / repeats},
              {"mean_us", k.mean_ns / 1e3},
              {"median_us", k.median_ns / 1e3}};
  // Share of the summed kernel time (overlapping kernels can make the shares of busy time
  // exceed 1, so the denominator is the sum, not the busy time).
  row["share"] = busy_ns > 0 ? k.total_ns / busy_ns : 0.0;
  return row;
}

}  // namespace

Json ProfileToJson(const ProfileReport& report, int top_kernels) {
  const Measurement& m = report.measurement;
  double summed_ns = 0;
  for (const KernelTime& c : report.categories) summed_ns += c.total_ns;
  Json repeat_ms = Json::array();
  for (double ns : m.repeat_ns) repeat_ms.push_back(ns / 1e6);
  Json categories = Json::array();
  for (const KernelTime& c : report.categories) {
    categories.push_back(TimeRow(c, report.repeats, summed_ns));
  }
  Json kernels = Json::array();
  const size_t shown = top_kernels < 0 ? m.kernels.size()
                                       : std::min(m.kernels.size(), static_cast<size_t>(top_kernels));
  for (size_t i = 0; i < shown; ++i) kernels.push_back(TimeRow(m.kernels[i], report.repeats, summed_ns));
  Json out = {{"workload", report.workload},
              {"device", report.device},
              {"schedule", report.schedule},
              {"sample", {{"class", report.sample.class_id}, {"seed", report.sample.seed}}},
              {"source", m.source},
              {"warmup", report.warmup},
              {"repeats", report.repeats},
              {"median_ms", m.median_ns / 1e6},
              {"spread", m.spread},
              {"repeat_ms", repeat_ms},
              {"density", report.stats.density()},
              {"token_density", report.stats.token_density()},
              {"attention_calls", report.stats.calls},
              {"dropped_records", m.dropped_records},
              {"warnings", m.warnings},
              {"distinct_kernels", m.kernels.size()},
              {"categories", categories},
              {"kernels", kernels}};
  if (!report.fallback.empty()) out["fallback"] = report.fallback;
  return out;
}

}  // namespace sparsetune
