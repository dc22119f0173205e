#include "results/store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>

#include "results/store_util.h"

namespace sparsetune {

const char* ToString(CandidateState s) {
  switch (s) {
    case CandidateState::kRunning:
      return "RUNNING";
    case CandidateState::kComplete:
      return "COMPLETE";
    case CandidateState::kFail:
      return "FAIL";
  }
  return "UNKNOWN";
}

namespace {

// True when `a` is at least as good as `b` in (objective, speedup) and better in one of them.
bool Dominates(const CandidateRecord& a, const CandidateRecord& b) {
  const double ao = a.objective, bo = b.objective;
  const double as = a.result.speedup, bs = b.result.speedup;
  return ao >= bo && as >= bs && (ao > bo || as > bs);
}

bool OnFront(const CandidateRecord& c) {
  return c.state == CandidateState::kComplete && !std::isnan(c.objective) &&
         !std::isnan(c.result.speedup);
}

}  // namespace

std::optional<CandidateRecord> BestFeasible(const std::vector<CandidateRecord>& candidates) {
  const CandidateRecord* best = nullptr;
  for (const CandidateRecord& c : candidates) {
    if (c.state != CandidateState::kComplete || !c.feasible || std::isnan(c.objective)) continue;
    if (best == nullptr) {
      best = &c;
      continue;
    }
    if (c.objective != best->objective) {
      if (c.objective > best->objective) best = &c;
      continue;
    }
    // Same objective: a number beats NaN, then the higher speedup, then the lower number.
    const double cs = c.result.speedup, bs = best->result.speedup;
    const bool c_nan = std::isnan(cs), b_nan = std::isnan(bs);
    if (c_nan != b_nan) {
      if (b_nan) best = &c;
      continue;
    }
    if (!c_nan && cs != bs) {
      if (cs > bs) best = &c;
      continue;
    }
    if (c.number < best->number) best = &c;
  }
  if (best == nullptr) return std::nullopt;
  return *best;
}

std::vector<CandidateRecord> ParetoFront(const std::vector<CandidateRecord>& candidates) {
  std::vector<CandidateRecord> front;
  for (const CandidateRecord& c : candidates) {
    if (!OnFront(c)) continue;
    bool dominated = false;
    for (const CandidateRecord& other : candidates) {
      if (OnFront(other) && Dominates(other, c)) {
        dominated = true;
        break;
      }
    }
    if (!dominated) front.push_back(c);
  }
  std::sort(front.begin(), front.end(), [](const CandidateRecord& a, const CandidateRecord& b) {
    if (a.result.speedup != b.result.speedup) return a.result.speedup < b.result.speedup;
    return a.number < b.number;
  });
  return front;
}

std::vector<CandidateRecord> Store::pareto(int64_t job_id) const {
  return ParetoFront(candidates(job_id));
}

std::optional<CandidateRecord> Store::best_feasible(int64_t job_id) const {
  return BestFeasible(candidates(job_id));
}

namespace store_util {

std::string NowUtc() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                          now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[80];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(millis));
  return text;
}

const std::vector<MetricField>& MetricFields() {
  static const std::vector<MetricField> fields = {
      {"psnr", &EvalResult::psnr},
      {"ssim", &EvalResult::ssim},
      {"psnr_heldout", &EvalResult::psnr_heldout},
      {"ssim_heldout", &EvalResult::ssim_heldout},
      {"latency_ms", &EvalResult::latency_ms},
      {"dense_latency_ms", &EvalResult::dense_latency_ms},
      {"speedup", &EvalResult::speedup},
      {"density", &EvalResult::density},
      {"token_density", &EvalResult::token_density},
      {"latency_spread", &EvalResult::latency_spread},
  };
  return fields;
}

CandidateState ParseCandidateState(const std::string& text, const std::string& source) {
  if (text == "RUNNING") return CandidateState::kRunning;
  if (text == "COMPLETE") return CandidateState::kComplete;
  if (text == "FAIL") return CandidateState::kFail;
  throw StoreError(source + ": unknown candidate state '" + text + "'", true);
}

void CheckJobState(const std::string& state, const std::string& source) {
  if (state != "RUNNING" && state != "COMPLETE" && state != "INTERRUPTED") {
    throw StoreError(source + ": job state must be RUNNING, COMPLETE or INTERRUPTED (got '" +
                         state + "')",
                     false);
  }
}

StoreError NoJobError(const std::string& source, int64_t job_id) {
  return StoreError(source + ": no job " + std::to_string(job_id) +
                        " (`sparsetune results jobs` lists them)",
                    true);
}

StoreError NoCandidateError(const std::string& source, int64_t job_id, int64_t number) {
  return StoreError(
      source + ": job " + std::to_string(job_id) + " has no candidate " + std::to_string(number),
      true);
}

StoreError NotRunningError(const std::string& source, int64_t job_id, int64_t number,
                           CandidateState state) {
  return StoreError(source + ": candidate " + std::to_string(number) + " of job " +
                        std::to_string(job_id) + " is " + ToString(state) +
                        ", not RUNNING; finished candidates are never modified",
                    false);
}

}  // namespace store_util

}  // namespace sparsetune
