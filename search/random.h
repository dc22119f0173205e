// Draws from std::mt19937_64 without the standard distributions, whose algorithms differ between
// standard libraries: the same seed then gives the same search on every platform.
#pragma once

#include <cstdint>
#include <random>

namespace sparsetune {

// Uniform in [0, n) for n >= 1 (the modulo bias is below 2^-40 for any n a search uses).
inline uint64_t UniformIndex(std::mt19937_64& rng, uint64_t n) { return rng() % n; }

// Uniform in [0, 1) with 53 random bits.
inline double UniformReal(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace sparsetune
