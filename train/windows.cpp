#include "train/windows.h"

#include <algorithm>

namespace sparsetune {

namespace {

// A random square crop (side, centre) inside the frame, and a flip when the config allows it.
FrameView RandomCrop(const TrainConfig& config, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  FrameView v;
  v.side = config.crop_min + (config.crop_max - config.crop_min) * unit(rng);
  v.cx = (1.0 - v.side) * (2.0 * unit(rng) - 1.0);
  v.cy = (1.0 - v.side) * (2.0 * unit(rng) - 1.0);
  v.flip = config.flip && unit(rng) < 0.5;
  return v;
}

}  // namespace

std::vector<Window> RandomWindows(const std::vector<ClipSpan>& clips, const TrainConfig& config,
                                  int64_t frames, std::mt19937_64& rng) {
  std::vector<Window> windows;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t i = 0; i < config.batch; ++i) {
    const ClipSpan& clip = clips[rng() % clips.size()];
    Window w;
    w.class_id = clip.class_id;
    // The extra draws happen only when the option is on (reproducibility of older runs).
    w.still = config.image_fraction > 0 && unit(rng) < config.image_fraction;
    if (w.still) {
      for (int64_t f = 0; f < frames; ++f) {
        const auto time = static_cast<int64_t>(rng() % static_cast<uint64_t>(clip.train_frames));
        FrameView v = RandomCrop(config, rng);
        v.frame = clip.offset + time;
        w.frames.push_back(v);
      }
      windows.push_back(std::move(w));
      continue;
    }
    int64_t stride = config.frame_strides[rng() % config.frame_strides.size()];
    while (stride > 1 && (frames - 1) * stride + 1 > clip.train_frames) --stride;
    const int64_t span = (frames - 1) * stride + 1;
    const auto start = static_cast<int64_t>(rng() % static_cast<uint64_t>(clip.train_frames - span + 1));
    const FrameView crop = RandomCrop(config, rng);
    // A pan moves the crop centre from `crop`'s to another random one inside the frame.
    double end_x = crop.cx, end_y = crop.cy;
    w.pan = config.pan_fraction > 0 && unit(rng) < config.pan_fraction;
    if (w.pan) {
      end_x = (1.0 - crop.side) * (2.0 * unit(rng) - 1.0);
      end_y = (1.0 - crop.side) * (2.0 * unit(rng) - 1.0);
    }
    for (int64_t f = 0; f < frames; ++f) {
      FrameView v = crop;
      v.frame = clip.offset + start + f * stride;
      const double a = frames > 1 ? static_cast<double>(f) / static_cast<double>(frames - 1) : 0.0;
      v.cx = crop.cx + a * (end_x - crop.cx);
      v.cy = crop.cy + a * (end_y - crop.cy);
      w.frames.push_back(v);
    }
    windows.push_back(std::move(w));
  }
  return windows;
}

}  // namespace sparsetune
