#include "search/generational.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "search/operators.h"
#include "search/random.h"

namespace sparsetune {

namespace {

// Re-mutations of a child whose genome was proposed before, each at twice the previous rate (up to
// kMaxNoveltyRate), then random immigrants; only a nearly exhausted space still gives a repeat,
// which the job answers from the stored result.
constexpr int kNoveltyTries = 8;
constexpr double kMaxNoveltyRate = 0.5;
constexpr int kImmigrantTries = 16;

}  // namespace

GenerationalStrategy::GenerationalStrategy(const StrategyContext& context, bool repair)
    : config_(*context.config),
      space_(*context.space),
      head_advice_(context.head_advice),
      rng_(context.config->search.seed),
      cost_(*context.space),
      target_ratio_(TargetLatencyRatio(context.config->objective, context.dense_latency_ms)),
      repair_(repair),
      dense_latency_ms_(context.dense_latency_ms) {}

std::vector<Proposal> GenerationalStrategy::propose(size_t max_count) {
  if (next_ == queue_.size()) {
    if (outstanding_ > 0) return {};
    // Advance; a bred generation can be empty only when the space is exhausted, then skip it.
    while (next_ == queue_.size() && generation_ < config_.search.generations) {
      ++generation_;
      queue_ = generation_ == 0 ? initial() : breed();
      next_ = 0;
      results_.clear();
      for (Proposal& p : queue_) p.generation = generation_;
    }
  }
  const size_t left = queue_.size() - next_;
  const size_t n = max_count == 0 ? left : std::min(max_count, left);
  std::vector<Proposal> out(queue_.begin() + static_cast<std::ptrdiff_t>(next_),
                            queue_.begin() + static_cast<std::ptrdiff_t>(next_ + n));
  next_ += n;
  outstanding_ += n;
  return out;
}

void GenerationalStrategy::notify(const std::vector<Evaluated>& done) {
  if (done.size() > outstanding_) {
    throw RunError("search strategy: notified of " + std::to_string(done.size()) +
                   " results with only " + std::to_string(outstanding_) + " proposals out");
  }
  outstanding_ -= done.size();
  for (const Evaluated& e : done) {
    results_.push_back(e);
    // A reused result is the same measurement again: fit each candidate once.
    if (!e.result.ok || !modelled_.insert(e.number).second) continue;
    cost_.add(e.genome, e.result.latency_ms / e.result.dense_latency_ms);
    if (!std::isfinite(dense_latency_ms_) && std::isfinite(e.result.dense_latency_ms)) {
      dense_latency_ms_ = e.result.dense_latency_ms;
    }
  }
  if (generation_complete()) {
    cost_.fit();
    target_ratio_ = TargetLatencyRatio(config_.objective, dense_latency_ms_);
    generation_done(results_);
  }
}

bool GenerationalStrategy::generation_complete() const {
  return generation_ >= 0 && next_ == queue_.size() && outstanding_ == 0;
}

bool GenerationalStrategy::finished() const {
  return generation_ >= config_.search.generations && generation_complete();
}

Genome GenerationalStrategy::Novel(Genome g, bool* immigrant) {
  auto fix = [this](Genome& x) {
    space_.Normalize(&x);
    if (!repair_) return;
    Genome repaired = Repair(x, space_, cost_, target_ratio_, rng_);
    // When the cost model predicts few feasible genomes, repair pulls every child toward the
    // same fast corners: a repaired repeat measures nothing new, the unrepaired novel genome
    // does (seen in the default job on trained weights: 81 of 100 proposals reused).
    if (!Seen(repaired) || Seen(x)) x = std::move(repaired);
  };
  if (immigrant != nullptr) *immigrant = false;
  fix(g);
  double rate =
      std::max(config_.search.mutation_rate, 1.0 / static_cast<double>(space_.GeneCount()));
  for (int tries = 0; tries < kNoveltyTries && Seen(g); ++tries) {
    g = Mutate(g, space_, rate, rng_);
    fix(g);
    // Repair pulls mutants back toward the same repaired genome, so a weak mutation that failed
    // once tends to fail again: double the strength each try.
    rate = std::min(kMaxNoveltyRate, 2 * rate);
  }
  for (int tries = 0; tries < kImmigrantTries && Seen(g); ++tries) {
    g = RandomGenome(space_, rng_);
    fix(g);
    if (immigrant != nullptr) *immigrant = true;
  }
  if (Seen(g)) ++repeats_;
  Remember(g);
  return g;
}

Proposal GenerationalStrategy::MakeChild(const std::function<const Evaluated&()>& pick_parent) {
  const SearchConfig& s = config_.search;
  const Evaluated& a = pick_parent();
  Proposal child;
  if (UniformReal(rng_) < s.crossover_rate) {
    const Evaluated& b = pick_parent();
    child.genome = Crossover(a.genome, b.genome, rng_);
    child.parents = {a.number, b.number};
    child.origin = "crossover+mutation";
  } else {
    child.genome = a.genome;
    child.parents = {a.number};
    child.origin = "mutation";
  }
  bool immigrant = false;
  child.genome = Novel(Mutate(child.genome, space_, s.mutation_rate, rng_), &immigrant);
  if (immigrant) {
    child.parents.clear();
    child.origin = "immigrant";
  }
  return child;
}

}  // namespace sparsetune
