// NSGA-II (Deb et al. 2002) over (objective, speedup), both maximised, for a Pareto front of
// quality against speed instead of one best point. Constraints use Deb's constrained domination:
// a feasible candidate dominates every infeasible one, an infeasible one dominates another with a
// larger violation, and a failed one is dominated by everything that succeeded.
// Each generation breeds `population` children from binary tournaments on (rank, crowding),
// crosses, mutates and repairs them like the evolutionary search, then keeps the best
// `population` of parents + children by non-dominated rank and crowding distance.
#pragma once

#include <vector>

#include "search/generational.h"

namespace sparsetune {

// Constrained Pareto domination described above.
bool Dominates(const Score& a, const Score& b);
// Front index of each score (0 = not dominated by any other).
std::vector<int64_t> NonDominatedRanks(const std::vector<Score>& scores);
// Crowding distance of each member of `front` (indices into scores), in the order given; the two
// extremes of each objective get +inf.
std::vector<double> CrowdingDistances(const std::vector<Score>& scores,
                                      const std::vector<size_t>& front);
// Indices of the `count` survivors: whole fronts in rank order, the last one cut by crowding
// distance (larger first, ties by lower index). Sorted by (rank, -crowding, index).
std::vector<size_t> Nsga2Select(const std::vector<Score>& scores, size_t count);

class Nsga2Search : public GenerationalStrategy {
 public:
  explicit Nsga2Search(const StrategyContext& context);
  int64_t planned() const override;
  const std::vector<Evaluated>& population() const { return population_; }

 protected:
  std::vector<Proposal> initial() override;
  std::vector<Proposal> breed() override;
  void generation_done(const std::vector<Evaluated>& results) override;

 private:
  size_t BinaryTournament();
  std::vector<Evaluated> population_;
  std::vector<int64_t> rank_;     // per population_ member
  std::vector<double> crowding_;  // per population_ member
};

}  // namespace sparsetune
