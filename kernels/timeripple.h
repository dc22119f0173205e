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

}  // namespace sparsetune
