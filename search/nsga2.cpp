#include "search/nsga2.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

#include "search/operators.h"
#include "search/random.h"
#include "search/seeds.h"

namespace sparsetune {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double OrWorst(double v) { return std::isnan(v) ? -kInf : v; }

// Ranks and crowding of every member, computed together as selection and tournaments need both.
void RankAndCrowd(const std::vector<Score>& scores, std::vector<int64_t>* ranks,
                  std::vector<double>* crowding) {
  *ranks = NonDominatedRanks(scores);
  crowding->assign(scores.size(), 0.0);
  const int64_t fronts = scores.empty() ? 0 : *std::max_element(ranks->begin(), ranks->end()) + 1;
  for (int64_t f = 0; f < fronts; ++f) {
    std::vector<size_t> front;
    for (size_t i = 0; i < scores.size(); ++i) {
      if ((*ranks)[i] == f) front.push_back(i);
    }
    const std::vector<double> d = CrowdingDistances(scores, front);
    for (size_t k = 0; k < front.size(); ++k) (*crowding)[front[k]] = d[k];
  }
}

}  // namespace

bool Dominates(const Score& a, const Score& b) {
  if (a.ok != b.ok) return a.ok;
  if (!a.ok) return false;
  if (a.feasible != b.feasible) return a.feasible;
  if (!a.feasible) return a.violation < b.violation;
  const double ao = OrWorst(a.objective), bo = OrWorst(b.objective);
  const double as = OrWorst(a.speedup), bs = OrWorst(b.speedup);
  return ao >= bo && as >= bs && (ao > bo || as > bs);
}

std::vector<int64_t> NonDominatedRanks(const std::vector<Score>& scores) {
  const size_t n = scores.size();
  std::vector<std::vector<size_t>> dominated(n);  // members each one dominates
  std::vector<int64_t> count(n, 0);               // how many dominate each one
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      if (Dominates(scores[i], scores[j])) {
        dominated[i].push_back(j);
      } else if (Dominates(scores[j], scores[i])) {
        ++count[i];
      }
    }
  }
  std::vector<int64_t> rank(n, -1);
  std::vector<size_t> current;
  for (size_t i = 0; i < n; ++i) {
    if (count[i] == 0) current.push_back(i);
  }
  for (int64_t r = 0; !current.empty(); ++r) {
    std::vector<size_t> next;
    for (size_t i : current) {
      rank[i] = r;
      for (size_t j : dominated[i]) {
        if (--count[j] == 0) next.push_back(j);
      }
    }
    current = std::move(next);
  }
  return rank;
}

std::vector<double> CrowdingDistances(const std::vector<Score>& scores,
                                      const std::vector<size_t>& front) {
  std::vector<double> distance(front.size(), 0.0);
  if (front.size() <= 2) {
    std::fill(distance.begin(), distance.end(), kInf);
    return distance;
  }
  for (int objective = 0; objective < 2; ++objective) {
    auto value = [&](size_t k) {
      const Score& s = scores[front[k]];
      return OrWorst(objective == 0 ? s.objective : s.speedup);
    };
    std::vector<size_t> order(front.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return value(a) < value(b); });
    const double lo = value(order.front()), hi = value(order.back());
    distance[order.front()] = kInf;
    distance[order.back()] = kInf;
    if (!(hi > lo) || !std::isfinite(hi - lo)) continue;
    for (size_t k = 1; k + 1 < order.size(); ++k) {
      distance[order[k]] += (value(order[k + 1]) - value(order[k - 1])) / (hi - lo);
    }
  }
  return distance;
}

std::vector<size_t> Nsga2Select(const std::vector<Score>& scores, size_t count) {
  std::vector<int64_t> rank;
  std::vector<double> crowding;
  RankAndCrowd(scores, &rank, &crowding);
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (rank[a] != rank[b]) return rank[a] < rank[b];
    return crowding[a] > crowding[b];
  });
  order.resize(std::min(count, order.size()));
  return order;
}

Nsga2Search::Nsga2Search(const StrategyContext& context)
    : GenerationalStrategy(context, /*repair=*/true) {}

int64_t Nsga2Search::planned() const {
  return config_.search.population * (config_.search.generations + 1);
}

std::vector<Proposal> Nsga2Search::initial() {
  std::vector<Proposal> seeds =
      SeedProposals(space_, head_advice_, static_cast<size_t>(config_.search.population), rng_);
  for (const Proposal& p : seeds) Remember(p.genome);
  return seeds;
}

size_t Nsga2Search::BinaryTournament() {
  const size_t a = UniformIndex(rng_, population_.size());
  const size_t b = UniformIndex(rng_, population_.size());
  if (rank_[a] != rank_[b]) return rank_[a] < rank_[b] ? a : b;
  return crowding_[b] > crowding_[a] ? b : a;
}

std::vector<Proposal> Nsga2Search::breed() {
  std::vector<Proposal> children;
  if (population_.empty()) return children;
  const SearchConfig& s = config_.search;
  for (int64_t c = 0; c < s.population; ++c) {
    children.push_back(
        MakeChild([&]() -> const Evaluated& { return population_[BinaryTournament()]; }));
  }
  return children;
}

void Nsga2Search::generation_done(const std::vector<Evaluated>& results) {
  // Parents + children; a child that reused a stored result is the same candidate as a parent,
  // and keeping it twice would let one point crowd out a neighbour.
  std::vector<Evaluated> merged;
  std::set<int64_t> numbers;
  for (const std::vector<Evaluated>* group : {&std::as_const(population_), &results}) {
    for (const Evaluated& e : *group) {
      if (numbers.insert(e.number).second) merged.push_back(e);
    }
  }
  std::vector<Score> scores;
  for (const Evaluated& e : merged) scores.push_back(e.score);
  std::vector<Evaluated> next;
  for (size_t i : Nsga2Select(scores, static_cast<size_t>(config_.search.population))) {
    next.push_back(merged[i]);
  }
  population_ = std::move(next);
  scores.clear();
  for (const Evaluated& e : population_) scores.push_back(e.score);
  RankAndCrowd(scores, &rank_, &crowding_);
}

}  // namespace sparsetune
