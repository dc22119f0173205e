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
};

class Evaluator : public CandidateEvaluator {
 public:
  // Builds the workload the config names; sets libtorch's thread count from device.threads.
  explicit Evaluator(const JobConfig& config, EvaluatorOptions options = {});
  // With a workload built by the caller (tests, custom geometries).
  Evaluator(const JobConfig& config, std::unique_ptr<Workload> workload,
            EvaluatorOptions options = {});

  std::vector<EvalResult> evaluate(const std::vector<Json>& schedules) override;
  // One candidate; never throws for a failing candidate.
  EvalResult evaluate_one(const Json& schedule, const std::string& source = "candidate");
  EvalResult evaluate_schedule(const Schedule& schedule);
  EvalResult dense_baseline() override;
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
  void ensure_dense();
  const torch::Tensor& dense_output(const SampleSpec& sample);
  EvalResult run_candidate(const Schedule& schedule);
  void progress(const std::string& line) const;

  JobConfig config_;
  EvaluatorOptions options_;
  std::unique_ptr<Workload> workload_;
  std::unique_ptr<Profiler> profiler_;
  std::vector<SampleSpec> calibration_;
  std::optional<EvalResult> dense_;
  std::map<std::pair<int64_t, uint64_t>, torch::Tensor> dense_outputs_;  // by (class, seed)
  std::optional<std::vector<CapturedCall>> captured_;
};

}  // namespace sparsetune
