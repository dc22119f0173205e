// Block masks of the attention patterns over a Layout (docs/runtime.md, "Patterns"). A mask is a
// bool tensor [nb, nb] (static patterns) or [B, nb, nb] (block_sparse, per batch row): row = query
// block, column = key block. Text rows and columns are always allowed.
#pragma once

#include <array>

#include <torch/torch.h>

#include "kernels/layout.h"
#include "kernels/schedule.h"

namespace sparsetune {

// spatial / temporal / textural at `density` (fraction of video key blocks), [nb, nb].
torch::Tensor StaticPatternMask(const Layout& layout, PatternKind kind, double density);

// Frame radius of spatial(density): the largest r >= 0 with (2r+1)/F <= density (0 below 1/F).
int64_t SpatialRadius(int64_t frames, double density);

// RainFusion2.0 mask for one head. q, k: [B, Nq or N, D] in LAYOUT order; `q_block` [B, Nq] is the
// block of each query (undefined when q holds every token in layout order). Blocks without any
// query use their pooled key as the query representative. Returns [B, nb, nb].
torch::Tensor BlockSparseMask(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& q_block, double keep, bool first_frame_sink);

// ARM probe for one head: attention mass that spatial, temporal and textural at `density` keep on
// sampled query/key pairs (see docs/runtime.md, "auto"). q: [B, Nq, D] model-order rows whose model
// indices are `q_index` [B, Nq]; k: [B, N, D] model order.
std::array<double, 3> ArmRecall(const Layout& layout, const torch::Tensor& q,
                                const torch::Tensor& q_index, const torch::Tensor& k,
                                const std::array<torch::Tensor, 3>& masks);

// The pattern with the highest recall (ties: spatial, temporal, textural).
PatternKind ArmPick(const std::array<double, 3>& recall);

}  // namespace sparsetune
