#include "search/job.h"

#include <chrono>
#include <cmath>
#include <map>
#include <unordered_map>

#include "core/build_info.h"
#include "core/error.h"
#include "search/objective.h"
#include "search/space.h"
#include "search/strategy.h"

namespace sparsetune {

const char* const kInterruptedReason = "interrupted: resumed";

void CheckResumable(const JobConfig& config, const Store& store, int64_t job_id) {
  const JobRecord job = store.job(job_id);
  if (job.config != config.raw) {
    throw InputError(config.source.string() + ": --resume " + std::to_string(job_id) + ": job " +
                     std::to_string(job_id) +
                     " was run with a different config; resume it with its own config");
  }
}

namespace {

// Key of the head advice inside the stored baseline's `extra`.
constexpr const char* kAdviceKey = "head_advice";

std::string WorkloadName(const WorkloadConfig& w) {
  if (w.kind == "tiny-vdit") return w.kind + "/" + w.preset;
  if (w.kind == "shape") return w.kind + "/" + w.shape;
  if (w.kind == "trace" && w.trace) return w.kind + "/" + w.trace->filename().string();
  return w.kind;
}

Json ConstraintJson(const ObjectiveConfig& o) {
  Json c = Json::object();
  if (o.min_speedup) c["min_speedup"] = *o.min_speedup;
  if (o.max_latency_ms) c["max_latency_ms"] = *o.max_latency_ms;
  return c;
}

bool Interrupted(const CandidateRecord& c) {
  return c.state == CandidateState::kFail && c.result.error == kInterruptedReason;
}

}  // namespace

JobSummary RunJob(const JobConfig& config, CandidateEvaluator& evaluator, Store& store,
                  const JobOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const SearchSpace space(config, evaluator.model_geometry());

  JobSummary summary;
  if (options.resume_job) {
    const int64_t id = *options.resume_job;
    CheckResumable(config, store, id);
    summary.job_id = id;
    store.fail_running(id, kInterruptedReason);
    store.set_job_state(id, "RUNNING");
  } else {
    JobRecord job;
    job.name = config.name;
    job.config = config.raw;
    job.workload = WorkloadName(config.workload);
    job.device = evaluator.device_name();
    job.commit = ToolkitString();
    job.objective = config.objective.metric;
    job.constraint = ConstraintJson(config.objective);
    summary.job_id = store.create_job(job);
  }
  const int64_t job_id = summary.job_id;

  try {
    // A resumed job keeps the baseline and head advice of its first run: the strategy's latency
    // target and seeds derive from them, and the replay must see what the first run saw (a
    // re-measured latency or a last-bit change in an attention error could change a seed). The
    // advice comes from the dense run, so it is kept with the baseline, in its `extra`.
    StrategyContext context;
    context.config = &config;
    context.space = &space;
    if (std::optional<EvalResult> stored = store.baseline(job_id)) {
      summary.baseline = *stored;
    } else {
      summary.baseline = evaluator.dense_baseline();
      summary.baseline.extra[kAdviceKey] = evaluator.head_advice(space.head_options());
      store.save_baseline(job_id, summary.baseline);
    }
    if (summary.baseline.extra.is_object() && summary.baseline.extra.contains(kAdviceKey)) {
      context.head_advice = summary.baseline.extra.at(kAdviceKey);
    } else {
      context.head_advice = evaluator.head_advice(space.head_options());
    }
    context.dense_latency_ms = summary.baseline.latency_ms;
    std::unique_ptr<SearchStrategy> strategy = MakeStrategy(context);

    // Finished results by genome hash: what a proposal is answered from instead of evaluating.
    std::unordered_map<std::string, CandidateRecord> finished;
    for (const CandidateRecord& c : store.candidates(job_id)) {
      if (c.state != CandidateState::kRunning && !Interrupted(c))
        finished.emplace(c.genome_hash, c);
    }

    Progress progress;
    progress.job_id = job_id;
    progress.planned = strategy->planned();
    const size_t batch = static_cast<size_t>(
        config.search.batch_size > 0 ? config.search.batch_size : config.search.population);

    while (!strategy->finished()) {
      const std::vector<Proposal> proposals = strategy->propose(batch);
      if (proposals.empty()) {
        throw RunError("search strategy '" + config.search.strategy +
                       "' proposed nothing before finishing");
      }
      std::vector<Evaluated> done(proposals.size());
      std::vector<size_t> fresh;    // proposal index of each new evaluation
      std::vector<Json> schedules;  // what is evaluated, in the order of `fresh`
      std::vector<int64_t> fresh_numbers;
      std::map<std::string, size_t> in_batch;                    // hash -> index into `fresh`
      std::vector<std::ptrdiff_t> source(proposals.size(), -1);  // index into fresh, or -1
      for (size_t i = 0; i < proposals.size(); ++i) {
        const Proposal& p = proposals[i];
        const std::string hash = space.Hash(p.genome);
        done[i].genome = p.genome;
        auto hit = finished.find(hash);
        if (hit != finished.end()) {
          done[i].number = hit->second.number;
          done[i].result = hit->second.result;
          ++summary.reused;
          continue;
        }
        auto same = in_batch.find(hash);
        if (same != in_batch.end()) {
          source[i] = static_cast<std::ptrdiff_t>(same->second);
          ++summary.reused;
          continue;
        }
        Json schedule = space.ToSchedule(p.genome);
        const int64_t number = store.start_candidate(job_id, p.generation, space.ToJson(p.genome),
                                                     hash, p.parents, schedule, p.origin);
        in_batch.emplace(hash, fresh.size());
        source[i] = static_cast<std::ptrdiff_t>(fresh.size());
        fresh.push_back(i);
        fresh_numbers.push_back(number);
        schedules.push_back(std::move(schedule));
      }

      if (!schedules.empty()) {
        const std::vector<EvalResult> results = evaluator.evaluate(schedules);
        if (results.size() != schedules.size()) {
          throw RunError("evaluator returned " + std::to_string(results.size()) + " results for " +
                         std::to_string(schedules.size()) + " candidates");
        }
        for (size_t k = 0; k < results.size(); ++k) {
          const Score score = ScoreOf(config.objective, results[k]);
          store.finish_candidate(job_id, fresh_numbers[k], results[k], score.objective,
                                 score.feasible);
          ++summary.evaluated;
          if (!results[k].ok) ++summary.failed;
          std::optional<CandidateRecord> row = store.candidate(job_id, fresh_numbers[k]);
          if (!row) throw RunError("store lost candidate " + std::to_string(fresh_numbers[k]));
          finished.emplace(row->genome_hash, *row);
        }
        for (size_t i = 0; i < proposals.size(); ++i) {
          if (source[i] < 0) continue;
          done[i].number = fresh_numbers[static_cast<size_t>(source[i])];
          done[i].result = results[static_cast<size_t>(source[i])];
        }
      }
      for (Evaluated& e : done) e.score = ScoreOf(config.objective, e.result);
      strategy->notify(done);

      progress.done += static_cast<int64_t>(proposals.size());
      if (strategy->generation_complete() && options.on_progress) {
        progress.generation = strategy->generation();
        progress.evaluated = summary.evaluated;
        progress.reused = summary.reused;
        progress.failed = summary.failed;
        progress.elapsed_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        progress.eta_s =
            progress.done > 0
                ? progress.elapsed_s / static_cast<double>(progress.done) *
                      static_cast<double>(std::max<int64_t>(progress.planned - progress.done, 0))
                : EvalResult::kNaN;
        std::vector<CandidateRecord> rows;
        for (const auto& entry : finished) rows.push_back(entry.second);
        if (std::optional<CandidateRecord> best = BestFeasible(rows)) {
          progress.best_objective = best->objective;
          progress.best_speedup = best->result.speedup;
        }
        options.on_progress(progress);
      }
    }
  } catch (...) {
    // Best effort: the original exception matters more than a failure to record the state.
    try {
      store.set_job_state(job_id, "INTERRUPTED");
    } catch (...) {
    }
    throw;
  }

  store.set_job_state(job_id, "COMPLETE");
  const std::vector<CandidateRecord> rows = store.candidates(job_id);
  summary.candidates = static_cast<int64_t>(rows.size());
  summary.best = store.best_feasible(job_id);
  return summary;
}

}  // namespace sparsetune
