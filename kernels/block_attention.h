// CPU block-sparse attention (libtorch reference of the CUDA kernel). Queries are grouped by
// (batch·head, query block); each group attends the key blocks its mask row keeps. Groups are
// sorted by their key-block count and processed in chunks, each padded to the chunk's largest
// count, so one batched matmul serves a whole chunk (no per-block loops over tiny ops).
#pragma once

#include <vector>

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

// The execution plan of block-sparse attention for one mask [G, nb, nb] and one query-block map
// [B, Nq] (CPU). Built once per (mask, selection) with plain loops over the mask and reused: a
// static pattern's plan serves every step. Per call it costs a handful of row gathers and flash
// calls, no per-block ops:
//   full rows    queries whose mask row keeps every block attend the unpermuted k, v directly;
//   dense cols   blocks every other row keeps (text, first-frame sink, ...) are gathered once
//                per call and attended by all other queries in one flash call;
//   sparse part  each (g, query block) attends its remaining kept blocks, gathered as exact key
//                rows; groups with equal key-token counts share one batched flash call (no
//                padded keys, so no additive mask);
// and the dense-col and sparse parts of a row are merged by their log-sum-exp.
struct SparsePlan {
  // One batched flash call over gathered rows.
  struct Chunk {
    int64_t groups = 0;    // r, (g, query block) groups in the call
    int64_t keys = 0;      // key tokens each group attends
    int64_t queries = 0;   // query rows per group (padded to the largest group)
    torch::Tensor k_rows;  // [r*keys] int64 rows of the flattened [G*N, D] keys/values
    torch::Tensor q_read;  // [r*queries] int64 rows of the flattened [G*Nq, D] queries
    torch::Tensor q_write; // [r*queries] int64 output rows; padded rows write row G*Nq (dump)
  };
  int64_t g_count = 0;     // G = B * heads
  int64_t nq = 0;          // query rows per g
  int64_t n = 0;           // key tokens per g
  int64_t pairs = 0;       // q·k pairs computed (for AttentionStats)
  int64_t full_count = 0;  // full rows per g when every g has the same number, else -1
  torch::Tensor full_rows; // [G*full_count] rows of flattened q (when full_count > 0)
  std::vector<torch::Tensor> full_rows_per_g;  // per g, when full_count == -1
  Chunk dense;             // dense-col call (groups = G, keys = dense columns); keys 0 = none
  std::vector<Chunk> chunks;  // sparse part, by key-token count
  int64_t bytes() const;   // memory held by the index tensors
};

SparsePlan BuildSparsePlan(const Layout& layout, const torch::Tensor& mask,
                           const torch::Tensor& q_block, int64_t heads, int64_t head_dim);

// Runs `plan` (CPU, float32). q [G, Nq, D] in q order; k, v [G, N, D] in layout order. Same
// result as BlockSparseAttention on the plan's mask.
AttentionOutput RunSparsePlan(const SparsePlan& plan, const torch::Tensor& q,
                              const torch::Tensor& k, const torch::Tensor& v);

// Any device: the same contract as BlockSparseAttention, computed explicitly per (G, query chunk)
// with scores, softmax and accumulation in float32 (output in q's dtype). The CUDA path for
// sparse heads: simple and obviously correct, memory bounded by the chunking, not fast.
AttentionOutput MaskedAttention(const Layout& layout, const torch::Tensor& q,
                                const torch::Tensor& q_block, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& mask, int64_t heads);

// Dense attention. q: [B, H, Nq, D]; returns out [B, H, Nq, D] and lse [B, H, Nq] (float32).
// CPU: libtorch's CPU flash kernel (lse comes for free). Other devices: out through
// torch::scaled_dot_product_attention (libtorch picks cuDNN/flash/efficient); lse, only when
// `need_lse`, from an explicit float32 chunked q·kᵀ pass (otherwise left undefined).
AttentionOutput DenseAttention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, bool need_lse = true);

}  // namespace sparsetune
