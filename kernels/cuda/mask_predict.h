// RainFusion2.0 mask prediction on the GPU (issue #8 item 2): the layout permutation fused with
// block-mean pooling of q and k, block scores, per-row top-k at the keep ratio with the CPU's tie
// rule, first-frame sink and text rows/columns forced, and the block CSR of block_sparse_attn.h.
// It reproduces BlockSparseMask (kernels/patterns.cpp) for a full q (every token a query).
// Also the row permutation of [B, H, N, D] tensors (layout order and back).
//
// Blocks are the Layout's (kernels/layout.h): in layout order [video permuted | text], the video
// part and the text part are cut separately into blocks of `block_size`, so the last video block
// may be partial and the text blocks follow it. Block b < video_blocks starts at b * block_size;
// text block t starts at video_tokens + t * block_size. When text_tokens == 0 or video_tokens is a
// multiple of block_size these are exactly the uniform blocks of block_sparse_attn.h.
//
// Plain C++ parameters and raw device pointers; aux_ops.h is the libtorch boundary.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sparsetune::cuda {

// Element type of the half-precision inputs (q, k, v and the permuted tensors).
enum class HalfType { kBFloat16, kFloat16 };

struct MaskPredictParams {
  const void* q = nullptr;        // [B, H, N, D] queries in MODEL order, dtype
  const void* k = nullptr;        // [B, H, N, D] keys in MODEL order, dtype
  const int64_t* order = nullptr; // [N] layout position -> model index (Layout::order)
  int32_t batch = 0;              // B
  int32_t heads = 0;              // H
  int32_t tokens = 0;             // N = video_tokens + text_tokens
  int32_t head_dim = 0;           // D: a multiple of 8, at most 256
  int32_t video_tokens = 0;       // F*H*W tokens of the video part
  int32_t video_offset = 0;       // model index of the first video token (text front: text count)
  int32_t frame_tokens = 0;       // H*W tokens of one frame (first-frame sink test)
  int32_t block_size = 0;         // tokens per block
  int32_t keep_n = 0;             // video key blocks kept per row by top-k (host: ceil(keep*nv))
  bool first_frame_sink = true;   // force rows/columns of blocks holding first-frame tokens
  HalfType dtype = HalfType::kBFloat16;  // element type of q and k
  // Outputs (device memory, sizes from MaskPredictSizes).
  float* pooled = nullptr;        // [2, B, H, nb, D] float32 block means of q (0) and k (1)
  int32_t* row_ptr = nullptr;     // [B*H*nb + 1] CSR row offsets (block_sparse_attn.h format)
  int32_t* col_idx = nullptr;     // [B*H*nb*nb] capacity; the first row_ptr[last] are the lists
  void* workspace = nullptr;      // scratch of MaskPredictSizes::workspace_bytes
  // Optional [B, H, N, D] outputs (dtype): q and k in LAYOUT order, written by the pooling pass
  // from the rows it reads anyway, which saves the separate permutation of q and k.
  void* q_layout = nullptr;
  void* k_layout = nullptr;
};

// Sizes the caller allocates for one MaskPredictParams.
struct MaskPredictSizes {
  int64_t blocks = 0;             // nb = video blocks + text blocks
  int64_t video_blocks = 0;       // ceil(video_tokens / block_size)
  int64_t rows = 0;               // B*H*nb CSR rows
  int64_t pooled_floats = 0;      // 2*B*H*nb*D
  int64_t col_capacity = 0;       // B*H*nb*nb
  int64_t workspace_bytes = 0;    // row bitmaps, counts and sink flags
};

MaskPredictSizes MaskPredictSizesFor(int32_t batch, int32_t heads, int32_t video_tokens,
                                     int32_t text_tokens, int32_t head_dim, int32_t block_size);

// Launches pooling, scoring/top-k, the row-offset scan and the column compaction on `stream`
// (a cudaStream_t). Returns 0 or the cudaError_t of a failed launch; cudaErrorInvalidValue for an
// unsupported head_dim or more than kMaxMaskBlocks blocks.
int LaunchMaskPredict(const MaskPredictParams& params, void* stream);

// Most blocks per row the top-k sort supports (the row's scores are sorted in shared memory).
constexpr int64_t kMaxMaskBlocks = 16384;

// out[b, h, i, :] = in[b, h, index[i], :] for contiguous [B, H, rows_in, D] -> [B, H, rows_out, D]
// half-precision tensors; index [rows_out] int64 in [0, rows_in). With Layout::order it puts
// model order into layout order; with Layout::position it puts layout order back.
int LaunchPermuteRows(const void* in, void* out, const int64_t* index, int64_t batch_heads,
                      int64_t rows_in, int64_t rows_out, int64_t head_dim, void* stream);

// ARM's probes for `auto` heads (ArmRecall in kernels/patterns.cpp): softmax of sampled queries
// over sampled keys, and the attention mass each of three candidate block masks keeps.
struct ArmProbeParams {
  const void* q = nullptr;           // [B, H, N, D] queries, MODEL order, dtype
  const void* k = nullptr;           // [B, H, N, D] keys, MODEL order, dtype
  int32_t batch = 0;                 // B
  int32_t heads = 0;                 // H
  int32_t tokens = 0;                // N
  int32_t head_dim = 0;              // D: a multiple of 4, at most 256
  HalfType dtype = HalfType::kBFloat16;  // element type of q and k
  const int64_t* q_rows = nullptr;   // [q_samples] model index of each sampled query
  const int32_t* q_block = nullptr;  // [q_samples] its layout block
  const int64_t* key_rows = nullptr; // [key_samples] model index of each sampled key
  const int32_t* key_block = nullptr;  // [key_samples] its layout block
  int32_t q_samples = 0;             // sampled queries per (batch, head)
  int32_t key_samples = 0;           // sampled keys
  const uint8_t* masks = nullptr;    // [3, nb, nb] candidate block masks (spatial, temporal, textural)
  int32_t blocks = 0;                // nb
  float scale = 0.0f;                // softmax scale (1/sqrt(D))
  double* recall = nullptr;          // [H, 3] kept mass summed over batch rows and sampled
                                     // queries (the caller zeroes it and divides by B*q_samples)
};

int LaunchArmProbe(const ArmProbeParams& params, void* stream);

}  // namespace sparsetune::cuda
