#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "tests/catch.h"
#include "train/train_config.h"
#include "train/windows.h"

using namespace sparsetune;

namespace {

// Three clips of random lengths and offsets, as LoadClipData lays them out.
std::vector<ClipSpan> RandomSpans(std::mt19937_64& rng) {
  std::vector<ClipSpan> spans;
  int64_t offset = 0;
  for (int64_t c = 0; c < 3; ++c) {
    const auto frames = static_cast<int64_t>(20 + rng() % 100);
    spans.push_back({c, offset, frames});
    offset += frames + static_cast<int64_t>(rng() % 30);  // the held-out part between clips
  }
  return spans;
}

TrainConfig Config(double image_fraction, double pan_fraction) {
  TrainConfig c;
  c.batch = 500;
  c.frame_strides = {1, 2, 3};
  c.crop_min = 0.5;
  c.crop_max = 0.9;
  c.image_fraction = image_fraction;
  c.pan_fraction = pan_fraction;
  return c;
}

// Every frame lies in its clip's training frames and every crop inside the frame.
void CheckInside(const Window& w, const std::vector<ClipSpan>& spans, const TrainConfig& c) {
  const ClipSpan& clip = spans.at(static_cast<size_t>(w.class_id));
  for (const FrameView& v : w.frames) {
    REQUIRE(v.frame >= clip.offset);
    REQUIRE(v.frame < clip.offset + clip.train_frames);
    REQUIRE(v.side >= c.crop_min);
    REQUIRE(v.side <= c.crop_max);
    REQUIRE(std::abs(v.cx) <= 1.0 - v.side + 1e-12);
    REQUIRE(std::abs(v.cy) <= 1.0 - v.side + 1e-12);
  }
}

bool SameCrop(const FrameView& a, const FrameView& b) {
  return a.side == b.side && a.cx == b.cx && a.cy == b.cy && a.flip == b.flip;
}

}  // namespace

TEST_CASE("train windows: video windows only by default, one crop, a stride", "[train]") {
  std::mt19937_64 seed_rng(21);
  const std::vector<ClipSpan> spans = RandomSpans(seed_rng);
  const TrainConfig c = Config(0.0, 0.0);
  std::mt19937_64 rng(5);
  const std::vector<Window> windows = RandomWindows(spans, c, 8, rng);
  REQUIRE(windows.size() == 500);
  std::set<int64_t> strides;
  for (const Window& w : windows) {
    CHECK(!w.still);
    CHECK(!w.pan);
    REQUIRE(w.frames.size() == 8);
    CheckInside(w, spans, c);
    const int64_t stride = w.frames[1].frame - w.frames[0].frame;
    strides.insert(stride);
    for (size_t f = 1; f < w.frames.size(); ++f) {
      REQUIRE(w.frames[f].frame - w.frames[f - 1].frame == stride);
      REQUIRE(SameCrop(w.frames[f], w.frames[0]));
    }
  }
  CHECK(strides == std::set<int64_t>{1, 2, 3});
  // Same generator state, same windows (the trainer seeds one generator per step).
  std::mt19937_64 again(5);
  const std::vector<Window> repeat = RandomWindows(spans, c, 8, again);
  for (size_t i = 0; i < windows.size(); ++i) {
    REQUIRE(repeat[i].frames[0].frame == windows[i].frames[0].frame);
    REQUIRE(SameCrop(repeat[i].frames[3], windows[i].frames[3]));
  }
}

TEST_CASE("train windows: stills are independent frames and crops of one clip", "[train]") {
  std::mt19937_64 seed_rng(22);
  const std::vector<ClipSpan> spans = RandomSpans(seed_rng);
  const TrainConfig c = Config(0.4, 0.0);
  std::mt19937_64 rng(6);
  int64_t stills = 0, unordered = 0;
  for (int round = 0; round < 4; ++round) {
    for (const Window& w : RandomWindows(spans, c, 8, rng)) {
      REQUIRE(w.frames.size() == 8);
      CheckInside(w, spans, c);
      if (!w.still) {
        for (size_t f = 1; f < w.frames.size(); ++f) REQUIRE(SameCrop(w.frames[f], w.frames[0]));
        continue;
      }
      ++stills;
      std::set<double> sides;
      for (const FrameView& v : w.frames) sides.insert(v.side);
      CHECK(sides.size() == 8);  // every still has its own crop
      bool ordered = true;
      for (size_t f = 1; f < w.frames.size(); ++f) ordered &= w.frames[f].frame > w.frames[f - 1].frame;
      unordered += ordered ? 0 : 1;
    }
  }
  // 2000 draws at p = 0.4: standard deviation 11, so +-80 is far outside chance.
  CHECK(stills > 800 - 80);
  CHECK(stills < 800 + 80);
  // Random times are almost never increasing (1/8! of the time with distinct frames).
  CHECK(unordered > stills * 9 / 10);
}

TEST_CASE("train windows: pans move the crop linearly inside the frame", "[train]") {
  std::mt19937_64 seed_rng(23);
  const std::vector<ClipSpan> spans = RandomSpans(seed_rng);
  const TrainConfig c = Config(0.0, 0.5);
  std::mt19937_64 rng(7);
  int64_t pans = 0;
  double largest_move = 0;
  for (const Window& w : RandomWindows(spans, c, 8, rng)) {
    CHECK(!w.still);
    CheckInside(w, spans, c);
    const FrameView& first = w.frames.front();
    const FrameView& last = w.frames.back();
    for (size_t f = 0; f < w.frames.size(); ++f) {
      const double a = static_cast<double>(f) / 7.0;
      REQUIRE(w.frames[f].side == first.side);
      REQUIRE(w.frames[f].flip == first.flip);
      REQUIRE(w.frames[f].cx == Approx(first.cx + a * (last.cx - first.cx)).margin(1e-12));
      REQUIRE(w.frames[f].cy == Approx(first.cy + a * (last.cy - first.cy)).margin(1e-12));
    }
    const double move = std::hypot(last.cx - first.cx, last.cy - first.cy);
    if (w.pan) {
      ++pans;
      largest_move = std::max(largest_move, move);
    } else {
      REQUIRE(move == 0.0);
    }
  }
  CHECK(pans > 250 - 56);  // 500 draws at p = 0.5: standard deviation 11
  CHECK(pans < 250 + 56);
  CHECK(largest_move > 0.3);  // crops of side <= 0.9 leave room to move
}
