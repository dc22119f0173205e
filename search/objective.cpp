#include "search/objective.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sparsetune {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Higher is better; NaN counts as the worst value so a comparison stays a strict weak order.
bool Greater(double a, double b) {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return a > b;
}

}  // namespace

double ObjectiveValue(const ObjectiveConfig& objective, const EvalResult& result) {
  if (!result.ok) return EvalResult::kNaN;
  return objective.metric == "ssim" ? result.ssim : result.psnr;
}

double ConstraintViolation(const ObjectiveConfig& objective, const EvalResult& result) {
  double v = 0;
  if (objective.min_speedup) {
    if (std::isnan(result.speedup)) return kInf;
    v += std::max(0.0, (*objective.min_speedup - result.speedup) / *objective.min_speedup);
  }
  if (objective.max_latency_ms) {
    if (std::isnan(result.latency_ms)) return kInf;
    v += std::max(0.0, (result.latency_ms - *objective.max_latency_ms) / *objective.max_latency_ms);
  }
  return v;
}

Score ScoreOf(const ObjectiveConfig& objective, const EvalResult& result) {
  Score s;
  s.ok = result.ok;
  s.objective = ObjectiveValue(objective, result);
  s.speedup = result.speedup;
  s.violation = result.ok ? ConstraintViolation(objective, result) : kInf;
  s.feasible = result.ok && s.violation == 0;
  return s;
}

bool Better(const Score& a, const Score& b) {
  if (a.ok != b.ok) return a.ok;
  if (!a.ok) return false;
  if (a.feasible != b.feasible) return a.feasible;
  if (a.feasible) {
    if (Greater(a.objective, b.objective)) return true;
    if (Greater(b.objective, a.objective)) return false;
    return Greater(a.speedup, b.speedup);
  }
  if (a.violation != b.violation) return a.violation < b.violation;
  return Greater(a.objective, b.objective);
}

}  // namespace sparsetune
