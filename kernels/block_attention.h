// CPU block-sparse attention (libtorch reference of the CUDA kernel). Queries are grouped by
// (batch·head, query block); each group attends the key blocks its mask row keeps. Groups are
// sorted by their key-block count and processed in chunks, each padded to the chunk's largest
// count, so one batched matmul serves a whole chunk (no per-block loops over tiny ops).
#pragma once

#include <torch/torch.h>

#include "kernels/layout.h"

namespace sparsetune {

struct AttentionOutput {
  torch::Tensor out;  // [G, Nq, D] in the order of q
  torch::Tensor lse;  // [G, Nq] float32 natural-log log-sum-exp of the scaled logits per query
};

// q: [G, Nq, D] with G = B·H (batch-major); q_block: [B, Nq] int64 layout block of each query
// (shared by the heads of a batch row). k, v: [G, N, D] in LAYOUT order. mask: [G, nb, nb] bool.
// Every query's row must keep at least one key block (text columns always do).
// Sequences of at most `masked_dense_below` tokens run one dense flash call with an additive -inf
// bias expanded from the mask instead: the same result, used as a cross-check in tests. Off by
// default: libtorch's CPU flash kernel with a bias measured ~2.5x slower than without at the tiny
// model's size, slower than the chunked path.
AttentionOutput BlockSparseAttention(const Layout& layout, const torch::Tensor& q,
                                     const torch::Tensor& q_block, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& mask,
                                     int64_t heads, int64_t masked_dense_below = 0);

// Dense attention with log-sum-exp through libtorch's CPU flash kernel. q: [B, H, Nq, D];
// returns out [B, H, Nq, D] and lse [B, H, Nq].
AttentionOutput DenseAttention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v);

}  // namespace sparsetune
