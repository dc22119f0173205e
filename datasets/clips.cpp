#include "datasets/clips.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/json_reader.h"
#include "datasets/safetensors.h"
#include "datasets/tensor_io.h"

namespace sparsetune {

namespace {

constexpr int64_t kMaxProceduralSize = 4096;
constexpr int64_t kMaxProceduralPixels = int64_t{1} << 27;  // 1.5 GiB of float RGB
constexpr double kPi = 3.14159265358979323846;

// Uniform doubles from a seeded stream. std::uniform_real_distribution is implementation-defined,
// so the mapping is written out to keep clips identical across standard libraries.
class Uniform {
 public:
  explicit Uniform(uint64_t seed) : state_(seed) {}
  // SplitMix64 step mapped to [lo, hi).
  double next(double lo, double hi) {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
  }
  double sign() { return next(0.0, 1.0) < 0.5 ? -1.0 : 1.0; }

 private:
  uint64_t state_;
};

double Clamp01(double x) { return std::min(1.0, std::max(0.0, x)); }
double Fract(double x) { return x - std::floor(x); }

// Coverage of a band |distance| <= half_width with an edge about one pixel (`edge`) wide, so
// moving shapes change smoothly between frames instead of jumping by whole pixels.
double Band(double distance, double half_width, double edge) {
  return Clamp01((half_width - std::fabs(distance)) / edge + 0.5);
}

// Triangle wave in [0, 1] with period 2: position of something bouncing between two walls.
double Bounce(double x) {
  const double f = Fract(x / 2.0) * 2.0;
  return f < 1.0 ? f : 2.0 - f;
}

}  // namespace

std::vector<Clip> LoadClips(const std::filesystem::path& dir) {
  const std::filesystem::path index_path = dir / "index.json";
  std::error_code ec;
  if (!std::filesystem::exists(index_path, ec)) {
    throw InputError(index_path.string() + ": file not found (run datasets/prepare_clips.sh)");
  }
  const Json index = LoadJsonFile(index_path);
  JsonReader root(index, index_path.string(), "", dir);
  root.integer("version", 1, 1);
  std::vector<Clip> clips;
  std::set<std::string> names;
  std::set<int64_t> class_ids;
  for (JsonReader& entry : root.objects("clips", 1)) {
    Clip clip;
    clip.name = entry.string("name");
    if (clip.name.empty()) entry.fail("name", "must not be empty");
    if (!names.insert(clip.name).second) entry.fail("name", "duplicate clip '" + clip.name + "'");
    const std::filesystem::path file = entry.path("file");
    clip.class_id = entry.integer("class_id", 0, 1'000'000);
    if (!class_ids.insert(clip.class_id).second) {
      entry.fail("class_id", "duplicate class id " + std::to_string(clip.class_id));
    }
    const int64_t frames = entry.integer("frames", 1, 1'000'000);
    const int64_t height = entry.integer("height", 1, 16384);
    const int64_t width = entry.integer("width", 1, 16384);
    clip.fps = entry.number("fps", 1e-3, 1e4);
    clip.source = entry.string("source", "");
    entry.finish();

    const SafeTensorsFile data = SafeTensorsFile::Load(file);
    const SafeTensor& t = data.get("frames");
    const std::vector<int64_t> expected = {frames, height, width, 3};
    if (t.dtype != DType::kU8 || t.shape != expected) {
      std::string shape;
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
      throw InputError(file.string() + ": tensor 'frames': expected U8 [" + std::to_string(frames) + ", " +
                       std::to_string(height) + ", " + std::to_string(width) + ", 3] as " +
                       index_path.string() + " says, got " + DTypeName(t.dtype) + " [" + shape + "]");
    }
    clip.frames = ToTorch(t);
    clips.push_back(std::move(clip));
  }
  root.finish();
  return clips;
}

torch::Tensor ProceduralClip(int64_t kind, int64_t frames, int64_t height, int64_t width, uint64_t seed) {
  if (kind < 0 || kind >= kProceduralClipKinds) {
    throw InputError("procedural clip: kind " + std::to_string(kind) + " out of range [0, " +
                     std::to_string(kProceduralClipKinds - 1) + "]");
  }
  for (const auto& [what, value] : {std::pair<const char*, int64_t>{"frames", frames},
                                    {"height", height}, {"width", width}}) {
    if (value < 1 || value > kMaxProceduralSize) {
      throw InputError(std::string("procedural clip: ") + what + " " + std::to_string(value) +
                       " out of range [1, " + std::to_string(kMaxProceduralSize) + "]");
    }
  }
  // A guard against arguments that would allocate far more than any test or training clip needs.
  if (frames * height * width > kMaxProceduralPixels) {
    throw InputError("procedural clip: " + std::to_string(frames) + "x" + std::to_string(height) + "x" +
                     std::to_string(width) + " pixels exceed the limit of " + std::to_string(kMaxProceduralPixels));
  }
  // Mixing the kind into the seed keeps kinds independent when callers reuse one seed.
  Uniform rng(seed ^ (static_cast<uint64_t>(kind) * 0xD1B54A32D192ED03ull));
  double background[3], foreground[3];
  for (int c = 0; c < 3; ++c) {
    background[c] = rng.next(0.0, 1.0);
    // Half a unit away on every channel: the pattern always has contrast.
    foreground[c] = Fract(background[c] + 0.5);
  }
  const double edge = 1.0 / static_cast<double>(std::min(height, width));
  const double angle = rng.next(0.0, 2.0 * kPi);
  const double dir_x = std::cos(angle), dir_y = std::sin(angle);
  const double phase = rng.next(0.0, 1.0);
  const double speed = rng.next(0.015, 0.05);  // image widths (or cycles) per frame
  const double size = rng.next(0.06, 0.14);     // bar half width, ring half thickness, disk radius
  const double cells = rng.next(3.0, 6.0);      // checkerboard cells per image width
  const double spin = rng.sign() * rng.next(0.04, 0.12);  // radians per frame
  const double center_x = rng.next(-0.2, 0.2), center_y = rng.next(-0.2, 0.2);
  const double velocity_x = rng.sign() * rng.next(0.02, 0.05);
  const double velocity_y = rng.sign() * rng.next(0.02, 0.05);
  const double waves = rng.next(1.0, 3.0);  // gradient cycles across the image

  std::vector<float> out(static_cast<size_t>(frames * 3 * height * width));
  const size_t plane = static_cast<size_t>(height * width);
  for (int64_t t = 0; t < frames; ++t) {
    const double time = static_cast<double>(t);
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        // Pixel centers in [-0.5, 0.5].
        const double px = (static_cast<double>(x) + 0.5) / static_cast<double>(width) - 0.5;
        const double py = (static_cast<double>(y) + 0.5) / static_cast<double>(height) - 0.5;
        double s = 0.0;
        switch (kind) {
          case 0: {  // bar sliding along `angle`, wrapping around
            const double position = -0.8 + 1.6 * Fract(phase + speed * time);
            s = Band(px * dir_x + py * dir_y - position, size, edge);
            break;
          }
          case 1: {  // checkerboard spinning about the center
            const double a = angle + spin * time;
            const double rx = px * std::cos(a) - py * std::sin(a);
            const double ry = px * std::sin(a) + py * std::cos(a);
            const int64_t parity = static_cast<int64_t>(std::floor(rx * cells) + std::floor(ry * cells));
            s = (parity % 2 == 0) ? 1.0 : 0.0;
            break;
          }
          case 2: {  // ring growing from an off-center point, restarting when large
            const double radius = 0.75 * Fract(phase + speed * time);
            s = Band(std::hypot(px - center_x, py - center_y) - radius, size * 0.6, edge);
            break;
          }
          case 3: {  // sine gradient drifting along `angle`
            s = 0.5 + 0.5 * std::sin(2.0 * kPi * (waves * (px * dir_x + py * dir_y) - speed * time + phase));
            break;
          }
          default: {  // disk bouncing off the borders
            const double span = 1.0 - 2.0 * size;
            const double cx = -0.5 + size + span * Bounce(phase * 2.0 + velocity_x * time / span);
            const double cy = -0.5 + size + span * Bounce(center_x + 1.0 + velocity_y * time / span);
            s = Band(std::hypot(px - cx, py - cy), size, edge);
            break;
          }
        }
        const size_t offset = static_cast<size_t>(t) * 3 * plane + static_cast<size_t>(y * width + x);
        for (int c = 0; c < 3; ++c) {
          out[offset + c * plane] = static_cast<float>(background[c] + (foreground[c] - background[c]) * s);
        }
      }
    }
  }
  return torch::from_blob(out.data(), {frames, 3, height, width}, torch::kFloat32).clone();
}

}  // namespace sparsetune
