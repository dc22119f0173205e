#include "search/random_search.h"

#include "search/operators.h"

namespace sparsetune {

namespace {

constexpr int kDrawTries = 8;

}  // namespace

RandomSearch::RandomSearch(const StrategyContext& context)
    : GenerationalStrategy(context, /*repair=*/false) {}

int64_t RandomSearch::planned() const {
  return config_.search.population * (config_.search.generations + 1);
}

std::vector<Proposal> RandomSearch::Draw() {
  std::vector<Proposal> out;
  for (int64_t i = 0; i < config_.search.population; ++i) {
    // A repeat draw is retried a few times; in a tiny space it is proposed anyway and the job
    // loop reuses the stored result.
    Genome g = RandomGenome(space_, rng_);
    for (int t = 0; t < kDrawTries && Seen(g); ++t) g = RandomGenome(space_, rng_);
    Remember(g);
    out.push_back(Proposal{g, {}, "random", 0});
  }
  return out;
}

}  // namespace sparsetune
