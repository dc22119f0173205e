// `sparsetune run CONFIG [--db PATH] [--resume JOB] [--json]`: the main job. Runs (or resumes) a
// search, prints a progress line per generation, then the best feasible candidate with its
// calibration and held-out quality and the command that exports it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "results/store.h"
#include "search/job.h"
#include "search/space.h"

namespace sparsetune::cli {

namespace {

struct RunOptions {
  std::string config;   // job config
  std::string db;       // results store; default: the config's `store`
  int64_t resume = -1;  // job id to resume
  bool json = false;    // end with one JSON object on stdout
  bool quiet = false;   // no progress lines
};

std::string Clock(double seconds) {
  if (!std::isfinite(seconds)) return "-";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  std::ostringstream os;
  os << s / 60 << ":" << std::setw(2) << std::setfill('0') << s % 60;
  return os.str();
}

std::string Num(double x, int decimals) {
  if (!std::isfinite(x)) return "-";
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << x;
  return os.str();
}

Json JsonNum(double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); }

// Measured results within this factor of the constraint still count as reachable: the corners
// probed below are not the only fast points, and wall-clock timings vary by a few percent.
constexpr double kConstraintSlack = 1.15;

// Rejects a constraint that no candidate can meet, before spending the search on it: evaluates
// the fastest corners of the search space (every budget at its minimum and the fewest warm-up
// steps, with dense heads and with every head at the cheapest option) and compares the best
// measured speedup / latency with the constraint. Throws InputError (exit 2) when it is out of
// reach even with kConstraintSlack.
void CheckConstraintReachable(const JobConfig& config, Evaluator& evaluator, std::ostream* log) {
  const ObjectiveConfig& objective = config.objective;
  if (!objective.min_speedup && !objective.max_latency_ms) return;
  const SearchSpace space(config, evaluator.model_geometry());
  Genome corner = space.Dense();
  const auto& warmups = space.warmup_choices();
  corner.warmup = std::min_element(warmups.begin(), warmups.end()) - warmups.begin();
  std::fill(corner.budgets.begin(), corner.budgets.end(), 0);
  std::vector<Genome> corners = {corner};
  const auto& costs = space.option_costs();
  const int64_t cheapest = std::min_element(costs.begin(), costs.end()) - costs.begin();
  if (cheapest != 0) {
    Genome sparse_heads = corner;
    std::fill(sparse_heads.heads.begin(), sparse_heads.heads.end(), cheapest);
    corners.push_back(sparse_heads);
  }
  std::vector<Json> schedules;
  for (Genome& g : corners) {
    space.Normalize(&g);
    schedules.push_back(space.ToSchedule(g));
  }
  if (log) *log << "checking that the constraint is reachable (" << schedules.size()
                << " fastest corners of the search space)\n";
  double best_speedup = 0, best_latency = INFINITY;
  std::string first_error;
  bool any_ok = false;
  for (const EvalResult& r : evaluator.evaluate(schedules)) {
    if (!r.ok) {
      if (first_error.empty()) first_error = r.error;
      continue;
    }
    any_ok = true;
    best_speedup = std::max(best_speedup, r.speedup);
    best_latency = std::min(best_latency, r.latency_ms);
  }
  if (!any_ok) {
    throw RunError(config.source.string() + ": cannot check the constraint: every probed corner "
                   "of the search space failed: " + first_error);
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  if (objective.min_speedup && best_speedup * kConstraintSlack < *objective.min_speedup) {
    os << config.source.string() << ": field 'objective.min_speedup': impossible constraint: the "
       << "fastest corners of the search space reach only " << best_speedup << "x (asked for "
       << *objective.min_speedup << "x)";
    throw InputError(os.str());
  }
  if (objective.max_latency_ms && best_latency > *objective.max_latency_ms * kConstraintSlack) {
    os << config.source.string() << ": field 'objective.max_latency_ms': impossible constraint: "
       << "the fastest corners of the search space take " << best_latency << " ms (asked for "
       << *objective.max_latency_ms << " ms)";
    throw InputError(os.str());
  }
}

int RunRun(const RunOptions& o) {
  JobConfig config = LoadJobConfig(o.config);
  if (!o.db.empty()) config.store = o.db;
  // Progress goes to stderr so that --json leaves stdout to the result.
  std::ostream& log = std::cerr;
  const bool talk = !o.quiet;

  std::unique_ptr<Store> store =
      o.resume >= 0 ? OpenExistingSqliteStore(config.store) : OpenSqliteStore(config.store);
  // Fail on a bad --resume before building the workload (which takes seconds).
  if (o.resume >= 0) CheckResumable(config, *store, o.resume);
  EvaluatorOptions eval_options;
  if (talk) eval_options.progress = [&log](const std::string& line) { log << line << "\n"; };
  Evaluator evaluator(config, eval_options);

  if (talk) {
    log << "job '" << config.name << "' (" << o.config << "): workload " << config.workload.kind;
    if (config.workload.kind == "tiny-vdit") log << "/" << config.workload.preset;
    log << " on " << evaluator.device_name() << ", strategy " << config.search.strategy
        << ", objective " << config.objective.metric;
    if (config.objective.min_speedup) log << ", min speedup " << *config.objective.min_speedup;
    if (config.objective.max_latency_ms) {
      log << ", max latency " << *config.objective.max_latency_ms << " ms";
    }
    log << "\nstore: " << config.store.string() << "\n";
  }

  JobOptions job_options;
  if (o.resume >= 0) {
    job_options.resume_job = o.resume;
  } else {
    CheckConstraintReachable(config, evaluator, talk ? &log : nullptr);
  }
  if (talk) {
    job_options.on_progress = [&log](const Progress& p) {
      log << "job " << p.job_id << " gen " << p.generation << ": " << p.done << "/" << p.planned
          << " candidates (" << p.evaluated << " evaluated, " << p.reused << " reused, "
          << p.failed << " failed) | best feasible ";
      if (p.best_objective) {
        log << Num(*p.best_objective, 3) << " at " << Num(p.best_speedup.value_or(NAN), 2)
            << "x";
      } else {
        log << "none yet";
      }
      log << " | elapsed " << Clock(p.elapsed_s) << " ETA " << Clock(p.eta_s) << "\n";
    };
  }
  const JobSummary summary = RunJob(config, evaluator, *store, job_options);

  // Every speedup is against dense measurements of this process: interleaved with its own
  // candidate's generations (the wall-clock default), or bracketing it. Their spread is how much
  // the machine's speed moved during the job, which the pairing takes out of each speedup.
  std::vector<double> refs;
  int64_t interleaved = 0;
  for (const DenseReference& d : evaluator.dense_references()) {
    refs.push_back(d.latency_ms);
    interleaved += d.interleaved ? 1 : 0;
  }
  std::sort(refs.begin(), refs.end());
  Json dense_refs = {{"count", refs.size()}, {"interleaved", interleaved}};
  if (!refs.empty()) {
    const double median = refs[refs.size() / 2];
    dense_refs["median_ms"] = median;
    dense_refs["spread"] = (refs.back() - refs.front()) / median;
    if (talk) {
      log << "dense references: " << refs.size() << " measurements";
      if (interleaved > 0) log << " (" << interleaved << " interleaved with their candidate)";
      log << ", median " << Num(median, 1) << " ms, spread "
          << Num(100 * (refs.back() - refs.front()) / median, 1) << "%\n";
    }
  }

  Json out = {{"job_id", summary.job_id},
              {"evaluated", summary.evaluated},
              {"reused", summary.reused},
              {"failed", summary.failed},
              {"candidates", summary.candidates},
              {"store", config.store.string()},
              {"dense_latency_ms", JsonNum(summary.baseline.latency_ms)},
              {"dense_references", dense_refs},
              {"best", nullptr}};
  if (!summary.best) {
    if (talk) {
      log << "no feasible candidate: no schedule met the constraint. Inspect with\n"
          << "  sparsetune results candidates " << summary.job_id << " --db "
          << config.store.string() << "\n";
    }
    if (o.json) std::cout << out.dump() << "\n";
    return 0;
  }

  CandidateRecord best = *summary.best;
  // Held-out samples are never optimised on; they are generated once, for the final best.
  if (!config.workload.heldout.empty() && !std::isfinite(best.result.psnr_heldout)) {
    if (talk) log << "scoring the best candidate on " << config.workload.heldout.size()
                  << " held-out samples\n";
    EvaluatorOptions heldout_options = eval_options;
    heldout_options.heldout = true;
    Evaluator heldout(config, heldout_options);
    const EvalResult r = heldout.evaluate_one(best.schedule, "best candidate");
    if (r.ok) {
      store->record_heldout(summary.job_id, best.number, r.psnr_heldout, r.ssim_heldout);
      best.result.psnr_heldout = r.psnr_heldout;
      best.result.ssim_heldout = r.ssim_heldout;
    } else if (talk) {
      log << "held-out scoring failed: " << r.error << "\n";
    }
  }

  const EvalResult& r = best.result;
  const std::string export_cmd = "sparsetune export --db " + config.store.string() + " --job " +
                                 std::to_string(summary.job_id) + " --best -o schedule.json";
  if (talk) {
    log << "best feasible: candidate " << best.number << " (generation " << best.generation
        << ", " << best.origin << ")\n"
        << "  calibration: PSNR " << Num(r.psnr, 2) << " dB, SSIM " << Num(r.ssim, 4) << "\n"
        << "  held-out:    PSNR " << Num(r.psnr_heldout, 2) << " dB, SSIM "
        << Num(r.ssim_heldout, 4) << "\n"
        << "  speedup " << Num(r.speedup, 2) << "x (" << Num(r.latency_ms, 1) << " ms vs dense "
        << Num(r.dense_latency_ms, 1) << " ms, " << r.latency_source << "), attention density "
        << Num(r.density, 3) << ", token density " << Num(r.token_density, 3) << "\n"
        << "export: " << export_cmd << "\n";
  }
  out["best"] = {{"candidate", best.number},
                 {"generation", best.generation},
                 {"origin", best.origin},
                 {"psnr", JsonNum(r.psnr)},
                 {"ssim", JsonNum(r.ssim)},
                 {"psnr_heldout", JsonNum(r.psnr_heldout)},
                 {"ssim_heldout", JsonNum(r.ssim_heldout)},
                 {"speedup", JsonNum(r.speedup)},
                 {"latency_ms", JsonNum(r.latency_ms)},
                 {"density", JsonNum(r.density)},
                 {"token_density", JsonNum(r.token_density)}};
  out["export"] = export_cmd;
  if (o.json) std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

void AddRunCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run a search job: evaluate candidate schedules on the config's workload, commit every "
      "result to the results store, and report the best feasible candidate. Progress goes to "
      "stderr; a killed job continues with --resume JOB.");
  cmd->add_option("CONFIG", o->config, "Job config (JSON); see docs/config.md")->required();
  cmd->add_option("--db", o->db, "Results store (default: the config's `store`, else "
                                 "results/sparsetune.sqlite)");
  cmd->add_option("--resume", o->resume,
                  "Continue job JOB (same config) without re-evaluating finished candidates")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "End with one JSON object on stdout (job_id, evaluated, best)");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->callback([o, &exit_code] { exit_code = RunRun(*o); });
}

}  // namespace sparsetune::cli
