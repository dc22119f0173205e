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
// static pattern's plan serves every step. One work item per (g, group of consecutive query
// blocks holding up to kGroupQueries queries and sharing at least kMinSharedKeys keys): the key
// spans EVERY block of the group keeps run once for all the group's queries (the first-frame sink rows are one group attending all keys,
// the sink columns one span shared by the sparse rows of a group), then each block's remaining
// spans run for that block's queries only (a Part). A span is a run of consecutive kept blocks,
// i.e. a contiguous range of layout positions (sink, text and adjacent top-k blocks merge into
// long spans). RunSparsePlan computes each item with BLAS matmuls straight on the layout-ordered
// k/v (no gathered copies of long spans) and one online softmax per query row, so shared spans,
// per-block spans and dense columns are one pass with no log-sum-exp merge.
struct SparsePlan {
  struct Item {
    int64_t g = 0;             // batch·head
    int64_t q_begin = 0;       // first entry in q_rows (the group's rows, block after block)
    int64_t q_count = 0;       // query rows of the item
    int64_t piece_begin = 0;   // first entry in pieces: spans every block of the item keeps
    int64_t piece_count = 0;   // shared key pieces of the item
    int64_t keys = 0;          // key tokens of the shared pieces (every query attends them)
    int64_t part_begin = 0;    // first entry in parts
    int64_t part_count = 0;    // blocks of the item with keys beyond the shared ones
    int64_t pairs = 0;         // q·k pairs the item computes
  };
  // The rows of one query block of an item and the key pieces only some blocks of the item keep.
  struct Part {
    int64_t q_offset = 0;      // first row within the item (0 = the item's q_begin)
    int64_t q_count = 0;       // query rows of the block
    int64_t piece_begin = 0;   // first entry in pieces
    int64_t piece_count = 0;   // key pieces of the part
    int64_t keys = 0;          // key tokens of those pieces
  };
  // Contiguous key range [begin, begin + len) in layout positions, len <= kKeyChunk.
  struct Piece {
    int64_t begin = 0;
    int64_t len = 0;
  };
  // Keys one online-softmax step covers (the score tile is [item queries x kKeyChunk]).
  static constexpr int64_t kKeyChunk = 512;
  // Queries one item may group: the shared spans' matmuls run with this many rows, the size
  // libtorch's CPU flash kernel uses for long sequences (64-row matmuls measured ~13 % slower
  // per pair than 256-row ones).
  static constexpr int64_t kGroupQueries = 256;
  // Shared key tokens a group must keep to take another block (a tile half): smaller shared
  // parts cost more matmul calls than they save.
  static constexpr int64_t kMinSharedKeys = 256;
  int64_t g_count = 0;          // G = B * heads
  int64_t nq = 0;               // query rows per g
  int64_t n = 0;                // key tokens per g
  int64_t d = 0;                // head dim the plan was built for
  int64_t pairs = 0;            // q·k pairs computed (for AttentionStats)
  int64_t max_queries = 0;      // largest q_count of an item
  std::vector<Item> items;      // by decreasing pairs: big items start first
  std::vector<int64_t> q_rows;  // query row within its g, per item
  std::vector<Part> parts;      // per-block remainders, per item
  std::vector<Piece> pieces;    // key pieces, per item (shared) and per part, ascending in each
  int64_t bytes() const;        // memory held by the plan
};

SparsePlan BuildSparsePlan(const Layout& layout, const torch::Tensor& mask,
                           const torch::Tensor& q_block, int64_t heads, int64_t head_dim);

// The matmul routine of RunSparsePlan, process-wide. kBrgemm: libtorch's oneDNN batch-reduce GEMM
// micro-kernel, operands read in place (the default where libtorch provides it). kSgemm: the BLAS
// sgemm libtorch links (MKL in the x86-64 wheels), which packs both operands per call; kept for
// libtorch builds without brgemm and to compare the two in `sparsetune bench attention`.
enum class CpuMatmul { kBrgemm, kSgemm };
// Whether this build's libtorch provides the float32 brgemm API.
bool CpuBrgemmAvailable();
CpuMatmul GetCpuMatmul();
// Throws InputError for kBrgemm where CpuBrgemmAvailable() is false.
void SetCpuMatmul(CpuMatmul matmul);
// "brgemm" / "sgemm".
const char* CpuMatmulName(CpuMatmul matmul);
// Distinct matmul shapes one thread sends to brgemm at most; later new shapes run on sgemm
// (libtorch caches each generated brgemm kernel per thread, ~21 KB, and never frees it).
constexpr int64_t kMaxBrgemmShapes = 256;
// Shapes the calling thread has sent to brgemm so far (<= kMaxBrgemmShapes).
int64_t CpuBrgemmShapesOfThisThread();

// Runs `plan` (CPU, float32). q [G, Nq, D] in q order; k, v [G, N, D] in layout order. Same
// result as BlockSparseAttention on the plan's mask. Items run in parallel over libtorch's
// intra-op threads (at::parallel_for), each thread pulling the next item; matmuls by GetCpuMatmul().
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
