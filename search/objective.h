// What "better" means for a candidate: the objective (PSNR or SSIM on the calibration samples),
// feasibility under the job's constraint (minimum speedup and/or maximum latency, both measured by
// the evaluator), and one total order used by every strategy and by the job summary:
//   feasible  >  infeasible  >  failed;
//   feasible by objective (higher first), ties by speedup (higher first);
//   infeasible by constraint violation (smaller first), ties by objective.
// An infeasible candidate therefore never beats a feasible one, whatever its quality.
#pragma once

#include "core/eval_result.h"
#include "core/job_config.h"

namespace sparsetune {

struct Score {
  bool ok = false;                      // the evaluation succeeded
  bool feasible = false;                // ok and every constraint met
  double objective = EvalResult::kNaN;  // PSNR (dB) or SSIM; NaN when !ok
  double speedup = EvalResult::kNaN;    // dense latency / latency
  double violation = 0;  // relative constraint shortfall; 0 when met, +inf when unmeasurable
};

// The configured objective of a result (NaN when the result failed).
double ObjectiveValue(const ObjectiveConfig& objective, const EvalResult& result);
// Sum of relative shortfalls: (min_speedup - speedup) / min_speedup and
// (latency - max_latency) / max_latency, each clamped at 0; +inf when a needed measurement is NaN.
double ConstraintViolation(const ObjectiveConfig& objective, const EvalResult& result);
Score ScoreOf(const ObjectiveConfig& objective, const EvalResult& result);

// True when `a` ranks strictly before `b` in the order above. NaN objectives rank lowest.
bool Better(const Score& a, const Score& b);

}  // namespace sparsetune
