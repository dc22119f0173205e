// Evaluator: turns candidate schedules into EvalResults on one workload (ARCHITECTURE.md, "The
// loop"). Semantics, the latency method and the 2 s budget: docs/workloads.md, "Evaluator".
//
//   Evaluator ev(LoadJobConfig("configs/default.json"));
//   EvalResult dense = ev.dense_baseline();        // measured once, cached
//   std::vector<EvalResult> r = ev.evaluate({schedule_json, ...});
//
// For each candidate, the calibration samples are generated under the candidate's Runtime; those
// generations are also the timed repeats (profiler warm-up + repeats, cycling through the
// samples), so quality and latency come from the same runs. Held-out samples (when enabled) are
// generated untimed afterwards. Dense outputs of every sample are computed once and cached.
//
// Speedup is measured against dense reference measurements taken through exactly the candidate
// path (the dense schedule as a candidate, same warm-up and repeats), interleaved with the
// candidates: one before the first candidate, one after every `dense_every` timed candidates and
// one at the end of every evaluate() batch. A candidate's dense latency is the mean of the
// reference measurements just before and just after it, so slow drift of the machine (load,
// frequency) cancels. The first reference is taken only after `start_warmup` untimed dense
// generations, and the constructor fixes glibc malloc's mmap/trim thresholds for the process:
// with the defaults, libtorch's tensors were mmapped afresh every generation and the page-fault
// cost fell as the process aged, so a baseline measured first was too slow (#4;
// benchmarks/cpu-evaluate.md).
// That is the "bracketed" pairing (latency.pairing; the default on CUPTI). On the wall clock the
// default is "interleaved": each candidate's timed repeats alternate with dense generations of
// the same samples (D C, C D, D C, ...; a persistent dense Runtime), the candidate's dense latency
// is the estimator over those dense repeats, and every such dense measurement is appended to
// dense_references(); no separate references are taken after the first (the baseline). A shared
// VM's speed moves in phases of seconds; only a dense run next to the candidate's sees the same
// phase (docs/workloads.md, "Timing noise").
// Latency of a candidate or reference is one number from its timed repeats, by the estimator
// LatencyEstimatorFor() picks: the minimum on the wall clock (interference on a shared or
// virtual machine only adds time, so the fastest repeat is the least disturbed; measured in
// docs/workloads.md, "Timing noise"), the median on CUPTI device time. Every repeat is kept in the
// result (extra.repeat_ms) and in dense_references().
// A failing candidate (bad schedule, geometry mismatch, exception, NaN/Inf) gives ok=false.
// Not thread-safe; deterministic for fixed seeds and thread count.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/eval_result.h"
#include "core/job_config.h"
#include "evaluators/workload.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"
#include "profiler/profiler.h"

namespace sparsetune {

struct EvaluatorOptions {
  bool heldout = false;  // also generate and score the held-out samples (evaluate CLI, report)
  // Receives one line per long piece of work (dense baselines, candidates); empty = silent.
  std::function<void(const std::string&)> progress;
  // Timed candidates between two dense reference measurements (>= 1).
  int64_t dense_every = 8;
  // Untimed dense generations (the cached dense outputs included) before the first reference.
  int64_t start_warmup = 4;
};

// One dense reference measurement (the dense schedule timed like a candidate).
struct DenseReference {
  double latency_ms = 0;       // generation time: the latency estimator over repeat_ms
  std::vector<double> repeat_ms;  // every timed repeat's generation time (ms), in order
  double spread = 0;           // (max - min) / median of the repeats
  int64_t after_candidates = 0;  // timed candidates of this evaluator before this measurement
  int64_t minor_faults = 0;    // page faults (minor) of the process during the measurement
  bool interleaved = false;    // measured interleaved with one candidate's repeats
};

// The pairings of `latency.pairing`.
inline constexpr const char* kPairingInterleaved = "interleaved";
inline constexpr const char* kPairingBracketed = "bracketed";

// The pairing for a measurement from `source`: latency.pairing when the config sets it, else
// "interleaved" on the wall clock and "bracketed" on CUPTI.
std::string LatencyPairingFor(const LatencyConfig& latency, const std::string& source);

// The latency estimators of `latency.estimator`.
inline constexpr const char* kEstimatorMin = "min";
inline constexpr const char* kEstimatorMedian = "median";

// The estimator for a measurement from `source` ("wall_clock" | "cupti"): latency.estimator
// when the config sets it, else "min" on the wall clock and "median" on CUPTI.
std::string LatencyEstimatorFor(const LatencyConfig& latency, const std::string& source);
// One latency from timed repeats (any unit, any order) under `estimator` ("min" | "median";
// the median of an even count is the mean of the middle two). Throws InputError for another
// estimator, RunError for no repeats.
double EstimateLatency(const std::vector<double>& repeats, const std::string& estimator);

class Evaluator : public CandidateEvaluator {
 public:
  // Builds the workload the config names; sets libtorch's thread count from device.threads.
  explicit Evaluator(const JobConfig& config, EvaluatorOptions options = {});
  // With a workload built by the caller (tests, custom geometries).
  Evaluator(const JobConfig& config, std::unique_ptr<Workload> workload,
            EvaluatorOptions options = {});

