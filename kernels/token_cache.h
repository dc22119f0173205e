// Astraea token selection and update cache (papers.md §3; docs/runtime.md "Astraea"). Per layer it
// holds the block's last residual update of every token ([B, N, C], the one cached activation per
// token) plus three per-token scalars: the head-averaged log-sum-exp of the token's last computed
// attention, the relative change Δ of its update between its two most recent computations, and the
// number of consecutive steps it was skipped.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "kernels/runtime.h"

namespace sparsetune {

class TokenCache {
 public:
  // Weight of the rotation penalty exp(n_skip): 0.05·e^3 ≈ 1 outranks any normalised
  // significance (in [0, 1]) after three skipped steps, so every token is chosen again within
  // about 4 + 1/budget steps.
  static constexpr double kPenaltyWeight = 0.05;

  TokenCache(int64_t layers, int64_t tokens, int64_t video_offset, int64_t video_tokens);

  void reset();
  // True when the layer has a full cached update for `batch` rows.
  bool ready(int64_t layer, int64_t batch) const;
  // Records the head-averaged LSE [B, Nq] of the queries at model indices q_index [B, Nq].
  void record_lse(int64_t layer, const torch::Tensor& q_index, const torch::Tensor& lse);
  // Per-token score [B, N] float64 (text tokens +inf: always selected).
  torch::Tensor scores(int64_t layer) const;
  // The ceil(budget·video) best video tokens plus all text tokens, ascending, per batch row.
  TokenSelection select(int64_t layer, double budget) const;
  // Merges the update of the selected tokens with the cache; see Runtime::complete_update.
  torch::Tensor complete(int64_t layer, const TokenSelection& selection,
                         const torch::Tensor& update);
  int64_t bytes() const;

 private:
  struct Layer {
    torch::Tensor update;  // [B, N, C] last residual update per token
    torch::Tensor lse;     // [B, N] float32 head-averaged LSE of the last computed attention
    torch::Tensor delta;   // [B, N] float32 relative change of the update, last two computations
    torch::Tensor skipped; // [B, N] int64 consecutive steps not selected
  };
  int64_t tokens_;
  int64_t video_offset_;
  int64_t video_tokens_;
  std::vector<Layer> layers_;
};

}  // namespace sparsetune
