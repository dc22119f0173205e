// TimeRipple on the GPU at tile granularity (issue #8 item 3; CPU oracle kernels/timeripple.cpp).
//
// A key tile is a run of up to kRippleTile video keys of one frame that are consecutive in raster
// order inside the frame: tile (f, c) holds the keys at spatial positions [c*T, min(HW, (c+1)*T))
// of frame f. Its reference is tile (f-1, c): the same spatial positions one frame earlier, which
// is exactly RippleReuse's per-token reference. Group g (RoPE channels t, h, w) of tile (f >= 1, c)
// is reused when EVERY key of the tile passes the CPU's per-token test (cosine of the group's
// channels with the reference key >= threshold). A reused group's partial products q·k^g are not
// computed: the kernel keeps the partials of tile (f-1, c) in registers (it walks frames in order
// inside each spatial run), so reuse ripples along frames as on the CPU.
//
// Difference from the CPU oracle (documented in docs via the report): the CPU reuses per token; the
// GPU reuses a group only for whole tiles, so a token the CPU reuses inside a tile with a
// non-reusing neighbour is computed exactly here. When reuse is uniform over each tile the two are
// the same computation (the tests build such inputs). q rows any subset of tokens, head_dim <= 128.
//
// Block masks (optional, the runtime's sparse heads): a (query, key) pair outside the query's
// block row is left out of the softmax, after the partials are formed, so reuse still reads the
// reference column's partial even where that pair is masked (as the CPU oracle does). Masked
// pairs are still multiplied (the kernel walks every key tile); only the softmax skips them.
#pragma once

#include <cstdint>

#include "kernels/cuda/mask_predict.h"

namespace sparsetune::cuda {

// Keys per ripple tile (one warp's worth of keys per CTA step).
constexpr int32_t kRippleTile = 32;

struct RippleParams {
  const void* q = nullptr;        // [B, H, Nq, D] queries, dtype
  const void* k = nullptr;        // [B, H, N, D] keys, MODEL order, dtype
  const void* v = nullptr;        // [B, H, N, D] values, MODEL order, dtype
  void* o = nullptr;              // [B, H, Nq, D] output, dtype
  float* lse = nullptr;           // [B, H, Nq] float32 natural-log LSE of the scaled scores
  int32_t batch = 0;              // B
  int32_t heads = 0;              // H
  int32_t q_rows = 0;             // Nq
  int32_t tokens = 0;             // N = video + text tokens
  int32_t head_dim = 0;           // D: a multiple of 8, at most 128
  int32_t frames = 0;             // F of the latent grid
  int32_t frame_tokens = 0;       // H*W tokens of one frame
  int32_t video_offset = 0;       // model index of the first video token
  int32_t split[3] = {0, 0, 0};   // channels of the t, h, w groups (sum D)
  float threshold = 1.0f;         // cosine a key group must reach to be reused
  float scale = 0.0f;             // softmax scale (1/sqrt(D))
  HalfType dtype = HalfType::kBFloat16;  // element type of q, k, v, o
  uint8_t* reuse = nullptr;       // [B*H, 3, F, ceil(HW/T)] tile reuse flags (written)
  // Optional block mask (all three null = every pair allowed).
  const uint8_t* mask = nullptr;      // [B*H, nb, nb] 1 = key block allowed for the query block
  const int32_t* q_block = nullptr;   // [B, Nq] layout block of each query row
  const int32_t* key_block = nullptr; // [N] layout block of each key, by model index
  int32_t blocks = 0;                 // nb
  unsigned long long* macs_skipped = nullptr;  // counter the kernels add to (zero it first)
};

// Bytes of RippleParams::reuse.
int64_t RippleReuseBytes(int32_t batch, int32_t heads, int32_t frames, int32_t frame_tokens);

// Tile reuse flags, then attention with the skipped group products. Returns 0 or a cudaError_t;
// cudaErrorInvalidValue for an unsupported head_dim or split, or a mask without its block maps.
// macs_skipped counts every computed query per reused key (the dense-head count); with a mask the
// caller counts the allowed queries itself from the flags. A query row whose mask allows no key
// gets out = 0 and lse = -inf.
int LaunchRippleAttention(const RippleParams& params, void* stream);

}  // namespace sparsetune::cuda
