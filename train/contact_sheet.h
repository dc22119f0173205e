// Contact sheets of generated videos, written as PNG in-process (no image library, no ffmpeg).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <torch/torch.h>

namespace sparsetune {

// The frames of `video` ([1, 3, T, H, W] or [3, T, H, W], values in [0, 1], any device/dtype)
// side by side, each enlarged `scale` times (nearest neighbour), separated by `gap` white pixel
// columns: uint8 [H scale, T W scale + (T - 1) gap, 3] on the CPU. InputError on a bad shape,
// scale outside [1, 16] or gap outside [0, 64].
torch::Tensor ContactSheet(const torch::Tensor& video, int64_t scale = 1, int64_t gap = 2);

// PNG bytes (8-bit RGB, no interlace, filter 0, zlib stream of stored deflate blocks) of an image
// uint8 [H, W, 3]. InputError on any other shape or dtype, or an empty image.
std::string EncodePng(const torch::Tensor& rgb);

// Writes EncodePng(rgb) to `path`; RunError when the file cannot be written.
void WritePng(const std::filesystem::path& path, const torch::Tensor& rgb);

}  // namespace sparsetune
