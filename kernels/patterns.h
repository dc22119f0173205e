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

// BlockSparseMask with the block query representatives it ranked by.
struct BlockSparseMaskResult {
  torch::Tensor mask;      // [B, nb, nb] bool
  torch::Tensor pooled_q;  // [B, nb, D] float32: each block's query representative
};

// Which code builds a block_sparse mask. The two give the same masks up to the float rounding of
// the block scores: a row can differ only where its k-th and (k+1)-th scores are that close.
enum class MaskBuild {
  kAuto,   // kLoops for float32 CPU inputs, kTorch otherwise
  kTorch,  // libtorch ops (pooling by index_add, a matmul, a stable sort): any device and dtype
  kLoops,  // plain C++ loops over the blocks: float32 CPU only. At the tiny model's shape a
           // head's ~15 small libtorch ops cost about as much as its sparse attention saved.
};

// BlockSparseMask for a query selection that may leave tokens out (Astraea), given the pooled
// queries of an earlier build of the same head (`previous` [B, nb, D] float32, or undefined).
// With `previous`, a block's representative is its mean over ALL its tokens, each left-out token
// counted at the block's previous representative: the representative then moves by 1/len of a
// token when the selection changes by one token, as the full-q mean does. Without it (the
// first build), left-out tokens are ignored as in BlockSparseMask: the mean of the few selected
// queries of a block, or its pooled key, ranks by a representative that a one-token change of
// the selection can swing, and a cached mask built so was seen to flip whole key blocks between
// float32 and bf16 runs of the same schedule.
// Throws InputError for keep outside (0, 1] and ShapeError for inconsistent shapes (every build);
// kLoops also for inputs that are not float32 on the CPU and for q_block values outside
// [0, blocks) (where the torch ops fail inside libtorch).
BlockSparseMaskResult BuildBlockSparseMask(const Layout& layout, const torch::Tensor& q,
                                           const torch::Tensor& k, const torch::Tensor& q_block,
                                           double keep, bool first_frame_sink,
                                           const torch::Tensor& previous = torch::Tensor(),
                                           MaskBuild build = MaskBuild::kAuto);

// ARM probe for one head: attention mass that spatial, temporal and textural at `density` keep on
// sampled query/key pairs (see docs/runtime.md, "auto"). q: [B, Nq, D] model-order rows whose model
// indices are `q_index` [B, Nq]; k: [B, N, D] model order.
std::array<double, 3> ArmRecall(const Layout& layout, const torch::Tensor& q,
                                const torch::Tensor& q_index, const torch::Tensor& k,
                                const std::array<torch::Tensor, 3>& masks);

// The pattern with the highest recall (ties: spatial, temporal, textural).
PatternKind ArmPick(const std::array<double, 3>& recall);

}  // namespace sparsetune
