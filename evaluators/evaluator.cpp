#include "evaluators/evaluator.h"

#include <sys/resource.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "metrics/metrics.h"

#ifdef SPARSETUNE_WITH_CUDA_RUNTIME
#include <cuda_runtime_api.h>
#endif

namespace sparsetune {

namespace {

// The first line of an exception message (libtorch appends backtraces on further lines).
std::string FirstLine(const std::string& text) {
  const size_t end = text.find('\n');
  std::string line = text.substr(0, end);
  if (line.empty()) line = "unknown error";
  return line;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(' '));
        return name;
      }
    }
  }
  return "unknown cpu";
}

// "NVIDIA H100 80GB HBM3 (cuda:0, sm_90, 79 GiB)" from the CUDA runtime; without it compiled in,
// only the device index is known.
std::string CudaDeviceName(int64_t index) {
  const std::string where = "cuda:" + std::to_string(index);
#ifdef SPARSETUNE_WITH_CUDA_RUNTIME
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, static_cast<int>(index)) == cudaSuccess) {
    const auto gib = static_cast<long long>(prop.totalGlobalMem >> 30);
    return std::string(prop.name) + " (" + where + ", sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + ", " + std::to_string(gib) + " GiB)";
  }
#endif
  return where;
}

// Per-category totals of a measurement's kernels as {category: {launches, total_ms}}, and the
// profiler's warnings, for EvalResult.extra (the store keeps both per candidate).
void AddMeasurementExtra(const Measurement& m, Json& extra) {
  Json categories = Json::object();
  for (const KernelTime& c : AggregateCategories(m.kernels)) {
    categories[c.name] = {{"launches", c.launches}, {"total_ms", c.total_ns / 1e6}};
  }
  extra["kernel_categories"] = categories;
  if (m.dropped_records > 0) extra["dropped_records"] = m.dropped_records;
  if (!m.warnings.empty()) extra["profiler_warnings"] = m.warnings;
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return EvalResult::kNaN;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

// Generations of `samples` under `runtime`, timed by `profiler`: warm-up + repeats runs cycling
// through the samples, at least one run per sample. Each run's output is kept for its sample
// (runs are deterministic, so a repeated sample gives the same output).
struct TimedRuns {
  Measurement measurement;
  std::vector<torch::Tensor> outputs;  // per sample
  AttentionStats stats;                // work of one generation (the last run)
};

// Timed generations of one measurement: latency.repeats, but enough that warm-up plus timed
// runs generate every sample at least once.
int64_t TimedRepeats(const LatencyConfig& latency, size_t samples) {
  const int64_t warmup = std::max<int64_t>(latency.warmup, 0);
  return std::max<int64_t>({latency.repeats, static_cast<int64_t>(samples) - warmup, 1});
}

TimedRuns RunTimed(Workload& workload, Profiler& profiler, Runtime& runtime,
                   const std::vector<SampleSpec>& samples, const LatencyConfig& latency) {
  TimedRuns runs;
  runs.outputs.resize(samples.size());
  const int64_t warmup = std::max<int64_t>(latency.warmup, 0);
  const int64_t repeats = TimedRepeats(latency, samples.size());
  size_t next = 0;
  const auto region = [&] {
    const size_t i = next % samples.size();
    runs.outputs[i] = workload.run(samples[i], runtime);
    runs.stats = runtime.stats();
    ++next;
  };
  runs.measurement = profiler.measure(region, static_cast<int>(warmup),
                                      static_cast<int>(repeats),
                                      [&workload] { workload.synchronize(); });
  return runs;
}

// Interleaved timing of a candidate against dense: after `latency.warmup` untimed candidate
// generations, `repeats` pairs of one dense and one candidate generation, the order alternating
// per pair (D C, C D, D C, ...) so neither side always runs first after the other. Dense
// generation k runs the same sample as candidate generation k. One profiler measurement covers
// all timed generations; its records are split by side afterwards.
struct InterleavedRuns {
  TimedRuns candidate;
  Measurement dense;
};

InterleavedRuns RunInterleaved(Workload& workload, Profiler& profiler, Runtime& candidate,
                               Runtime& dense, const std::vector<SampleSpec>& samples,
                               const LatencyConfig& latency) {
  InterleavedRuns runs;
  runs.candidate.outputs.resize(samples.size());
  const int64_t warmup = std::max<int64_t>(latency.warmup, 0);
  const int64_t repeats = TimedRepeats(latency, samples.size());
  std::vector<bool> dense_turn;  // per timed generation
  for (int64_t p = 0; p < repeats; ++p) {
    dense_turn.push_back(p % 2 == 0);
    dense_turn.push_back(p % 2 != 0);
  }
  int64_t call = 0;
  size_t next_candidate = 0;
  auto next_dense = static_cast<size_t>(warmup);  // aligned with the first timed candidate run
  const auto region = [&] {
    const int64_t timed = call - warmup;
    ++call;
    if (timed >= 0 && dense_turn[static_cast<size_t>(timed)]) {
      workload.run(samples[next_dense++ % samples.size()], dense);
      return;
    }
    const size_t i = next_candidate++ % samples.size();
    runs.candidate.outputs[i] = workload.run(samples[i], candidate);
    runs.candidate.stats = candidate.stats();
  };
  const Measurement all =
      profiler.measure(region, static_cast<int>(warmup), static_cast<int>(2 * repeats),
                       [&workload] { workload.synchronize(); });
  // Renumber each side's repeats 0..repeats-1 and summarise them like a measurement of their own.
  std::vector<int64_t> side_index(dense_turn.size());
  int64_t d = 0;
  int64_t c = 0;
  for (size_t t = 0; t < dense_turn.size(); ++t) side_index[t] = dense_turn[t] ? d++ : c++;
  std::vector<KernelRecord> dense_records;
  std::vector<KernelRecord> candidate_records;
  for (KernelRecord record : all.records) {
    const auto t = static_cast<size_t>(record.repeat);
    if (t >= dense_turn.size()) continue;
    record.repeat = side_index[t];
    (dense_turn[t] ? dense_records : candidate_records).push_back(std::move(record));
  }
  const int side_repeats = static_cast<int>(repeats);
  runs.dense = SummarizeRecords(all.source, std::move(dense_records), side_repeats);
  runs.candidate.measurement =
      SummarizeRecords(all.source, std::move(candidate_records), side_repeats);
  runs.candidate.measurement.dropped_records = all.dropped_records;
  runs.candidate.measurement.warnings = all.warnings;
  return runs;
}

}  // namespace

