// Block-sparse flash attention forward on Hopper (sm_90a): plain C++ parameters and the launcher.
// No torch here; kernels/cuda/ops.h is the libtorch boundary that checks tensors and calls this.
//
// ---- Block CSR format (shared with the mask-prediction kernel in kernels/cuda/mask_predict.cu) ----
// Blocks are cut over LAYOUT positions 0 .. N-1 (the tensors' own row order, or the positions a
// row_index maps to rows, see BlockSparseAttnParams), in blocks of `block` tokens:
// nb = ceil(N / block) query blocks and as many key blocks; the last block of each
// is partial when N % block != 0 (its tail keys are masked, its tail query rows are not written).
// One CSR row per (batch b, head h, query block qb), rows numbered r = (b * H + h) * nb + qb:
//   row_ptr  int32 [B * H * nb + 1], row_ptr[0] == 0, non-decreasing, row_ptr[last] == nnz
//   col_idx  int32 [capacity >= nnz], the key blocks of row r at col_idx[row_ptr[r] .. row_ptr[r+1]);
//            entries past nnz are ignored (mask prediction writes into a B*H*nb*nb buffer and
//            need not shrink it, which would cost a host sync);
//            each in [0, nb), no duplicates; any order (ascending is the convention and the
//            fastest for L2, but the result does not depend on it beyond rounding).
// An empty row is allowed: its query rows get O = 0 and LSE = -inf. The kernel never reads out of
// bounds on a malformed list (it clamps row_ptr to [0, capacity] and skips columns outside
// [0, nb)), but only ValidateBlockCsr (ops.h) reports one. Both arrays live on the device of q.
// Block sizes: 64 and 128 tokens (query and key blocks are the same size). Blocks are uniform
// from token 0: mask prediction's layout blocks (video and text cut separately, mask_predict.h)
// are these only when there is no text or the video tokens fill whole blocks.
#pragma once

#include <cstdint>

namespace sparsetune::cuda {

enum class AttnDtype { kBFloat16, kFloat16 };

// One launch of the forward kernel. q/k/v/o are contiguous [batch, heads, seq_len, head_dim].
struct BlockSparseAttnParams {
  const void* q = nullptr;        // [B, H, N, D] queries, dtype
  const void* k = nullptr;        // [B, H, N, D] keys, dtype
  const void* v = nullptr;        // [B, H, N, D] values, dtype
  void* o = nullptr;              // [B, H, N, D] output, dtype
  float* lse = nullptr;           // [B, H, N] natural-log log-sum-exp of the scaled scores, float32
  // [N] layout position -> token row of q, k, v, o and lse (one permutation of [0, N) shared by
  // every batch row and head), or nullptr: the tensors are in layout order themselves. Blocks
  // are cut over layout positions; loads read and stores write the indexed rows, so the caller
  // passes tensors in its own (model) order and gets o and lse back in that order.
  const int32_t* row_index = nullptr;
  const int32_t* row_ptr = nullptr;  // [B * H * nb + 1] CSR row offsets (format above)
  const int32_t* col_idx = nullptr;  // [nnz] key-block indices (format above)
  int32_t nnz = 0;                // capacity (length) of col_idx; row_ptr values are clamped to it
  int32_t batch = 0;              // B
  int32_t heads = 0;              // H
  int32_t seq_len = 0;            // N, tokens
  int32_t head_dim = 0;           // D: 64 or 128
  int32_t block = 0;              // tokens per query/key block: 64 or 128
  float scale = 0.0f;             // softmax scale applied to q·k (usually 1/sqrt(D))
  AttnDtype dtype = AttnDtype::kBFloat16;  // element type of q/k/v/o
};

// Number of blocks of `block` tokens covering `seq_len` tokens.
inline int32_t NumBlocks(int32_t seq_len, int32_t block) { return (seq_len + block - 1) / block; }

// Launches the kernel on `stream` (a cudaStream_t; void* keeps CUDA headers out of this file).
// Returns 0 on success or the cudaError_t of the launch; the caller turns it into an exception.
// Unsupported head_dim/block values return cudaErrorInvalidValue without launching.
int LaunchBlockSparseAttention(const BlockSparseAttnParams& params, void* stream);

}  // namespace sparsetune::cuda
