#include "search/cost_model.h"

#include <cmath>
#include <limits>

#include "search/random.h"

namespace sparsetune {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// For each head option, the option a repair move switches it to: the densest option that is
// strictly cheaper, preferring the same pattern family (a block_sparse head stays block_sparse at a
// lower keep). -1 when no option is cheaper.
std::vector<int64_t> NextSparser(const SearchSpace& space) {
  const auto& options = space.head_options();
  const auto& costs = space.option_costs();
  std::vector<int64_t> next(options.size(), -1);
  for (size_t i = 0; i < options.size(); ++i) {
    int64_t best = -1;
    bool best_same = false;
    for (size_t j = 0; j < options.size(); ++j) {
      if (!(costs[j] < costs[i])) continue;
      const bool same = options[j].at("pattern") == options[i].at("pattern");
      if (best < 0 || (same && !best_same) ||
          (same == best_same && costs[j] > costs[static_cast<size_t>(best)])) {
        best = static_cast<int64_t>(j);
        best_same = same;
      }
    }
    next[i] = best;
  }
  return next;
}

}  // namespace

CostModel::CostModel(const SearchSpace& space, double ridge)
    : space_(&space), ridge_(ridge), coefficients_(Prior()) {}

CostModel::Vector CostModel::Prior() {
  Vector p;
  p << 0.1, 0.2, 0.7, -0.1;
  return p;
}

CostModel::Vector CostModel::features(const Genome& g) const {
  const int64_t steps = space_->steps();
  const int64_t warmup = space_->warmup_of(g);
  double density = 0;
  for (int64_t option : g.heads) density += space_->option_costs()[option];
  density /= static_cast<double>(std::max<size_t>(g.heads.size(), 1));
  double budget_sum = 0, reuse_steps = 0;
  for (int64_t s = warmup; s < steps; ++s) {
    budget_sum += space_->budget_grid()[g.budgets[s]];
    if (!g.reuse.empty() && g.reuse[s] != 0) reuse_steps += 1;
  }
  const double n = static_cast<double>(steps);
  Vector f;
  f << 1.0, (warmup + budget_sum) / n, (warmup + budget_sum * density) / n, reuse_steps / n;
  return f;
}

void CostModel::add(const Genome& g, double latency_ratio) {
  if (!std::isfinite(latency_ratio) || latency_ratio <= 0) return;
  features_.push_back(features(g));
  ratios_.push_back(latency_ratio);
}

void CostModel::fit() {
  // Solves min |F theta - y|^2 + ridge |theta - prior|^2, i.e.
  // (F'F + ridge I) theta = F'y + ridge prior; positive definite for any ridge > 0.
  Eigen::Matrix<double, kFeatures, kFeatures> a =
      ridge_ * Eigen::Matrix<double, kFeatures, kFeatures>::Identity();
  Vector b = ridge_ * Prior();
  for (size_t i = 0; i < ratios_.size(); ++i) {
    a += features_[i] * features_[i].transpose();
    b += features_[i] * ratios_[i];
  }
  coefficients_ = a.ldlt().solve(b);
}

double TargetLatencyRatio(const ObjectiveConfig& objective, double dense_latency_ms) {
  double target = kInf;
  if (objective.min_speedup) target = std::min(target, 1.0 / *objective.min_speedup);
  if (objective.max_latency_ms && std::isfinite(dense_latency_ms) && dense_latency_ms > 0) {
    target = std::min(target, *objective.max_latency_ms / dense_latency_ms);
  }
  return target;
}

Genome Repair(const Genome& g, const SearchSpace& space, const CostModel& model, double target,
              std::mt19937_64& rng, int64_t* moves) {
  Genome out = g;
  int64_t made = 0;
  if (moves != nullptr) *moves = 0;
  if (!std::isfinite(target)) return out;

  const auto& grid = space.budget_grid();
  const auto& costs = space.option_costs();
  const std::vector<int64_t> next = NextSparser(space);
  const int64_t steps = space.steps();
  const int64_t warmup = space.warmup_of(out);
  const double n = static_cast<double>(steps);
  const double heads = static_cast<double>(std::max<size_t>(out.heads.size(), 1));
  const CostModel::Vector base = model.features(out);

  // The features move through two aggregates only, so every candidate move is priced in O(1).
  double budget_sum = 0;
  for (int64_t s = warmup; s < steps; ++s) budget_sum += grid[out.budgets[s]];
  double density = 0;
  for (int64_t option : out.heads) density += costs[option];
  density /= heads;
  auto predict = [&](double bsum, double dens) {
    CostModel::Vector f = base;
    f(1) = (warmup + bsum) / n;
    f(2) = (warmup + bsum * dens) / n;
    return model.predict(f);
  };

  double current = predict(budget_sum, density);
  // Each move lowers one gene by one notch, so the loop ends within the total number of notches.
  while (current > target) {
    double best = current;
    std::vector<int64_t> ties;  // >= 0: budget move at step; < 0: head move at head (-1 - index)
    auto consider = [&](double value, int64_t move) {
      const double tolerance = 1e-12 * std::max(1.0, std::abs(best));
      if (value < best - tolerance) {
        best = value;
        ties.assign(1, move);
      } else if (!ties.empty() && std::abs(value - best) <= tolerance) {
        ties.push_back(move);
      }
    };
    for (int64_t s = warmup; s < steps; ++s) {
      const int64_t i = out.budgets[s];
      if (i > 0) consider(predict(budget_sum - (grid[i] - grid[i - 1]), density), s);
    }
    for (size_t h = 0; h < out.heads.size(); ++h) {
      const int64_t to = next[out.heads[h]];
      if (to >= 0) {
        consider(predict(budget_sum, density - (costs[out.heads[h]] - costs[to]) / heads),
                 -1 - static_cast<int64_t>(h));
      }
    }
    if (ties.empty()) break;
    const int64_t move = ties[UniformIndex(rng, ties.size())];
    if (move >= 0) {
      const int64_t i = out.budgets[move];
      budget_sum -= grid[i] - grid[i - 1];
      out.budgets[move] = i - 1;
    } else {
      const size_t h = static_cast<size_t>(-1 - move);
      density -= (costs[out.heads[h]] - costs[next[out.heads[h]]]) / heads;
      out.heads[h] = next[out.heads[h]];
    }
    current = best;
    ++made;
  }
  if (moves != nullptr) *moves = made;
  return out;
}

}  // namespace sparsetune
