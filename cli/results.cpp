// `sparsetune results jobs | show JOB | candidates JOB | pareto JOB [--db PATH] [--json]`:
// explores the results store. Tables for people, JSON (one document on stdout) for scripts; the
// formats live in results/report.h.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "results/report.h"
#include "results/store.h"

namespace sparsetune::cli {

namespace {

enum class ResultsView { kJobs, kShow, kCandidates, kPareto };

struct ResultsOptions {
  std::string db = "results/sparsetune.sqlite";  // the store to read
  int64_t job = 0;                               // job id (all views but `jobs`)
  bool json = false;                             // print JSON instead of a table
};

int RunResults(ResultsView view, const ResultsOptions& o) {
  const std::unique_ptr<Store> store = OpenExistingSqliteStore(o.db);
  switch (view) {
    case ResultsView::kJobs: {
      std::vector<JobOverview> jobs;
      for (const JobRecord& j : store->jobs()) jobs.push_back(OverviewOfJob(*store, j.id));
      if (o.json) {
        Json out = Json::array();
        for (const JobOverview& s : jobs) out.push_back(ToJson(s));
        std::cout << out.dump(2) << "\n";
      } else if (jobs.empty()) {
        std::cout << o.db << ": no jobs yet\n";
      } else {
        std::cout << JobTable(jobs);
      }
      return 0;
    }
    case ResultsView::kShow: {
      const JobOverview s = OverviewOfJob(*store, o.job);
      std::cout << (o.json ? ToJson(s).dump(2) + "\n" : JobDetails(s));
      return 0;
    }
    case ResultsView::kCandidates:
    case ResultsView::kPareto: {
      store->job(o.job);  // a missing job is an error, not an empty table
      const std::vector<CandidateRecord> list =
          view == ResultsView::kPareto ? store->pareto(o.job) : store->candidates(o.job);
      if (o.json) {
        Json out = Json::array();
        for (const CandidateRecord& c : list) out.push_back(ToJson(c));
        std::cout << out.dump(2) << "\n";
      } else if (list.empty()) {
        std::cout << "job " << o.job << ": no " << (view == ResultsView::kPareto ? "COMPLETE " : "")
                  << "candidates yet\n";
      } else {
        std::cout << CandidateTable(list);
      }
      return 0;
    }
  }
  return 0;
}

void AddView(CLI::App& parent, const char* name, const char* help, ResultsView view,
             bool takes_job, int& exit_code) {
  auto options = std::make_shared<ResultsOptions>();
  CLI::App* cmd = parent.add_subcommand(name, help);
  if (takes_job) cmd->add_option("JOB", options->job, "Job id (see `results jobs`)")->required();
  cmd->add_option("--db", options->db, "Results store (SQLite file)")->capture_default_str();
  cmd->add_flag("--json", options->json, "Print JSON instead of a table");
  cmd->callback([view, options, &exit_code] { exit_code = RunResults(view, *options); });
}

}  // namespace

void AddResultsCommand(CLI::App& app, int& exit_code) {
  CLI::App* results = app.add_subcommand(
      "results",
      "Explore the results store: jobs, one job's summary, its candidates, its Pareto front "
      "(PSNR/SSIM vs speedup). Tables by default, --json for scripts (NaN and infinities are "
      "null). Schema for sqlite3/pandas users: docs/results-store.md.");
  results->require_subcommand(1);
  AddView(*results, "jobs", "List the jobs in the store", ResultsView::kJobs, false, exit_code);
  AddView(*results, "show", "Summary of one job: provenance, counts, baseline, best feasible",
          ResultsView::kShow, true, exit_code);
  AddView(*results, "candidates", "Every candidate of a job, in evaluation order",
          ResultsView::kCandidates, true, exit_code);
  AddView(*results, "pareto",
          "The job's COMPLETE candidates not dominated in (objective, speedup), by speedup",
          ResultsView::kPareto, true, exit_code);
}

}  // namespace sparsetune::cli
