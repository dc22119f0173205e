#include "search/seeds.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "core/error.h"
#include "search/operators.h"

namespace sparsetune {

namespace {

std::string Amount(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", v);
  return text;
}

// advice[key] must be a [layers][heads] array; throws RunError otherwise.
const Json& AdviceMatrix(const SearchSpace& space, const Json& advice, const char* key) {
  const Json& m = advice.at(key);
  auto bad = [key](const std::string& what) {
    return RunError(std::string("evaluator head_advice: field '") + key + "': " + what);
  };
  if (!m.is_array() || static_cast<int64_t>(m.size()) != space.layers()) {
    throw bad("must be an array of " + std::to_string(space.layers()) + " layers");
  }
  for (const Json& row : m) {
    if (!row.is_array() || static_cast<int64_t>(row.size()) != space.heads_per_layer()) {
      throw bad("every layer must have " + std::to_string(space.heads_per_layer()) + " heads");
    }
  }
  return m;
}

std::vector<std::vector<int64_t>> ArmChoices(const SearchSpace& space, const Json& advice) {
  const Json& arm = AdviceMatrix(space, advice, "arm");
  // The median of the RainFusion densities: the middle of the configured range.
  std::vector<double> densities;
  for (const Json& o : space.head_options()) {
    const std::string p = o.at("pattern");
    if (p == "spatial" || p == "temporal" || p == "textural") densities.push_back(o.at("density"));
  }
  std::sort(densities.begin(), densities.end());
  const double median = densities.empty() ? 1.0 : densities[(densities.size() - 1) / 2];
  std::vector<std::vector<int64_t>> choices;
  for (const Json& row : arm) {
    choices.emplace_back();
    for (const Json& pick : row) {
      if (!pick.is_string())
        throw RunError("evaluator head_advice: field 'arm': not a pattern name");
      const int64_t option = space.FindOption(pick.get<std::string>(), median);
      choices.back().push_back(option < 0 ? 0 : option);  // a pattern outside the space: dense
    }
  }
  return choices;
}

std::vector<std::vector<int64_t>> ArgminChoices(const SearchSpace& space, const Json& advice) {
  const Json& error = AdviceMatrix(space, advice, "error");
  const auto& costs = space.option_costs();
  std::vector<double> sparse(costs.begin() + 1, costs.end());
  std::sort(sparse.begin(), sparse.end());
  const double limit = sparse.empty() ? 1.0 : sparse[(sparse.size() - 1) / 2];
  std::vector<std::vector<int64_t>> choices;
  for (const Json& row : error) {
    choices.emplace_back();
    for (const Json& per_option : row) {
      if (!per_option.is_array() || per_option.size() != costs.size()) {
        throw RunError("evaluator head_advice: field 'error': every head needs " +
                       std::to_string(costs.size()) + " errors, one per head option");
      }
      int64_t best = 0;
      double best_error = std::numeric_limits<double>::infinity();
      for (size_t o = 0; o < costs.size(); ++o) {
        if (costs[o] > limit || !per_option[o].is_number()) continue;
        const double e = per_option[o].get<double>();
        if (e < best_error) {
          best_error = e;
          best = static_cast<int64_t>(o);
        }
      }
      choices.back().push_back(best);
    }
  }
  return choices;
}

}  // namespace

std::vector<Proposal> SeedProposals(const SearchSpace& space, const Json& head_advice,
                                    size_t population, std::mt19937_64& rng) {
  std::vector<Proposal> seeds;
  std::set<std::string> seen;
  auto add = [&](const Genome& g, const std::string& origin) {
    if (seeds.size() < population && seen.insert(space.Hash(g)).second) {
      seeds.push_back(Proposal{g, {}, origin, 0});
    }
  };
  add(space.Dense(), "seed:dense");
  for (size_t i = 0; i < space.head_options().size(); ++i) {
    const Json& o = space.head_options()[i];
    if (o.at("pattern") == "block_sparse") {
      add(space.UniformHeads(static_cast<int64_t>(i)),
          "seed:block_sparse@" + Amount(o.at("keep").get<double>()));
    }
  }
  if (space.budget_grid().size() > 1) {
    for (double b : {0.4, 0.5, 0.7}) {
      add(space.UniformBudget(b),
          "seed:budget@" + Amount(space.budget_grid()[space.NearestBudget(b)]));
    }
  }
  if (!head_advice.is_null()) {
    if (!head_advice.is_object())
      throw RunError("evaluator head_advice: must be an object or null");
    if (head_advice.contains("arm"))
      add(space.FromHeadChoices(ArmChoices(space, head_advice)), "seed:arm");
    if (head_advice.contains("error")) {
      add(space.FromHeadChoices(ArgminChoices(space, head_advice)), "seed:argmin-error");
    }
  }
  // Random padding; a duplicate draw is retried a bounded number of times, then skipped, so a
  // tiny space yields a smaller generation instead of looping.
  for (size_t tries = 0; seeds.size() < population && tries < 16 * population; ++tries) {
    add(RandomGenome(space, rng), "random");
  }
  return seeds;
}

}  // namespace sparsetune