std::string LatencyPairingFor(const LatencyConfig& latency, const std::string& source) {
  if (!latency.pairing.empty()) return latency.pairing;
  // On the wall clock the machine's speed changes within seconds (a 2-vCPU VM measured the same
  // dense generation at 340-880 ms in one process, in phases of several generations): only a
  // dense generation next to the candidate's sees the same phase. CUPTI device time barely moves
  // (0.1-0.2 % between repeats), so sparse references cost less and lose nothing.
  return source == "wall_clock" ? kPairingInterleaved : kPairingBracketed;
}

std::string LatencyEstimatorFor(const LatencyConfig& latency, const std::string& source) {
  if (!latency.estimator.empty()) return latency.estimator;
  // The wall clock sees every interruption of the process (other tenants of the VM, the host's
  // scheduler, page faults); they only ever add time, so the fastest repeat is the closest to
  // the work itself. CUPTI measures device busy time, which such interruptions do not inflate.
  return source == "wall_clock" ? kEstimatorMin : kEstimatorMedian;
}

double EstimateLatency(const std::vector<double>& repeats, const std::string& estimator) {
  if (repeats.empty()) throw RunError("latency: no timed repeats to estimate from");
  if (estimator == kEstimatorMin) return *std::min_element(repeats.begin(), repeats.end());
  if (estimator == kEstimatorMedian) return Median(repeats);
  throw InputError("latency: unknown estimator \"" + estimator + "\" (expected min or median)");
}

