// The job loop: one search job from config to best candidate, committed to the store as it goes.
//
//   strategy.propose(batch) -> per proposal: a finished result with the same genome hash in this
//   job is reused (no evaluation), else a RUNNING row is started -> the new ones are evaluated as
//   one batch through CandidateEvaluator::evaluate (a pool may spread it over GPUs or hosts) ->
//   each result is finished in its own store transaction -> strategy.notify(batch, in order).
//
// Resume: the strategy is rebuilt from the same seed and re-driven; every proposal whose genome
// already has a finished row is answered from the store, so the replay sees the same results and
// proposes the same candidates as the first run did, and only the rest is evaluated. RUNNING rows
// left by a killed run are marked FAIL with kInterruptedReason first; those (and only those) are
// evaluated again when proposed. With a deterministic evaluator the final best is the same as an
// uninterrupted run's. Candidate numbers continue after the existing ones.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "core/eval_result.h"
#include "core/job_config.h"
#include "results/store.h"

namespace sparsetune {

// Error message of candidates that were RUNNING when their job died (re-run on resume).
extern const char* const kInterruptedReason;

struct Progress {
  int64_t job_id = 0;
  int64_t generation = 0;                // generation just completed (0 = seeded population)
  int64_t done = 0;                      // proposals answered this run (evaluated + reused)
  int64_t planned = 0;                   // proposals the strategy makes in the whole job
  int64_t evaluated = 0;                 // new evaluations this run
  int64_t reused = 0;                    // proposals answered from stored results this run
  int64_t failed = 0;                    // new evaluations that failed this run
  std::optional<double> best_objective;  // best feasible objective so far (PSNR dB or SSIM)
  std::optional<double> best_speedup;    // its speedup
  double elapsed_s = 0;                  // wall time since RunJob started (s)
  double eta_s = EvalResult::kNaN;  // remaining time at this run's rate (s); NaN before any data
};

struct JobOptions {
  std::optional<int64_t> resume_job;                 // continue this job instead of creating one
  std::function<void(const Progress&)> on_progress;  // called after every generation
};

struct JobSummary {
  int64_t job_id = 0;
  int64_t evaluated = 0;                // new evaluations this run
  int64_t reused = 0;                   // proposals answered from stored results this run
  int64_t failed = 0;                   // new evaluations that failed this run
  int64_t candidates = 0;               // rows of the job in the store (all states, all runs)
  std::optional<CandidateRecord> best;  // Store::best_feasible of the job
  EvalResult baseline;                  // the dense baseline the job measured against
};

// Throws StoreError (bad input) when job `job_id` does not exist and InputError when it was run
// with a config other than `config` (compared as written). RunJob checks this itself; callers
// may check first to fail before expensive set-up.
void CheckResumable(const JobConfig& config, const Store& store, int64_t job_id);

// Runs (or resumes) a job. Throws InputError when resume_job names a job whose stored config
// differs from config.raw, StoreError from the store; anything the evaluator throws ends the run
// with the job marked INTERRUPTED and its RUNNING rows left for a resume.
JobSummary RunJob(const JobConfig& config, CandidateEvaluator& evaluator, Store& store,
                  const JobOptions& options);

}  // namespace sparsetune
