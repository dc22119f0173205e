// A small linear latency model over genomes, used to repair candidates that would miss the
// constraint before they are spent on a measurement (Astraea's EA constrains predicted latency
// the same way: cost linear in the number of computed tokens, papers.md section 3.1).
//
// Features of a genome, with S steps of which the first w are dense warm-up:
//   f0 = 1                                     fixed cost (MLPs, norms, sampler, launches)
//   f1 = mean over steps of budget             work linear in computed tokens (warm-up: 1)
//   f2 = mean over steps of budget x D         attention work; D = mean over heads of the
//                                              option's density estimate (warm-up: 1)
//   f3 = fraction of steps with reuse on       TimeRipple skips part of the q.k products
// Prediction: latency / dense latency = theta . f. Fit: ridge least squares pulled toward an
// analytic prior theta0 (dense = 1, attention 70% of the time), so a handful of points cannot give
// a wild model and zero points give the prior.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <random>
#include <vector>

#include "core/job_config.h"
#include "search/space.h"

namespace sparsetune {

class CostModel {
 public:
  static constexpr int kFeatures = 4;
  using Vector = Eigen::Matrix<double, kFeatures, 1>;

  // `space` must outlive the model. `ridge` weighs the pull toward the prior (in units of
  // squared residuals of one sample).
  explicit CostModel(const SearchSpace& space, double ridge = 0.05);

  // The analytic prior: 0.1 fixed + 0.2 token-linear + 0.7 attention, reuse saves 0.1.
  static Vector Prior();

  Vector features(const Genome& g) const;
  // Predicted latency / dense latency of `g`.
  double predict(const Genome& g) const { return coefficients_.dot(features(g)); }
  double predict(const Vector& f) const { return coefficients_.dot(f); }

  // Adds one measurement (latency_ms / dense_latency_ms); non-finite or non-positive ratios are
  // ignored. Call fit() to refresh the coefficients.
  void add(const Genome& g, double latency_ratio);
  void fit();
  size_t samples() const { return ratios_.size(); }
  const Vector& coefficients() const { return coefficients_; }

 private:
  const SearchSpace* space_;
  double ridge_;
  std::vector<Vector> features_;
  std::vector<double> ratios_;
  Vector coefficients_;
};

// Latency ratio (to dense) a candidate must not exceed: min(1 / min_speedup,
// max_latency_ms / dense_latency_ms); +inf when there is no constraint, or when only
// max_latency_ms is set and the dense latency is not known yet.
double TargetLatencyRatio(const ObjectiveConfig& objective, double dense_latency_ms);

// Moves `g` toward predicted ratio <= target: while the prediction misses it, applies the single
// move that lowers the prediction most - one step's budget down one grid notch, or one head to the
// next sparser option (same pattern family when there is one) - choosing uniformly among equally
// good moves with `rng`. Stops when the target is met or no move lowers the prediction. Warm-up
// steps are never touched. Returns the number of moves made through `moves` when not null.
Genome Repair(const Genome& g, const SearchSpace& space, const CostModel& model, double target,
              std::mt19937_64& rng, int64_t* moves = nullptr);

}  // namespace sparsetune