Evaluator::Evaluator(const JobConfig& config, EvaluatorOptions options)
    : Evaluator(config,
                [&config] {
                  if (config.device.threads > 0) {
                    torch::set_num_threads(static_cast<int>(config.device.threads));
                  }
                  return MakeWorkload(config);
                }(),
                std::move(options)) {}

namespace {

// glibc's malloc hands every block above its mmap threshold (128 KiB at start, then raised
// step by step as such blocks are freed) a fresh mmap and unmaps it on free, and trims the heap
// top. libtorch's CPU tensors go through it, so a generation of the tiny model page-faults about
// 50k pages, and how many depends on the process's history: the same dense generation measured
// 545 -> 390 ms over its first repeats, with 442k faults in 8 generations; with the threshold
// fixed it measured 300-345 ms with 57k faults (benchmarks/cpu-evaluate.md). A dense baseline
// taken first was therefore slower than the same work later (#4). Fixing both thresholds keeps
// blocks up to 32 MiB on the heap and the freed heap mapped: faster and history-independent.
// Process-wide and done once; the memory stays with the process, which evaluates until it exits.
void StabiliseAllocator() {
#ifdef __GLIBC__
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
#endif
}

}  // namespace

Evaluator::Evaluator(const JobConfig& config, std::unique_ptr<Workload> workload,
                     EvaluatorOptions options)
    : config_(config), options_(std::move(options)), workload_(std::move(workload)) {
  StabiliseAllocator();
  if (config_.device.threads > 0) torch::set_num_threads(static_cast<int>(config_.device.threads));
  if (!workload_->has_ssim() && config_.objective.metric == "ssim") {
    throw InputError(config_.source.string() +
                     ": field 'objective.metric': \"ssim\" needs video outputs; the " +
                     workload_->kind() + " workload compares attention outputs (use \"psnr\")");
  }
  std::string why;
  profiler_ = MakeProfiler(config_.device.device == "cuda", &why);
  if (config_.device.device == "cuda" && profiler_->source() != "cupti") {
    progress("latency falls back to the wall clock: " + why);
  }
  calibration_ = config_.workload.calibration;
  // A shape workload needs no samples: one synthetic sample (seed 0) stands in.
  if (calibration_.empty()) calibration_.push_back(SampleSpec{});
}

void Evaluator::progress(const std::string& line) const {
  if (options_.progress) options_.progress(line);
}

Schedule Evaluator::base_schedule() const {
  Schedule s = Schedule::Dense(workload_->geometry());
  s.block_size = config_.schedule.block_size;
  s.token_order.kind =
      config_.schedule.token_order == "raster" ? TokenOrderKind::kRaster : TokenOrderKind::kTiles;
  s.token_order.tile = config_.schedule.tile;
  return s;
}

void Evaluator::ensure_dense() {
  if (dense_) return;
  progress("dense baseline: " + std::to_string(calibration_.size()) + " calibration sample(s) on " +
           workload_->geometry().name);
  // Untimed start warm-up: the dense outputs of the calibration samples, then more dense
  // generations up to start_warmup. Their times are kept: they show how far a fresh process is
  // from its steady state.
  std::vector<double> warmup_ms;
  {
    torch::NoGradGuard no_grad;
    Runtime runtime(base_schedule());
    const int64_t total = std::max<int64_t>(options_.start_warmup,
                                            static_cast<int64_t>(calibration_.size()));
    for (int64_t i = 0; i < total; ++i) {
      const SampleSpec& sample = calibration_[static_cast<size_t>(i) % calibration_.size()];
      const auto t0 = std::chrono::steady_clock::now();
      torch::Tensor out = workload_->run(sample, runtime);
      workload_->synchronize();
      warmup_ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
              .count());
      dense_outputs_.emplace(std::make_pair(sample.class_id, sample.seed), std::move(out));
    }
  }
  // The first reference, through the candidate path, is the reported baseline.
  EvalResult r = measure_dense_reference();
  r.psnr = kPsnrCap;
  r.ssim = workload_->has_ssim() ? 1.0 : EvalResult::kNaN;
  if (options_.heldout && !config_.workload.heldout.empty()) {
    r.psnr_heldout = kPsnrCap;
    r.ssim_heldout = r.ssim;
  }
  r.extra["start_warmup_ms"] = warmup_ms;
  dense_ = r;
  char line[128];
  std::snprintf(line, sizeof line,
                "dense baseline: %.1f ms per generation (%s; start warm-up %zu generations)",
                r.latency_ms, r.latency_source.c_str(), warmup_ms.size());
  progress(line);
}

