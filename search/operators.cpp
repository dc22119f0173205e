#include "search/operators.h"

#include <algorithm>
#include <numeric>

#include "search/random.h"

namespace sparsetune {

namespace {

// A value in [0, choices) other than `current` (requires choices >= 2).
int64_t OtherValue(int64_t current, int64_t choices, std::mt19937_64& rng) {
  const int64_t v = static_cast<int64_t>(UniformIndex(rng, static_cast<uint64_t>(choices - 1)));
  return v >= current ? v + 1 : v;
}

}  // namespace

Genome RandomGenome(const SearchSpace& space, std::mt19937_64& rng) {
  auto draw = [&rng](size_t n) { return static_cast<int64_t>(UniformIndex(rng, n)); };
  Genome g;
  g.warmup = draw(space.warmup_choices().size());
  for (int64_t s = 0; s < space.steps(); ++s) g.budgets.push_back(draw(space.budget_grid().size()));
  for (int64_t h = 0; h < space.head_count(); ++h) {
    g.heads.push_back(draw(space.head_options().size()));
  }
  if (space.reuse_enabled()) {
    for (int64_t s = 0; s < space.steps(); ++s)
      g.reuse.push_back(draw(space.reuse_choices().size()));
  }
  space.Normalize(&g);
  return g;
}

std::vector<int64_t> UniformCrossover(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                      std::mt19937_64& rng) {
  std::vector<int64_t> child(a.size());
  for (size_t i = 0; i < a.size(); ++i) child[i] = (rng() & 1) ? a[i] : b[i];
  return child;
}

size_t DrawCut(size_t n, std::mt19937_64& rng) {
  return n < 2 ? n : 1 + static_cast<size_t>(UniformIndex(rng, n - 1));
}

std::vector<int64_t> OnePointCrossover(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                       size_t cut) {
  std::vector<int64_t> child(a.begin(),
                             a.begin() + static_cast<std::ptrdiff_t>(std::min(cut, a.size())));
  for (size_t i = child.size(); i < b.size(); ++i) child.push_back(b[i]);
  return child;
}

Genome Crossover(const Genome& a, const Genome& b, std::mt19937_64& rng) {
  Genome child;
  child.warmup = (rng() & 1) ? a.warmup : b.warmup;
  const size_t cut = DrawCut(a.budgets.size(), rng);
  child.budgets = OnePointCrossover(a.budgets, b.budgets, cut);
  child.reuse = OnePointCrossover(a.reuse, b.reuse, cut);
  child.heads = UniformCrossover(a.heads, b.heads, rng);
  return child;
}

Genome Mutate(const Genome& g, const SearchSpace& space, double rate, std::mt19937_64& rng) {
  Genome out = g;
  auto mutate = [&](int64_t& gene, size_t choices) {
    const bool hit = UniformReal(rng) < rate;
    if (hit && choices >= 2) gene = OtherValue(gene, static_cast<int64_t>(choices), rng);
  };
  // Ordered genes (warm-up steps, budgets, reuse thresholds): half of the hits move one notch, so
  // the search can refine a good schedule locally instead of only jumping across the grid.
  auto mutate_ordered = [&](int64_t& gene, size_t choices) {
    const bool hit = UniformReal(rng) < rate;
    if (!hit || choices < 2) return;
    if (rng() & 1) {
      gene = OtherValue(gene, static_cast<int64_t>(choices), rng);
      return;
    }
    const auto last = static_cast<int64_t>(choices) - 1;
    const bool up = gene == 0 || (gene < last && (rng() & 1));
    gene += up ? 1 : -1;
  };
  mutate_ordered(out.warmup, space.warmup_choices().size());
  for (auto& b : out.budgets) mutate_ordered(b, space.budget_grid().size());
  for (auto& h : out.heads) mutate(h, space.head_options().size());
  for (auto& r : out.reuse) mutate_ordered(r, space.reuse_choices().size());
  return out;
}

size_t TournamentSelect(const std::vector<Evaluated>& population, int64_t size,
                        std::mt19937_64& rng) {
  size_t best = UniformIndex(rng, population.size());
  for (int64_t i = 1; i < size; ++i) {
    const size_t other = UniformIndex(rng, population.size());
    if (Better(population[other].score, population[best].score)) best = other;
  }
  return best;
}

std::vector<size_t> BestIndices(const std::vector<Evaluated>& population, size_t count) {
  std::vector<size_t> order(population.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (Better(population[a].score, population[b].score)) return true;
    if (Better(population[b].score, population[a].score)) return false;
    return population[a].number < population[b].number;
  });
  order.resize(std::min(count, order.size()));
  return order;
}

}  // namespace sparsetune
