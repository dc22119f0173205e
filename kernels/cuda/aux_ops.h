// libtorch boundary of the auxiliary CUDA kernels (mask prediction, permutation, Astraea token
// ops, TimeRipple). Every function checks devices, dtypes, shapes and contiguity before any launch
// and throws ShapeError naming the function and the tensor; a failed launch throws RunError. The
// kernels run on the current CUDA stream of the inputs' device.
#pragma once

#include <array>
#include <cstdint>

#include <torch/torch.h>

#include "kernels/layout.h"

namespace sparsetune::cuda {

// RainFusion2.0 mask of every (batch, head) in the block CSR of block_sparse_attn.h.
struct MaskPrediction {
  torch::Tensor row_ptr;  // [B*H*nb + 1] int32, row r = (b*H + h)*nb + query block
  torch::Tensor col_idx;  // [B*H*nb*nb] int32 capacity; the lists are the first row_ptr[-1]
                          // entries, ascending per row (no host sync to shrink it)
  torch::Tensor pooled;   // [2, B, H, nb, D] float32 block means of q (0) and k (1), layout blocks
  torch::Tensor workspace;  // uint8 scratch (row bitmaps, counts, sink flags)
  // Optional [B, H, N, D] (q's dtype): when defined, q and k in LAYOUT order, written by the
  // pooling pass (the permutation of q and k for the attention kernel at no extra read).
  torch::Tensor q_layout, k_layout;
  int64_t blocks = 0;     // nb = layout.blocks()
};

// Outputs and scratch sized for `layout` and q [B, H, N, D] (reusable across calls and steps);
// with layout_copies, also q_layout and k_layout.
MaskPrediction EmptyMaskPrediction(const Layout& layout, const torch::Tensor& q,
                                   bool layout_copies = false);

// BlockSparseMask (patterns.cpp) for every head at once, for a full q. q, k: [B, H, N, D] bf16 or
// fp16 CUDA tensors in MODEL order (the layout permutation is fused into the pooling); N must be
// layout.tokens. keep in (0, 1]. layout.order is copied to q's device when it is elsewhere (pass
// LayoutOn(layout, device) to avoid the copy).
MaskPrediction PredictBlockMask(const Layout& layout, const torch::Tensor& q,
                                const torch::Tensor& k, double keep, bool first_frame_sink);
// The same into `out` from EmptyMaskPrediction (no allocation; ShapeError when it does not fit).
void PredictBlockMaskInto(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                          double keep, bool first_frame_sink, MaskPrediction& out);

// ARM's probe (ArmRecall, patterns.cpp) of every head at once for a full q: q, k [B, H, N, D]
// bf16/fp16 CUDA in MODEL order, masks the spatial, temporal and textural block masks [nb, nb]
// (bool, any device). Returns [H, 3] float64 on the CPU: per head, the mean attention mass each
// candidate keeps over the sampled queries of every batch row (one host sync).
torch::Tensor ArmRecallHeads(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                             const std::array<torch::Tensor, 3>& masks);

// Dense [B, H, nb, nb] bool mask of a CSR (for checks and small shapes).
torch::Tensor CsrToDense(const MaskPrediction& mask, int64_t batch, int64_t heads);
// The same mask on the device, without a host sync: unpacked from the per-row bitmaps the
// prediction leaves at the start of its workspace (the runtime's path; valid until the
// workspace is reused).
torch::Tensor MaskBitsToDense(const MaskPrediction& mask, int64_t batch, int64_t heads);

// out[b, h, i, :] = x[b, h, index[i], :] for a bf16/fp16 CUDA x [B, H, N, D] (D a multiple of 8
// or any D for a slower path) and int64 index [M] on x's device, values in [0, N) (not checked:
// checking would need a host sync).
torch::Tensor PermuteRows(const torch::Tensor& x, const torch::Tensor& index);
// The same into out [B, H, M, D] (x's dtype and device, contiguous).
void PermuteRowsInto(const torch::Tensor& x, const torch::Tensor& index, torch::Tensor& out);
// Model order -> layout order (Layout::order) and back (Layout::position).
torch::Tensor ToLayoutOrder(const Layout& layout, const torch::Tensor& x);
torch::Tensor FromLayoutOrder(const Layout& layout, const torch::Tensor& x);

// Astraea: rows of the selected tokens. x [B, N, C] CUDA (any dtype), index [B, k] int64 -> [B, k, C].
torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index);
// The same into out [B, k, C] (x's dtype and device, contiguous).
void GatherTokensInto(const torch::Tensor& x, const torch::Tensor& index, torch::Tensor& out);
// cache[b, index[b, i]] = update[b, i] in place (update cast to cache's dtype: float32, bf16 or
// fp16); when delta ([B, N] float32) is defined, the relative change of each written row is
// stored in it as TokenCache::complete does.
void ScatterTokens(torch::Tensor& cache, const torch::Tensor& update, const torch::Tensor& index,
                   torch::Tensor delta = torch::Tensor());
// skipped [B, N] int64 in place: 0 for the selected tokens, +1 for the others.
void UpdateSkipped(torch::Tensor& skipped, const torch::Tensor& index);
// lse_tokens[b, q_index[b, i]] = mean over heads of lse [B, H, Nq] (float32), in place.
void RecordLse(torch::Tensor& lse_tokens, const torch::Tensor& lse, const torch::Tensor& q_index);
// TokenCache::scores: [B, N] float64 from lse, delta [B, N] float32 and skipped [B, N] int64.
torch::Tensor TokenScores(const torch::Tensor& lse, const torch::Tensor& delta,
                          const torch::Tensor& skipped, int64_t video_offset,
                          int64_t video_tokens);
// The same into out [B, N] float64.
void TokenScoresInto(const torch::Tensor& lse, const torch::Tensor& delta,
                     const torch::Tensor& skipped, int64_t video_offset, int64_t video_tokens,
                     torch::Tensor& out);

// TimeRipple at tile granularity (ripple.h), dense heads or heads with a block mask.
struct RippleResult {
  torch::Tensor out;          // [B, H, Nq, D] q's dtype
  torch::Tensor lse;          // [B, H, Nq] float32
  torch::Tensor reuse;        // [B, H, 3, F, ceil(HW/32)] uint8 tile reuse flags
  int64_t macs_skipped = 0;   // q·k multiply-adds not computed (host sync to read it)
};
// Block masks of a TimeRipple call (the oracle's `masks`; a dense head's mask is all true).
struct RippleMask {
  torch::Tensor mask;       // [B, H, nb, nb] bool on q's device, layout blocks
  torch::Tensor q_block;    // [B, Nq] int32 on q's device: layout block of each query row
  torch::Tensor key_block;  // [N] int32 on q's device: layout block of each key (model index)
};
// q [B, H, Nq, D], k, v [B, H, N, D] model order, bf16/fp16 CUDA, head_dim <= 128; split the
// (t, h, w) channel counts (sum D). With `mask`, pairs outside it drop out of the softmax and
// macs_skipped counts, per reused key, only the queries the mask lets attend it (the oracle's
// count: RippleAttention in kernels/timeripple.h).
RippleResult RippleAttention(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const std::array<int64_t, 3>& split,
                             double threshold, const RippleMask* mask = nullptr);
// The same into out.out, out.lse and out.reuse, allocated by the caller with the shapes above.
void RippleAttentionInto(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const std::array<int64_t, 3>& split,
                         double threshold, RippleResult& out, const RippleMask* mask = nullptr);

}  // namespace sparsetune::cuda
