// SearchStrategy: the "propose, then learn from results" interface every search implements
// (after TVM MetaSchedule's SearchStrategy). The job loop (search/job.h) asks for a batch with
// propose(), has the batch evaluated (possibly in parallel, elsewhere), and hands every result back
// through notify() in proposal order. A strategy never evaluates anything itself, never looks at
// the clock and draws every random number from one std::mt19937_64 seeded by SearchConfig.seed,
// so the same seed and the same results give the same proposals (what resume relies on).
//
// Contract:
//  - propose(n) returns at most n proposals of the current generation; it returns an empty list
//    only when finished() or when every proposal of the generation is out and awaiting notify();
//  - notify() receives every proposal exactly once, in the order proposed (a batch at a time);
//  - generation_complete() is true once every proposal of the current generation was notified.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/eval_result.h"
#include "core/job_config.h"
#include "search/objective.h"
#include "search/space.h"

namespace sparsetune {

struct Proposal {
  Genome genome;                 // normalised genome to evaluate
  std::vector<int64_t> parents;  // candidate numbers of its parents (empty for seeds)
  std::string origin;            // "seed:dense", "crossover+mutation", "random", ...
  int64_t generation = 0;        // 0 = seeded initial population
};

struct Evaluated {
  Genome genome;
  int64_t number = -1;  // candidate number in the store (a reused result keeps its first number)
  EvalResult result;
  Score score;  // objective, feasibility and violation computed by the job loop
};

class SearchStrategy {
 public:
  virtual ~SearchStrategy() = default;
  virtual std::vector<Proposal> propose(size_t max_count) = 0;
  virtual void notify(const std::vector<Evaluated>& done) = 0;
  virtual bool finished() const = 0;
  virtual bool generation_complete() const = 0;
  virtual int64_t generation() const = 0;  // generation of the proposals handed out last
  virtual int64_t planned() const = 0;     // candidates the strategy will propose in total
};

// What a strategy needs besides the config.
struct StrategyContext {
  const JobConfig* config = nullptr;           // search, objective and space settings
  const SearchSpace* space = nullptr;          // must outlive the strategy
  Json head_advice = nullptr;                  // CandidateEvaluator::head_advice(), null when none
  double dense_latency_ms = EvalResult::kNaN;  // to turn max_latency_ms into a latency ratio
};

// "evolutionary" | "nsga2" | "random" from config->search.strategy; InputError otherwise.
std::unique_ptr<SearchStrategy> MakeStrategy(const StrategyContext& context);

}  // namespace sparsetune
