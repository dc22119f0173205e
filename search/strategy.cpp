#include "search/strategy.h"

#include "core/error.h"
#include "search/evolutionary.h"
#include "search/nsga2.h"
#include "search/random_search.h"

namespace sparsetune {

std::unique_ptr<SearchStrategy> MakeStrategy(const StrategyContext& context) {
  if (context.config == nullptr || context.space == nullptr) {
    throw RunError("search strategy: context needs a config and a search space");
  }
  const std::string& name = context.config->search.strategy;
  if (name == "evolutionary") return std::make_unique<EvolutionarySearch>(context);
  if (name == "nsga2") return std::make_unique<Nsga2Search>(context);
  if (name == "random") return std::make_unique<RandomSearch>(context);
  throw InputError(context.config->source.string() +
                   ": field 'search.strategy': unknown strategy \"" + name +
                   "\" (expected evolutionary, nsga2 or random)");
}

}  // namespace sparsetune
