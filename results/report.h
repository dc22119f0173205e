// What `sparsetune results` prints: aligned text tables and JSON for jobs and candidates. Kept in
// the library (not the CLI) so the formats are tested and shared by `run`'s final summary.
//
// In JSON, non-finite numbers (NaN, ±inf) are null; in tables NaN is "-" and infinities "inf".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "results/store.h"

namespace sparsetune {

// A job with what a listing needs about its candidates.
struct JobOverview {
  JobRecord job;
  int64_t complete = 0;                  // COMPLETE candidates
  int64_t failed = 0;                    // FAIL candidates
  int64_t running = 0;                   // RUNNING candidates (in flight, or killed)
  int64_t pareto_size = 0;               // candidates on the Pareto front
  std::optional<CandidateRecord> best;   // best feasible candidate, if any
  std::optional<EvalResult> baseline;    // dense baseline, if saved
};

// Reads the summary of job `id`; throws StoreError (bad input) when it does not exist.
JobOverview OverviewOfJob(const Store& store, int64_t id);

Json ToJson(const JobRecord& job);
// Every field of the candidate except the schedule document (export it to see it).
Json ToJson(const CandidateRecord& c);
Json ToJson(const JobOverview& s);

// Columns: number, generation, state, origin, psnr, ssim, speedup, latency ms, density,
// feasible, error.
std::string CandidateTable(const std::vector<CandidateRecord>& candidates);
// Columns: id, name, state, workload, objective, candidates, complete, failed, best, speedup,
// created.
std::string JobTable(const std::vector<JobOverview>& jobs);
// Several lines describing one job: provenance, counts, baseline, best feasible candidate.
std::string JobDetails(const JobOverview& s);

// Aligned plain-text table; numeric-looking cells are right-aligned. Every row has
// headers.size() cells.
std::string FormatTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);
// A number with `decimals` digits; "-" for NaN, "inf" / "-inf" for infinities.
std::string FormatNumber(double x, int decimals);

}  // namespace sparsetune