  // A batch: candidates in order, dense references interleaved (see above). Never throws for a
  // failing candidate.
  std::vector<EvalResult> evaluate(const std::vector<Json>& schedules) override;
  // One candidate as a batch of one (a dense reference is measured after it).
  EvalResult evaluate_one(const Json& schedule, const std::string& source = "candidate");
  EvalResult evaluate_schedule(const Schedule& schedule);
  std::vector<EvalResult> evaluate_schedules(const std::vector<Schedule>& schedules);
  // The first dense reference (quality 100 dB / 1.0, speedup 1); extra holds the start warm-up
  // generation times ("start_warmup_ms").
  EvalResult dense_baseline() override;
  // Every dense reference measured so far, in order.
  const std::vector<DenseReference>& dense_references() const { return dense_refs_; }
  Json model_geometry() const override;
  std::string device_name() const override;
  Json head_advice(const std::vector<Json>& head_options) override;

  // q/k/v of the dense run of calibration sample 0 at workload().capture_steps() (cached).
  const std::vector<CapturedCall>& captured_calls();
  // The config's fixed schedule parts (block size, token order) on a dense schedule.
  Schedule base_schedule() const;
  Workload& workload() { return *workload_; }
  const JobConfig& config() const { return config_; }

 private:
  // A parsed candidate, or the error that replaced it.
  struct Pending {
    std::optional<Schedule> schedule;
    std::string error;
  };
  std::vector<EvalResult> evaluate_pending(const std::vector<Pending>& pending);
  void ensure_dense();
  // Runs the dense schedule exactly as a candidate (timed and scored: PSNR 100), records it in
  // dense_refs_ and returns its result with speedup 1.
  EvalResult measure_dense_reference();
  const torch::Tensor& dense_output(const SampleSpec& sample);
  // Times and scores one candidate (held-out samples too when `heldout` and enabled); speedup
  // and dense latency are left for the caller, which knows the bracketing references.
  // With `paired`, the timed repeats interleave with dense generations (latency.pairing
  // "interleaved") and the result carries its dense latency and speedup.
  EvalResult run_candidate(const Schedule& schedule, bool heldout, bool paired);
  bool interleaved() const;
  void progress(const std::string& line) const;

  JobConfig config_;
  EvaluatorOptions options_;
  std::unique_ptr<Workload> workload_;
  std::unique_ptr<Profiler> profiler_;
  std::vector<SampleSpec> calibration_;
  std::optional<EvalResult> dense_;
  std::vector<DenseReference> dense_refs_;
  int64_t timed_candidates_ = 0;   // candidates timed so far
  int64_t since_reference_ = 0;    // candidates timed since the last dense reference
  std::map<std::pair<int64_t, uint64_t>, torch::Tensor> dense_outputs_;  // by (class, seed)
  std::optional<std::vector<CapturedCall>> captured_;
  std::unique_ptr<Runtime> dense_runtime_;  // dense side of interleaved measurements
};

}  // namespace sparsetune
