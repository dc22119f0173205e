// Token layout of the runtime: the order in which the joint sequence is laid out before it is cut
// into attention blocks, and each block's place in the video grid. Every pattern is a block mask
// over this layout (docs/runtime.md, "Layout").
//
//   model order:  text front [text | video], back [video | text], none [video]; video raster
//   layout order: [video permuted to the token order | text]; blocks cut separately over the
//                 video part and the text part, so a block never mixes text and video.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "kernels/schedule.h"

namespace sparsetune {

// Where a video block lies in the latent grid: inclusive ranges of frames, rows and columns.
struct BlockExtent {
  int64_t f0 = 0, f1 = 0;  // frames
  int64_t h0 = 0, h1 = 0;  // rows
  int64_t w0 = 0, w1 = 0;  // columns
};

struct Layout {
  std::array<int64_t, 3> grid = {0, 0, 0};  // [frames, height, width] in tokens
  int64_t tokens = 0;        // N, joint sequence length
  int64_t video_tokens = 0;  // F*H*W
  int64_t text_tokens = 0;   // prompt tokens
  int64_t block_size = 0;    // tokens per block (the last block of each part may be shorter)
  int64_t video_blocks = 0;  // blocks over the video part (they come first)
  int64_t text_blocks = 0;   // blocks over the text part (they come last)
  torch::Tensor order;       // [N] int64: layout position -> model index
  torch::Tensor position;    // [N] int64: model index -> layout position
  torch::Tensor block_of;    // [N] int64: layout position -> block
  torch::Tensor padded;      // [blocks*block_size] int64: padded slot -> layout position, or N
  torch::Tensor slot_valid;  // [blocks*block_size] bool: slot holds a token
  std::vector<int64_t> block_begin;  // per block: first layout position
  std::vector<int64_t> block_len;    // per block: tokens in it
  std::vector<BlockExtent> extent;   // per video block: its grid extent

  int64_t blocks() const { return video_blocks + text_blocks; }
  bool is_text_block(int64_t b) const { return b >= video_blocks; }
  // True when the video block holds a token of the first frame (the attention sink).
  bool has_first_frame(int64_t b) const { return b < video_blocks && extent[b].f0 == 0; }
  // Model index of the first video token (text front: after the text).
  int64_t video_offset = 0;
};

// Builds the layout for `model` with `order` and `block_size`. Throws InputError for a block size
// or tile below 1.
Layout BuildLayout(const ModelGeometry& model, const TokenOrder& order, int64_t block_size);

// A copy of `layout` whose tensors live on `device` (host vectors are shared by value).
Layout LayoutOn(const Layout& layout, const torch::Device& device);

// Expands a block mask [..., nb, nb] (bool) into the token mask [..., N, N] in MODEL order:
// token i may attend token j when block(i) may attend block(j).
torch::Tensor ExpandBlockMask(const Layout& layout, const torch::Tensor& block_mask);

// x[..., idx, :] for x [..., N, D] as one row gather over the flattened tensor (a gather along a
// middle dimension measured several times slower on CPU). idx: [M] int64 in [0, N), on x's
// device.
torch::Tensor PermuteTokens(const torch::Tensor& x, const torch::Tensor& idx);

// Per block: number of key tokens the block mask row allows, [..., nb] int64.
torch::Tensor KeyTokensPerRow(const Layout& layout, const torch::Tensor& block_mask);

}  // namespace sparsetune