const torch::Tensor& Evaluator::dense_output(const SampleSpec& sample) {
  const auto key = std::make_pair(sample.class_id, sample.seed);
  auto it = dense_outputs_.find(key);
  if (it != dense_outputs_.end()) return it->second;
  torch::NoGradGuard no_grad;
  Runtime runtime(base_schedule());
  return dense_outputs_.emplace(key, workload_->run(sample, runtime)).first->second;
}

EvalResult Evaluator::dense_baseline() {
  ensure_dense();
  return *dense_;
}

std::vector<EvalResult> Evaluator::evaluate(const std::vector<Json>& schedules) {
  std::vector<Pending> pending(schedules.size());
  for (size_t i = 0; i < schedules.size(); ++i) {
    try {
      pending[i].schedule = ScheduleFromJson(schedules[i], "candidate " + std::to_string(i));
    } catch (const std::exception& e) {
      pending[i].error = FirstLine(e.what());
    }
  }
  return evaluate_pending(pending);
}

EvalResult Evaluator::evaluate_one(const Json& schedule, const std::string& source) {
  Pending p;
  try {
    p.schedule = ScheduleFromJson(schedule, source);
  } catch (const std::exception& e) {
    p.error = FirstLine(e.what());
  }
  return evaluate_pending({p}).front();
}

EvalResult Evaluator::evaluate_schedule(const Schedule& schedule) {
  return evaluate_schedules({schedule}).front();
}

std::vector<EvalResult> Evaluator::evaluate_schedules(const std::vector<Schedule>& schedules) {
  std::vector<Pending> pending(schedules.size());
  for (size_t i = 0; i < schedules.size(); ++i) pending[i].schedule = schedules[i];
  return evaluate_pending(pending);
}

std::vector<EvalResult> Evaluator::evaluate_pending(const std::vector<Pending>& pending) {
  std::vector<EvalResult> results(pending.size());
  // Index into dense_refs_ of the reference just before each timed candidate; -1 = not timed.
  std::vector<std::ptrdiff_t> before(pending.size(), -1);
  auto fail = [](const std::string& error) {
    EvalResult r;
    r.ok = false;
    r.error = error;
    return r;
  };
  for (size_t i = 0; i < pending.size(); ++i) {
    if (!pending[i].schedule) {
      results[i] = fail(pending[i].error);
      continue;
    }
    try {
      CheckGeometryMatches(*pending[i].schedule, workload_->geometry(), "schedule");
      ensure_dense();
      if (interleaved()) {
        results[i] = run_candidate(*pending[i].schedule, /*heldout=*/true, /*paired=*/true);
        ++timed_candidates_;
        continue;
      }
      if (since_reference_ >= std::max<int64_t>(options_.dense_every, 1)) {
        measure_dense_reference();
      }
      results[i] = run_candidate(*pending[i].schedule, /*heldout=*/true, /*paired=*/false);
      before[i] = static_cast<std::ptrdiff_t>(dense_refs_.size()) - 1;
      ++timed_candidates_;
      ++since_reference_;
    } catch (const std::exception& e) {
      results[i] = fail(FirstLine(e.what()));
    }
  }
  // Close the batch with a reference, so every timed candidate has one on each side.
  if (since_reference_ > 0 &&
      std::any_of(before.begin(), before.end(), [](std::ptrdiff_t b) { return b >= 0; })) {
    measure_dense_reference();
  }
  for (size_t i = 0; i < pending.size(); ++i) {
    if (before[i] < 0) continue;
    const DenseReference& a = dense_refs_[static_cast<size_t>(before[i])];
    const DenseReference& b = dense_refs_[static_cast<size_t>(before[i]) + 1];
    EvalResult& r = results[i];
    r.dense_latency_ms = 0.5 * (a.latency_ms + b.latency_ms);
    r.speedup = r.latency_ms > 0 ? r.dense_latency_ms / r.latency_ms : EvalResult::kNaN;
    r.extra["dense_reference"] = {{"pairing", kPairingBracketed},
                                  {"before_ms", a.latency_ms},
                                  {"after_ms", b.latency_ms},
                                  {"before_repeat_ms", a.repeat_ms},
                                  {"after_repeat_ms", b.repeat_ms},
                                  {"before_index", before[i]}};
  }
  return results;
}

