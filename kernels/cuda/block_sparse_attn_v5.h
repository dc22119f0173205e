// v5 of the block-sparse attention forward (kernels/cuda/block_sparse_attn_v5.cu, NOTES.md): the
// wgmma kernel of v4 with the softmax of each key chunk overlapped with the tensor cores inside the
// warpgroup, and K/V loads split so that two or three stages stay in flight. Selected with
// SPARSETUNE_ATTN_TILE=4 until the device shows it correct and faster than v4; the dispatcher in
// block_sparse_attn.cu tries it first and runs v4 when it declines (unsupported sizes).
#pragma once

#include "kernels/cuda/block_sparse_attn.h"

namespace sparsetune::cuda {

// Launches v5 when SPARSETUNE_ATTN_TILE=4 and the call is one it handles (head dim 64/128, block
// 64/128; with or without a row index); then stores the launch's cudaError_t (0 on success) in *status
// and returns true. Returns false without launching otherwise, and the caller runs another kernel.
// SPARSETUNE_ATTN_V5_STAGES=2 or 3 forces the K/V pipeline depth (default: 3 where two CTAs still
// fit on an SM, else 2); both environment variables are read once per process.
bool TryLaunchBlockSparseAttentionV5(const BlockSparseAttnParams& params, void* stream, int* status);

}  // namespace sparsetune::cuda
