// Astraea's evolutionary search (papers.md section 3), generalised to every gene of the space.
// Generation 0 is the seeded population (search/seeds.h). Each later generation keeps the
// `elites` best members (feasible first, search/objective.h) without re-evaluating them and breeds
// population - elites children: two tournament winners are crossed over with probability
// crossover_rate (else the first is copied), mutated per gene with mutation_rate, normalised,
// repaired toward the constraint with the cost model and, when already proposed, re-mutated.
// The next population is the elites plus the children.
#pragma once

#include "search/generational.h"

namespace sparsetune {

class EvolutionarySearch : public GenerationalStrategy {
 public:
  explicit EvolutionarySearch(const StrategyContext& context);
  int64_t planned() const override;
  // The current population (after the last complete generation).
  const std::vector<Evaluated>& population() const { return population_; }

 protected:
  std::vector<Proposal> initial() override;
  std::vector<Proposal> breed() override;
  void generation_done(const std::vector<Evaluated>& results) override;

 private:
  std::vector<Evaluated> population_;
  std::vector<Evaluated> elites_;  // carried into the generation being bred
};

}  // namespace sparsetune
