// libtorch boundary of the CUDA block-sparse attention kernel (kernels/cuda/block_sparse_attn.h).
// Compiles everywhere: in a build without CUDA the functions still check their inputs (so bad
// inputs get the same errors) and then throw RunError. The block CSR format is documented in
// block_sparse_attn.h.
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include "kernels/block_attention.h"

namespace sparsetune::cuda {

// Per-(batch, head, query block) lists of key blocks (format: kernels/cuda/block_sparse_attn.h).
struct BlockCsr {
  torch::Tensor row_ptr;  // int32 [B * H * nb + 1] on q's device, nb = ceil(N / block)
  torch::Tensor col_idx;  // int32 [nnz] on q's device, key-block indices per row
  int64_t block = 128;    // tokens per query and key block: 64 or 128
};

// True when this build contains the CUDA kernels (SPARSETUNE_CUDA found nvcc).
bool CudaKernelsBuilt();

// Block-sparse attention: softmax(scale · q·k^T restricted to the CSR's blocks) · v.
// q, k, v: [B, H, N, D] bfloat16 or float16 (all one dtype), contiguous, on one CUDA device,
// D = 64 or 128. Returns out [B, H, N, D] (dtype of q) and lse [B, H, N] float32 (natural log of
// the row's sum of exp(scale · q·k) over kept keys; -inf and out = 0 for a row with no blocks).
// Runs on the current stream of q's device; no host sync. Throws ShapeError (a tensor has the
// wrong rank, shape, dtype, layout or device; the CSR has the wrong size or dtype), InputError
// (block not 64/128, scale not finite and positive), RunError (launch failure, or no CUDA in this
// build). `validate` also checks the CSR's contents (ValidateBlockCsr; one device->host copy).
// `row_index` (optional): int32 [N] on q's device, a permutation of [0, N) mapping each layout
// position to its token row. The CSR's blocks are then cut over layout positions while q, k, v,
// out and lse stay in token (model) order: the kernel gathers and scatters rows itself instead of
// the caller permuting copies. Its values are checked (range, no repeats) only with `validate`;
// otherwise the caller guarantees them (an out-of-range entry is an out-of-bounds access).
AttentionOutput BlockSparseAttentionCuda(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v, const BlockCsr& csr,
                                         double scale, bool validate = false,
                                         const torch::Tensor& row_index = torch::Tensor());

// The same into caller-owned outputs: out like q, lse float32 [B, H, N], both contiguous on q's
// device (tests poison them first; the runtime can reuse buffers). ShapeError when they do not fit.
void BlockSparseAttentionCudaOut(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, const BlockCsr& csr, double scale,
                                 torch::Tensor& out, torch::Tensor& lse, bool validate = false,
                                 const torch::Tensor& row_index = torch::Tensor());

// Dense attention through the same kernel (every row keeps every block): the "density 1" row.
AttentionOutput DenseAttentionCuda(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& v, double scale, int64_t block = 128);

// The CSR keeping every block of every row, on `device`.
BlockCsr DenseBlockCsr(int64_t batch, int64_t heads, int64_t seq_len, int64_t block,
                       const torch::Device& device);

// The CSR of a block mask: mask bool [B, H, nb, nb] (true = key block kept), on any device; the
// CSR is built on the mask's device with ascending columns per row. One host sync (nonzero).
BlockCsr BlockCsrFromMask(const torch::Tensor& mask, int64_t block);

// Checks the CSR's contents for [batch, heads, seq_len]: row_ptr starts at 0, never decreases and
// ends within col_idx (entries past its end are spare capacity); every listed column is in
// [0, nb) and no row repeats one. ShapeError naming the first bad
// row otherwise. Copies both arrays to the host.
void ValidateBlockCsr(const BlockCsr& csr, int64_t batch, int64_t heads, int64_t seq_len);

}  // namespace sparsetune::cuda
