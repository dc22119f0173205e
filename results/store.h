// The results store: every job and every evaluated candidate, after Optuna's storage model.
// Implementations: SQLite on disk or ":memory:" (results/sqlite_store.cpp) and a plain in-memory
// store for tests (results/memory_store.cpp); one contract test suite runs against all three.
//
// Rules every implementation keeps:
//  - each call that writes is one transaction, committed before it returns (a SIGKILL loses at
//    most the call in flight);
//  - a finished candidate (COMPLETE or FAIL) is never modified;
//  - candidate numbers are 0, 1, 2, ... within a job, in the order start_candidate was called.
// Schema for users of sqlite3 / pandas: docs/results-store.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/eval_result.h"
#include "core/json_reader.h"

namespace sparsetune {

enum class CandidateState { kRunning, kComplete, kFail };
const char* ToString(CandidateState s);  // "RUNNING" | "COMPLETE" | "FAIL"

struct JobRecord {
  int64_t id = 0;             // assigned by the store
  std::string name;           // job name from the config
  Json config;                // the job config as written
  std::string workload;       // e.g. "tiny-vdit/cpu-tiny"
  std::string device;         // device name the job measured on
  std::string commit;         // toolkit version+commit that ran it
  std::string created;        // ISO-8601 UTC, assigned by the store
  std::string state = "RUNNING";  // "RUNNING" | "COMPLETE" | "INTERRUPTED"
  std::string objective;      // "psnr" | "ssim"
  Json constraint = Json::object();  // {"min_speedup": x} and/or {"max_latency_ms": y}
};

struct CandidateRecord {
  int64_t job_id = 0;
  int64_t number = 0;         // 0-based within the job
  int64_t generation = 0;     // 0 = seeded initial population
  CandidateState state = CandidateState::kRunning;
  Json genome;                // the strategy's genome (JSON)
  std::string genome_hash;    // hex hash of the canonical genome; unique per job among COMPLETE
  std::vector<int64_t> parents;  // candidate numbers of the parents
  Json schedule;              // the schedule v1 document evaluated
  std::string origin;         // "seed:dense", "seed:block_sparse@0.2", "mutation", ...
  std::string started;        // ISO-8601 UTC
  std::string completed;      // ISO-8601 UTC, empty while RUNNING
  EvalResult result;          // valid when COMPLETE or FAIL
  double objective = EvalResult::kNaN;  // objective value (PSNR dB or SSIM); NaN on FAIL
  bool feasible = false;      // met the job's constraint
};

class Store {
 public:
  virtual ~Store() = default;

  virtual int64_t create_job(const JobRecord& job) = 0;  // returns the new id
  // Throws StoreError (bad input) when the job does not exist.
  virtual JobRecord job(int64_t id) const = 0;
  virtual std::vector<JobRecord> jobs() const = 0;
  virtual void set_job_state(int64_t id, const std::string& state) = 0;

  // Adds a RUNNING candidate and returns its number.
  virtual int64_t start_candidate(int64_t job_id, int64_t generation, const Json& genome,
                                  const std::string& genome_hash,
                                  const std::vector<int64_t>& parents, const Json& schedule,
                                  const std::string& origin) = 0;
  // Finishes a RUNNING candidate: COMPLETE when result.ok, else FAIL with result.error. Stores the
  // metrics, the per-kernel breakdown and the objective/feasibility the search computed.
  // Throws StoreError when the candidate is not RUNNING.
  virtual void finish_candidate(int64_t job_id, int64_t number, const EvalResult& result,
                                double objective, bool feasible) = 0;
  // Marks every RUNNING candidate of the job FAIL with `reason` (resume after a kill); returns
  // how many were marked.
  virtual int64_t fail_running(int64_t job_id, const std::string& reason) = 0;

  virtual std::vector<CandidateRecord> candidates(int64_t job_id) const = 0;
  virtual std::optional<CandidateRecord> candidate(int64_t job_id, int64_t number) const = 0;
  // The COMPLETE candidate with this genome hash, if any.
  virtual std::optional<CandidateRecord> find_complete(int64_t job_id,
                                                       const std::string& genome_hash) const = 0;

  // Dense baseline per job (latency, device) for reporting.
  virtual void save_baseline(int64_t job_id, const EvalResult& dense) = 0;
  virtual std::optional<EvalResult> baseline(int64_t job_id) const = 0;

  // Adds the held-out quality of a COMPLETE candidate, measured after the search (held-out samples
  // are never optimised on, so they are scored once, for the candidates a user looks at). Only
  // the psnr_heldout/ssim_heldout values change; the candidate row itself stays as finished.
  // Throws StoreError when the candidate is not COMPLETE.
  virtual void record_heldout(int64_t job_id, int64_t number, double psnr_heldout,
                              double ssim_heldout) = 0;

  // Records that candidate `number` was exported to `path`.
  virtual void record_export(int64_t job_id, int64_t number, const std::string& path,
                             const Json& schedule) = 0;

  // The job's Pareto front and best feasible candidate, as defined by ParetoFront / BestFeasible
  // below. The SQLite store answers from its SQL views `pareto` and `best_feasible` (the contract
  // tests check both agree); the defaults compute them from candidates(job_id). Both throw
  // StoreError (bad input) when the job does not exist.
  virtual std::vector<CandidateRecord> pareto(int64_t job_id) const;
  virtual std::optional<CandidateRecord> best_feasible(int64_t job_id) const;
};

// The schema version this build writes and reads (table `schema_version`).
constexpr int64_t kSchemaVersion = 1;

// Best feasible COMPLETE candidate (highest objective; ties: higher speedup, then lower number).
// Candidates whose objective is NaN are skipped; a NaN speedup ranks below every number.
std::optional<CandidateRecord> BestFeasible(const std::vector<CandidateRecord>& candidates);
// COMPLETE candidates not dominated in (objective, speedup), both maximized, sorted by speedup
// ascending (ties: number). Candidates with a NaN objective or speedup take no part; candidates
// equal in both are all kept.
std::vector<CandidateRecord> ParetoFront(const std::vector<CandidateRecord>& candidates);

// Opens (creating if needed) a SQLite store; ":memory:" for an in-memory database. Throws
// StoreError: bad input (exit 2) for an unwritable path, a file that is not a sparsetune store or
// a store written by a newer schema version.
std::unique_ptr<Store> OpenSqliteStore(const std::filesystem::path& path);
// Opens an existing SQLite store (never creates one; writes stay possible). Throws StoreError
// (bad input) when the file is missing or is not a sparsetune store.
std::unique_ptr<Store> OpenExistingSqliteStore(const std::filesystem::path& path);
std::unique_ptr<Store> MakeMemoryStore();

}  // namespace sparsetune