EvalResult Evaluator::measure_dense_reference() {
  const Schedule dense = base_schedule();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const long faults0 = usage.ru_minflt;
  EvalResult r = run_candidate(dense, /*heldout=*/false, /*paired=*/false);
  getrusage(RUSAGE_SELF, &usage);
  DenseReference ref;
  ref.latency_ms = r.latency_ms;
  ref.repeat_ms = r.extra.at("repeat_ms").get<std::vector<double>>();
  ref.spread = r.latency_spread;
  ref.after_candidates = timed_candidates_;
  ref.minor_faults = usage.ru_minflt - faults0;
  dense_refs_.push_back(ref);
  since_reference_ = 0;
  r.ok = true;
  r.dense_latency_ms = r.latency_ms;
  r.speedup = 1.0;
  return r;
}

bool Evaluator::interleaved() const {
  return LatencyPairingFor(config_.latency, profiler_->source()) == kPairingInterleaved;
}

EvalResult Evaluator::run_candidate(const Schedule& schedule, bool heldout, bool paired) {
  torch::NoGradGuard no_grad;
  Runtime runtime(schedule);
  std::optional<Measurement> dense_side;
  int64_t minor_faults = 0;
  TimedRuns runs;
  if (paired) {
    if (!dense_runtime_) dense_runtime_ = std::make_unique<Runtime>(base_schedule());
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const long faults0 = usage.ru_minflt;
    InterleavedRuns both = RunInterleaved(*workload_, *profiler_, runtime, *dense_runtime_,
                                          calibration_, config_.latency);
    getrusage(RUSAGE_SELF, &usage);
    minor_faults = usage.ru_minflt - faults0;
    runs = std::move(both.candidate);
    dense_side = std::move(both.dense);
  } else {
    runs = RunTimed(*workload_, *profiler_, runtime, calibration_, config_.latency);
  }

  EvalResult r;
  Json samples = Json::array();
  auto score = [&](const char* set, const SampleSpec& sample, const torch::Tensor& output,
                   std::vector<double>& psnr, std::vector<double>& ssim) {
    const Quality q = workload_->compare(dense_output(sample), output);
    if (!std::isfinite(q.psnr)) {
      throw RunError(std::string(set) + " sample (class " + std::to_string(sample.class_id) +
                     ", seed " + std::to_string(sample.seed) + "): PSNR is not finite");
    }
    psnr.push_back(q.psnr);
    ssim.push_back(q.ssim);
    Json entry = {{"set", set},   {"class", sample.class_id}, {"seed", sample.seed},
                  {"psnr", q.psnr}, {"ssim", std::isfinite(q.ssim) ? Json(q.ssim) : Json()}};
    for (const auto& [key, value] : q.extra.items()) entry[key] = value;
    samples.push_back(entry);
  };

  std::vector<double> psnr, ssim;
  for (size_t i = 0; i < calibration_.size(); ++i) {
    score("calibration", calibration_[i], runs.outputs[i], psnr, ssim);
  }
  r.psnr = Mean(psnr);
  r.ssim = workload_->has_ssim() ? Mean(ssim) : EvalResult::kNaN;

  if (heldout && options_.heldout && !config_.workload.heldout.empty()) {
    std::vector<double> psnr_h, ssim_h;
    for (const SampleSpec& sample : config_.workload.heldout) {
      progress("held-out sample class " + std::to_string(sample.class_id) + ", seed " +
               std::to_string(sample.seed));
      score("heldout", sample, workload_->run(sample, runtime), psnr_h, ssim_h);
    }
    r.psnr_heldout = Mean(psnr_h);
    r.ssim_heldout = workload_->has_ssim() ? Mean(ssim_h) : EvalResult::kNaN;
  }

  r.ok = true;
  const std::string estimator = LatencyEstimatorFor(config_.latency, runs.measurement.source);
  r.latency_ms = EstimateLatency(runs.measurement.repeat_ns, estimator) / 1e6;
  r.density = runs.stats.density();
  r.token_density = runs.stats.token_density();
  r.latency_spread = runs.measurement.spread;
  r.latency_source = runs.measurement.source;
  r.kernels = runs.measurement.kernels;
  AddMeasurementExtra(runs.measurement, r.extra);
  std::vector<double> repeat_ms;
  for (double ns : runs.measurement.repeat_ns) repeat_ms.push_back(ns / 1e6);
  r.extra["repeat_ms"] = repeat_ms;
  r.extra["latency_estimator"] = estimator;
  r.extra["samples"] = samples;
  r.extra["mask_builds"] = runs.stats.mask_builds;
  r.extra["arm_runs"] = runs.stats.arm_runs;
  r.extra["cache_bytes"] = runtime.cache_bytes();
  if (dense_side) {
    DenseReference ref;
    for (double ns : dense_side->repeat_ns) ref.repeat_ms.push_back(ns / 1e6);
    ref.latency_ms = EstimateLatency(dense_side->repeat_ns, estimator) / 1e6;
    ref.spread = dense_side->spread;
    ref.after_candidates = timed_candidates_;
    ref.minor_faults = minor_faults;  // of the whole interleaved measurement, both sides
    ref.interleaved = true;
    dense_refs_.push_back(ref);
    r.dense_latency_ms = ref.latency_ms;
    r.speedup = r.latency_ms > 0 ? r.dense_latency_ms / r.latency_ms : EvalResult::kNaN;
    r.extra["dense_reference"] = {{"pairing", kPairingInterleaved},
                                  {"repeat_ms", ref.repeat_ms},
                                  {"order", "D C, C D, D C, ... (one pair per repeat)"},
                                  {"index", dense_refs_.size() - 1}};
  }
  return r;
}

