// Short video clips for training and testing the tiny video model.
//
// Real clips come from datasets/prepare_clips.sh (OpenCV's sample videos, decoded with ffmpeg,
// center-cropped and downscaled) and live, git-ignored, in datasets/clips/:
//   index.json           {"version": 1, "clips": [{"name", "file", "class_id", "frames",
//                          "height", "width", "fps", "source"}, ...]}
//   <name>.safetensors   tensor "frames": U8 [T, H, W, 3] (RGB), metadata source/fps/size
// Procedural clips are generated in memory (deterministic per seed) for tests that must not
// depend on the prepared files. docs/datasets.md describes both.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace sparsetune {

// One real clip; its class is the clip itself.
struct Clip {
  std::string name;      // file stem, e.g. "vtest"
  int64_t class_id = 0;  // label from index.json, unique per clip
  double fps = 0.0;      // frames per second the clip was resampled to
  std::string source;    // the video it was decoded from
  torch::Tensor frames;  // uint8 [T, H, W, 3] RGB on CPU
};

// Reads dir/index.json and every clip it lists; every problem (missing index or file, a field
// out of range, a frames tensor that is not U8 [T, H, W, 3] or disagrees with the index) is an
// InputError naming the file.
std::vector<Clip> LoadClips(const std::filesystem::path& dir);

// Number of procedural patterns: 0 sliding bar, 1 rotating checkerboard, 2 expanding ring,
// 3 drifting sine gradient, 4 bouncing disk.
constexpr int64_t kProceduralClipKinds = 5;

// A float [frames, 3, height, width] clip with values in [0, 1] showing moving pattern `kind`.
// Colors, speed, direction and phase are drawn from `seed`: the same arguments always give the
// same clip. Bad arguments (kind out of range, sizes outside [1, 4096], more than 2^27 pixels in
// all) are an InputError.
torch::Tensor ProceduralClip(int64_t kind, int64_t frames, int64_t height, int64_t width, uint64_t seed);

}  // namespace sparsetune
