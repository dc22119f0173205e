// TimeRipple (papers.md §4; a reconstruction, docs/runtime.md "TimeRipple"): reuse of partial
// attention scores per RoPE channel group along frames. This is the CPU oracle: it computes every
// partial product, then substitutes the reused columns and counts the multiply-adds that a kernel
// skipping them would save.
#pragma once

#include <array>
#include <vector>

#include <torch/torch.h>

#include "kernels/layout.h"

namespace sparsetune {

struct RippleOutput {
  torch::Tensor out;           // [B, H, Nq, D]
  torch::Tensor lse;           // [B, H, Nq] float32
  int64_t macs_skipped = 0;    // q·k multiply-adds replaced by reuse (computed pairs only)
};

// Per (video key token, channel group): whether its partial scores are reused from the same
// (h, w) in the previous frame. k: [N, D] model order. Returns [3, N] bool (false for text and
// frame-0 keys).
torch::Tensor RippleReuse(const Layout& layout, const torch::Tensor& k,
                          const std::array<int64_t, 3>& split, double threshold);

// Attention with reuse. q: [B, H, Nq, D] rows at model indices q_index [B, Nq]; k, v: [B, H, N, D]
// model order. masks[h]: [B, nb, nb] block mask of head h, or undefined for a dense head.
RippleOutput RippleAttention(const Layout& layout, const torch::Tensor& q,
                             const torch::Tensor& q_index, const torch::Tensor& k,
                             const torch::Tensor& v, const std::vector<torch::Tensor>& masks,
                             const std::array<int64_t, 3>& split, double threshold);

// TimeRipple as plain attention on substituted keys (the runtime's path on CUDA). A reused
// partial score s^g[i, j] := s^g[i, r(j)] is q_i^g · k'^g_{r(j)}, so the oracle's logits are exactly
// q · k'ᵀ for the keys k' in which every reused (key, group) takes its reference's channels, frame
// by frame (a chain of reuse copies from the last frame that was not reused). Any attention
// kernel (SDPA, the block-sparse kernel) then computes the oracle's result up to summation order;
// the reuse decision is RippleReuse's (float64 cosines of the original keys).
struct RippleSubstitution {
  torch::Tensor keys;   // [B, H, N, D] k's dtype and device: k with the reused groups substituted
  torch::Tensor reuse;  // [B, H, 3, N] bool: (key, group) reused (false for text and frame 0)
};
// k: [B, H, N, D] model order, any dtype and device.
RippleSubstitution RippleSubstituteKeys(const Layout& layout, const torch::Tensor& k,
                                        const std::array<int64_t, 3>& split, double threshold);

// RippleOutput::macs_skipped for `reuse` ([B, H, 3, N] from RippleSubstituteKeys): per reused
// (key, group), the computed queries allowed to attend the key times the group's width. masks[h]
// as in RippleAttention; q_block [B, Nq] int64: layout block of each computed query. One host
// sync.
int64_t RippleSkippedMacs(const Layout& layout, const torch::Tensor& reuse,
                          const std::vector<torch::Tensor>& masks, const torch::Tensor& q_block,
                          const std::array<int64_t, 3>& split);

}  // namespace sparsetune