Json Evaluator::model_geometry() const { return ModelGeometryToJson(workload_->geometry()); }

std::string Evaluator::device_name() const {
  const torch::Device device = workload_->options().device();
  if (device.is_cuda()) return CudaDeviceName(device.has_index() ? device.index() : 0);
  return "cpu: " + CpuModelName() + " (" + std::to_string(torch::get_num_threads()) +
         " threads)";
}

const std::vector<CapturedCall>& Evaluator::captured_calls() {
  if (!captured_) {
    progress("capturing q/k/v of the dense run of calibration sample 0");
    torch::NoGradGuard no_grad;
    captured_ = workload_->capture(calibration_.front(), workload_->capture_steps());
    if (captured_->empty()) {
      throw RunError("workload '" + workload_->geometry().name +
                     "': no attention calls were captured for analysis");
    }
  }
  return *captured_;
}

Json Evaluator::head_advice(const std::vector<Json>& head_options) {
  torch::NoGradGuard no_grad;
  const ModelGeometry& g = workload_->geometry();
  const std::vector<CapturedCall>& calls = captured_calls();
  const auto layers = static_cast<size_t>(g.layers);
  const auto heads = static_cast<size_t>(g.heads);

  // A schedule running `pattern` on every head from step 0 (no warm-up, full token budget), so
  // each captured call is executed as that pattern would execute it.
  auto uniform = [&](const HeadPattern& pattern) {
    Schedule s = base_schedule();
    s.dense_warmup_steps = 0;
    for (auto& layer : s.heads) std::fill(layer.begin(), layer.end(), pattern);
    ValidateSchedule(s, "head advice");
    return s;
  };

  // ARM's pick per head: the most frequent pick over the captured steps (ties: the later step).
  // ARM compares its candidates at a density; take the middle of the searched densities.
  HeadPattern auto_pattern;
  auto_pattern.pattern = PatternKind::kAuto;
  auto_pattern.arm_refresh = 1;
  const std::vector<double>& densities = config_.space.densities;
  auto_pattern.density = densities.empty() ? 0.25 : densities[densities.size() / 2];
  Runtime arm(uniform(auto_pattern));
  std::vector<std::vector<std::map<PatternKind, int>>> votes(
      layers, std::vector<std::map<PatternKind, int>>(heads));
  std::vector<std::vector<PatternKind>> last(layers, std::vector<PatternKind>(heads));
  Runtime dense(base_schedule());
  std::vector<torch::Tensor> dense_out;
  for (const CapturedCall& c : calls) {
    arm.reset();
    arm.attention(c.q, c.k, c.v, c.step, c.layer);
    const std::vector<PatternKind> picks = arm.arm_picks(c.layer);
    for (size_t h = 0; h < heads && h < picks.size(); ++h) {
      votes[static_cast<size_t>(c.layer)][h][picks[h]] += 1;
      last[static_cast<size_t>(c.layer)][h] = picks[h];
    }
    dense.reset();
    // Kept on the CPU: the per-head comparison reads tensors through accessors.
    dense_out.push_back(
        dense.attention(c.q, c.k, c.v, c.step, c.layer).to(torch::kCPU, torch::kFloat64));
  }
  Json arm_json = Json::array();
  for (size_t l = 0; l < layers; ++l) {
    Json row = Json::array();
    for (size_t h = 0; h < heads; ++h) {
      PatternKind best = last[l][h];
      int best_votes = votes[l][h].count(best) ? votes[l][h].at(best) : 0;
      for (const auto& [kind, n] : votes[l][h]) {
        if (n > best_votes) {
          best = kind;
          best_votes = n;
        }
      }
      row.push_back(ToString(best));
    }
    arm_json.push_back(row);
  }

  // error[layer][head][option]: mean relative L2 error of the head's output over the captured
  // calls of that layer.
  std::vector<std::vector<std::vector<double>>> error(
      layers, std::vector<std::vector<double>>(heads, std::vector<double>(head_options.size(), 0)));
  std::vector<int> calls_per_layer(layers, 0);
  for (const CapturedCall& c : calls) calls_per_layer[static_cast<size_t>(c.layer)] += 1;
  for (size_t o = 0; o < head_options.size(); ++o) {
    const HeadPattern pattern = HeadPatternFromJson(head_options[o], "head advice",
                                                    "head_options[" + std::to_string(o) + "]");
    Runtime runtime(uniform(pattern));
    for (size_t i = 0; i < calls.size(); ++i) {
      const CapturedCall& c = calls[i];
      runtime.reset();
      const torch::Tensor out =
          runtime.attention(c.q, c.k, c.v, c.step, c.layer).to(torch::kCPU, torch::kFloat64);
      const std::vector<AttentionError> errs = CompareAttentionPerHead(dense_out[i], out);
      for (size_t h = 0; h < heads && h < errs.size(); ++h) {
        error[static_cast<size_t>(c.layer)][h][o] +=
            errs[h].rel_l2 / calls_per_layer[static_cast<size_t>(c.layer)];
      }
    }
  }
  Json error_json = Json::array();
  for (size_t l = 0; l < layers; ++l) {
    Json row = Json::array();
    for (size_t h = 0; h < heads; ++h) {
      // A layer without captured calls (possible in a trace) has no measured error: null.
      row.push_back(calls_per_layer[l] > 0 ? Json(error[l][h])
                                           : Json(std::vector<Json>(head_options.size())));
    }
    error_json.push_back(row);
  }
  return Json{{"arm", arm_json}, {"error", error_json}};
}

}  // namespace sparsetune
