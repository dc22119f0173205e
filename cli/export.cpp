// `sparsetune export --db DB --job ID (--best | --candidate N) [--min-speedup X] -o FILE`:
// writes a stored candidate's schedule as a schedule v1 file with provenance.
#include <chrono>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/build_info.h"
#include "core/error.h"
#include "kernels/schedule.h"
#include "results/store.h"

namespace sparsetune::cli {

namespace {

struct ExportOptions {
  std::string db = "results/sparsetune.sqlite";  // results store
  int64_t job = 0;                               // job id
  bool best = false;                             // export the best feasible candidate
  int64_t candidate = -1;                        // or this candidate number
  double min_speedup = 0;                        // with --best: only candidates at least this fast
  std::string output;                            // schedule file to write
};

std::string NowUtc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream os;
  os << std::put_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return os.str();
}

Json Metric(double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); }

CandidateRecord Choose(const Store& store, const ExportOptions& o) {
  if (o.candidate >= 0) {
    auto c = store.candidate(o.job, o.candidate);
    if (!c) {
      throw InputError(o.db + ": job " + std::to_string(o.job) + " has no candidate " +
                       std::to_string(o.candidate));
    }
    if (c->state != CandidateState::kComplete) {
      throw InputError(o.db + ": candidate " + std::to_string(o.candidate) + " of job " +
                       std::to_string(o.job) + " is " + ToString(c->state) +
                       ", only COMPLETE candidates can be exported");
    }
    return *c;
  }
  std::vector<CandidateRecord> pool;
  for (const CandidateRecord& c : store.candidates(o.job)) {
    if (c.state != CandidateState::kComplete) continue;
    if (o.min_speedup > 0) {
      // An explicit --min-speedup replaces the job's own constraint.
      if (!(c.result.speedup >= o.min_speedup)) continue;
      CandidateRecord relaxed = c;
      relaxed.feasible = true;
      pool.push_back(relaxed);
    } else {
      pool.push_back(c);
    }
  }
  auto best = BestFeasible(pool);
  if (!best) {
    std::ostringstream os;
    os << o.db << ": job " << o.job << " has no feasible COMPLETE candidate";
    if (o.min_speedup > 0) os << " with speedup >= " << o.min_speedup;
    throw InputError(os.str());
  }
  return *best;
}

int RunExport(const ExportOptions& o) {
  if (o.best == (o.candidate >= 0)) {
    throw InputError("export: pass exactly one of --best and --candidate N");
  }
  std::unique_ptr<Store> store = OpenExistingSqliteStore(o.db);
  const JobRecord job = store->job(o.job);
  const CandidateRecord c = Choose(*store, o);

  Json document = c.schedule;
  const EvalResult& r = c.result;
  document["provenance"] = Json{
      {"job", job.id},
      {"job_name", job.name},
      {"candidate", c.number},
      {"workload", job.workload},
      {"metrics",
       {{"psnr", Metric(r.psnr)},
        {"ssim", Metric(r.ssim)},
        {"psnr_heldout", Metric(r.psnr_heldout)},
        {"ssim_heldout", Metric(r.ssim_heldout)},
        {"speedup", Metric(r.speedup)},
        {"latency_ms", Metric(r.latency_ms)},
        {"dense_latency_ms", Metric(r.dense_latency_ms)},
        {"density", Metric(r.density)},
        {"latency_source", r.latency_source}}},
      {"device", job.device},
      {"measured_with", job.commit},
      {"toolkit", ToolkitString()},
      {"created", NowUtc()}};
  // The stored document was valid when evaluated; re-check so a damaged store cannot produce a
  // file the runtime would reject later.
  const Schedule schedule = ScheduleFromJson(document, o.db + " (job " + std::to_string(o.job) +
                                                           ", candidate " +
                                                           std::to_string(c.number) + ")");
  SaveSchedule(o.output, schedule);
  store->record_export(o.job, c.number, o.output, ScheduleToJson(schedule));

  std::cout << "wrote " << o.output << " (job " << job.id << ", candidate " << c.number
            << std::fixed << std::setprecision(2) << ": PSNR " << r.psnr << " dB, SSIM "
            << std::setprecision(4) << r.ssim << ", speedup " << std::setprecision(2)
            << r.speedup << "x)\n"
            << "check it with: sparsetune validate " << o.output << "\n";
  return 0;
}

}  // namespace

void AddExportCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write a stored candidate as a schedule v1 file (with provenance: job, candidate, metrics, "
      "device, toolkit) that the runtime executes in deployment.");
  cmd->add_option("--db", o->db, "Results store")->capture_default_str();
  cmd->add_option("--job", o->job, "Job id (see `sparsetune results jobs`)")->required();
  auto* best = cmd->add_flag("--best", o->best,
                             "Export the best feasible candidate (highest objective)");
  auto* cand = cmd->add_option("--candidate", o->candidate, "Export candidate number N");
  best->excludes(cand);
  cmd->add_option("--min-speedup", o->min_speedup,
                  "With --best: choose among COMPLETE candidates with at least this speedup "
                  "instead of the job's own constraint")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-o,--output", o->output, "Schedule file to write")->required();
  cmd->callback([o, &exit_code] { exit_code = RunExport(*o); });
}

}  // namespace sparsetune::cli
