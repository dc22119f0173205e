// Training samples of `sparsetune train`: which frames of which clip, and how each frame is cropped.
//
// Two kinds (docs/training.md, "Data"):
//  * video windows: T frames of one clip at a temporal stride, one square crop for all frames, or
//    with probability `pan_fraction` a crop whose centre moves linearly over the window (a camera
//    pan, so a position's content moves between frames);
//  * stills, with probability `image_fraction`: T frames of one clip at independent random times,
//    each with its own crop and flip. The frames are unrelated pictures, so denoising a token can
//    only use keys of its own frame: the image half of joint image-video training.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "train/train_config.h"

namespace sparsetune {

// Where one clip's training frames lie in the trainer's frame tensor.
struct ClipSpan {
  int64_t class_id = 0;      // the clip's class
  int64_t offset = 0;        // index of the clip's first frame
  int64_t train_frames = 0;  // frames [offset, offset + train_frames) may be trained on
};

// One frame of a sample: its index in the frame tensor and its square crop, in the normalized
// [-1, 1] coordinates of grid_sample (side 1 = the whole frame).
struct FrameView {
  int64_t frame = 0;   // index into the frame tensor
  double side = 1.0;   // crop side, fraction of the frame
  double cx = 0.0;     // crop centre, x in [-(1 - side), 1 - side]
  double cy = 0.0;     // crop centre, y
  bool flip = false;   // horizontal flip
};

// One training (or validation) sample.
struct Window {
  int64_t class_id = 0;           // conditioning class (the clip's)
  bool still = false;             // true: frames are independent stills, not a video window
  bool pan = false;               // true: a video window whose crop moves over time
  std::vector<FrameView> frames;  // `frames` entries, in time order
};

// `config.batch` random samples over `clips` for a model of `frames` frames. Draws only from
// `rng`; with image_fraction and pan_fraction 0 it draws exactly what the trainer drew before
// these options existed, so older runs stay reproducible.
std::vector<Window> RandomWindows(const std::vector<ClipSpan>& clips, const TrainConfig& config,
                                  int64_t frames, std::mt19937_64& rng);

}  // namespace sparsetune
