// Helpers shared by the store implementations (private to results/), so that the SQLite and the
// in-memory store agree on timestamps, metric keys and error messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/eval_result.h"
#include "results/store.h"

namespace sparsetune::store_util {

// Now as ISO-8601 UTC with milliseconds, e.g. "2026-11-26T23:17:51.123Z".
std::string NowUtc();

// One EvalResult metric stored as a row of candidate_values.
struct MetricField {
  const char* key;            // candidate_values.key
  double EvalResult::*field;  // where it lives in EvalResult
};
// The ten metrics, in the order of EvalResult's declaration.
const std::vector<MetricField>& MetricFields();

// "RUNNING" | "COMPLETE" | "FAIL" back to the enum; StoreError for anything else.
CandidateState ParseCandidateState(const std::string& text, const std::string& source);
// Throws StoreError unless `state` is a job state ("RUNNING" | "COMPLETE" | "INTERRUPTED").
void CheckJobState(const std::string& state, const std::string& source);

// Bad-input errors shared by every backend; `source` is the database path or "memory store".
StoreError NoJobError(const std::string& source, int64_t job_id);
StoreError NoCandidateError(const std::string& source, int64_t job_id, int64_t number);
StoreError NotRunningError(const std::string& source, int64_t job_id, int64_t number,
                           CandidateState state);

}  // namespace sparsetune::store_util
