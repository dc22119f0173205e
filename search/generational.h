// The machinery the three strategies share: generations handed out in batches, results collected
// in proposal order, a cost model refitted on every measured latency, and "make this child
// novel" (normalise, repair toward the constraint, avoid a genome proposed before). Subclasses
// only say what generation 0 is, how to breed the next one and what to keep of a finished one.
#pragma once

#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "search/cost_model.h"
#include "search/strategy.h"

namespace sparsetune {

class GenerationalStrategy : public SearchStrategy {
 public:
  // `repair`: whether children are repaired toward the constraint with the cost model.
  GenerationalStrategy(const StrategyContext& context, bool repair);

  std::vector<Proposal> propose(size_t max_count) override;
  void notify(const std::vector<Evaluated>& done) override;
  bool finished() const override;
  bool generation_complete() const override;
  int64_t generation() const override { return generation_; }

  const CostModel& cost_model() const { return cost_; }
  // Proposals that repeat an earlier one because no novel genome was found (nearly exhausted
  // space); the job answers them from stored results.
  int64_t repeats() const { return repeats_; }

 protected:
  virtual std::vector<Proposal> initial() = 0;
  // Proposals of generation `generation()` (already advanced), from what was learned so far.
  virtual std::vector<Proposal> breed() = 0;
  // Every result of the generation just finished, in proposal order.
  virtual void generation_done(const std::vector<Evaluated>& results) = 0;

  // Normalises, repairs (when enabled) and, when the genome was proposed before in this job (or
  // earlier in this generation), re-mutates it with doubling strength a few times, then replaces
  // it by random immigrants, so the budget is not spent on results the store already has.
  // `immigrant` (optional) tells whether the result is a random immigrant.
  Genome Novel(Genome g, bool* immigrant = nullptr);
  // One child: parent a from `pick_parent`, then with probability crossover_rate a second parent
  // and crossover (else a copy of a), then per-gene mutation and Novel(). The RNG is drawn in this
  // fixed order, so strategies that share it stay reproducible for a seed.
  Proposal MakeChild(const std::function<const Evaluated&()>& pick_parent);
  // Registers a proposal's hash as seen.
  void Remember(const Genome& g) { seen_.insert(space_.Hash(g)); }
  bool Seen(const Genome& g) const { return seen_.count(space_.Hash(g)) != 0; }

  const JobConfig& config_;
  const SearchSpace& space_;
  Json head_advice_;
  std::mt19937_64 rng_;
  CostModel cost_;
  double target_ratio_;  // latency / dense latency a child must not exceed (inf: unconstrained)

 private:
  bool repair_;
  double dense_latency_ms_;
  int64_t generation_ = -1;
  std::vector<Proposal> queue_;
  size_t next_ = 0;         // next queue_ entry to hand out
  size_t outstanding_ = 0;  // proposals handed out, not yet notified
  std::vector<Evaluated> results_;
  std::set<std::string> seen_;
  int64_t repeats_ = 0;
  std::set<int64_t> modelled_;  // candidate numbers already in the cost model
};

}  // namespace sparsetune
