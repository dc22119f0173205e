#include "search/evolutionary.h"

#include "search/operators.h"
#include "search/random.h"
#include "search/seeds.h"

namespace sparsetune {

EvolutionarySearch::EvolutionarySearch(const StrategyContext& context)
    : GenerationalStrategy(context, /*repair=*/true) {}

int64_t EvolutionarySearch::planned() const {
  const SearchConfig& s = config_.search;
  return s.population + s.generations * (s.population - s.elites);
}

std::vector<Proposal> EvolutionarySearch::initial() {
  std::vector<Proposal> seeds =
      SeedProposals(space_, head_advice_, static_cast<size_t>(config_.search.population), rng_);
  for (const Proposal& p : seeds) Remember(p.genome);
  return seeds;
}

std::vector<Proposal> EvolutionarySearch::breed() {
  const SearchConfig& s = config_.search;
  elites_.clear();
  for (size_t i : BestIndices(population_, static_cast<size_t>(s.elites))) {
    elites_.push_back(population_[i]);
  }
  std::vector<Proposal> children;
  if (population_.empty()) return children;
  const int64_t count = s.population - static_cast<int64_t>(elites_.size());
  for (int64_t c = 0; c < count; ++c) {
    children.push_back(MakeChild([&]() -> const Evaluated& {
      return population_[TournamentSelect(population_, s.tournament, rng_)];
    }));
  }
  return children;
}

void EvolutionarySearch::generation_done(const std::vector<Evaluated>& results) {
  population_ = elites_;
  population_.insert(population_.end(), results.begin(), results.end());
  elites_.clear();
}

}  // namespace sparsetune
