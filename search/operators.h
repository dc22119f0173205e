// Genetic operators shared by the evolutionary and NSGA-II strategies (Astraea's EA, papers.md
// section 3): random genomes, crossover (uniform over heads, one-point over per-step genes),
// per-gene mutation, tournament selection and elitism. Every draw comes from the caller's RNG.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "search/space.h"
#include "search/strategy.h"

namespace sparsetune {

// Every gene uniform over its choices, then normalised.
Genome RandomGenome(const SearchSpace& space, std::mt19937_64& rng);

// Each position from `a` or `b` with probability 1/2. Sizes must match.
std::vector<int64_t> UniformCrossover(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                      std::mt19937_64& rng);
// a[0, cut) + b[cut, n) with cut uniform in [1, n-1] (a copy of `a` when n < 2).
std::vector<int64_t> OnePointCrossover(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                       size_t cut);
size_t DrawCut(size_t n, std::mt19937_64& rng);

// Child of two parents: heads uniform, budgets and reuse one-point at one shared cut (a step),
// warm-up from either parent. Not normalised.
Genome Crossover(const Genome& a, const Genome& b, std::mt19937_64& rng);

// Each gene, with probability `rate`, changed (genes with one choice never change): a head gets a
// different option drawn uniformly; an ordered gene (warm-up, budget, reuse) half the time moves
// one notch up or down (up at the bottom, down at the top), else a uniform different value. Not
// normalised.
Genome Mutate(const Genome& g, const SearchSpace& space, double rate, std::mt19937_64& rng);

// `size` entrants drawn uniformly with replacement; returns the index of the best (Better()).
size_t TournamentSelect(const std::vector<Evaluated>& population, int64_t size,
                        std::mt19937_64& rng);

// Indices of the `count` best members (Better(), ties by lower candidate number), best first.
std::vector<size_t> BestIndices(const std::vector<Evaluated>& population, size_t count);

}  // namespace sparsetune
