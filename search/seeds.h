// The initial population: the baselines a user would try by hand, so generation 0 already holds
// the obvious answers and the search only has to beat them. In this order, duplicates (by hash)
// dropped, truncated to the population or padded with random genomes:
//   1. dense (the reference point; infeasible under any speedup constraint);
//   2. uniform block_sparse (RainFusion2.0) at each configured keep, budgets 1.0;
//   3. uniform Astraea budgets 0.4, 0.5, 0.7 (nearest grid value) with dense heads, when the
//      grid has budgets below 1.0;
//   4. ARM's pick per head (head_advice "arm") at the median configured density;
//   5. per-head argmin of the attention-output error (head_advice "error") over the options whose
//      cost estimate is at most the median cost of the sparse options: STA's mask search, where
//      candidates of about equal cost are compared on error alone (peers.md section 1.1);
//   6. random genomes.
#pragma once

#include <random>
#include <vector>

#include "search/space.h"
#include "search/strategy.h"

namespace sparsetune {

// Throws RunError when `head_advice` is not null and does not have the documented shape.
std::vector<Proposal> SeedProposals(const SearchSpace& space, const Json& head_advice,
                                    size_t population, std::mt19937_64& rng);

}  // namespace sparsetune
