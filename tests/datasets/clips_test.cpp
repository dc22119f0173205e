// LoadClips on clips written in a temporary folder, procedural clips, and prepare_clips.sh end to
// end on a tiny video that ffmpeg synthesizes.
#include "datasets/clips.h"

#include <cstdlib>
#include <random>

#include "core/error.h"
#include "datasets/safetensors.h"
#include "datasets/tensor_io.h"
#include "tests/catch.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

namespace fs = std::filesystem;

std::string InputErrorMessage(const fs::path& dir) {
  try {
    LoadClips(dir);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

torch::Tensor RandomFrames(int64_t t, int64_t h, int64_t w) {
  return torch::randint(0, 256, {t, h, w, 3}, torch::kUInt8);
}

void WriteClip(const fs::path& path, const torch::Tensor& frames) {
  SaveTensors(path, {{"frames", frames}}, {{"fps", "10"}});
}

TEST_CASE("clips: LoadClips reads the index and every clip", "[datasets]") {
  torch::manual_seed(42);
  test::TempDir dir;
  const torch::Tensor a = RandomFrames(5, 8, 6), b = RandomFrames(3, 8, 6);
  WriteClip(dir / "walk.safetensors", a);
  WriteClip(dir / "tree.safetensors", b);
  test::WriteText(dir / "index.json", R"({"version": 1, "clips": [
    {"name": "walk", "file": "walk.safetensors", "class_id": 1, "frames": 5, "height": 8, "width": 6, "fps": 10, "source": "walk.avi"},
    {"name": "tree", "file": "tree.safetensors", "class_id": 0, "frames": 3, "height": 8, "width": 6, "fps": 12.5}]})");
  const std::vector<Clip> clips = LoadClips(dir.path());
  REQUIRE(clips.size() == 2);
  CHECK(clips[0].name == "walk");
  CHECK(clips[0].class_id == 1);
  CHECK(clips[0].fps == 10.0);
  CHECK(clips[0].source == "walk.avi");
  CHECK(torch::equal(clips[0].frames, a));
  CHECK(clips[1].name == "tree");
  CHECK(clips[1].class_id == 0);
  CHECK(clips[1].fps == 12.5);
  CHECK(clips[1].frames.scalar_type() == torch::kUInt8);
  CHECK(torch::equal(clips[1].frames, b));
}

TEST_CASE("clips: LoadClips errors name the file and field", "[datasets]") {
  torch::manual_seed(43);
  test::TempDir dir;
  const std::string index = (dir / "index.json").string();
  CHECK(Contains(InputErrorMessage(dir.path()), index + ": file not found"));

  WriteClip(dir / "a.safetensors", RandomFrames(4, 8, 8));
  const std::string entry =
      R"({"name": "a", "file": "a.safetensors", "class_id": 0, "frames": 4, "height": 8, "width": 8, "fps": 10)";
  SECTION("missing clip file") {
    test::WriteText(dir / "index.json",
                    R"({"version": 1, "clips": [{"name": "b", "file": "b.safetensors", "class_id": 0, "frames": 4, "height": 8, "width": 8, "fps": 10}]})");
    CHECK(Contains(InputErrorMessage(dir.path()), "b.safetensors: file not found"));
  }
  SECTION("frame count disagrees with the index") {
    test::WriteText(dir / "index.json",
                    R"({"version": 1, "clips": [{"name": "a", "file": "a.safetensors", "class_id": 0, "frames": 5, "height": 8, "width": 8, "fps": 10}]})");
    const std::string message = InputErrorMessage(dir.path());
    CHECK(Contains(message, "a.safetensors: tensor 'frames': expected U8 [5, 8, 8, 3]"));
    CHECK(Contains(message, "got U8 [4, 8, 8, 3]"));
  }
  SECTION("frames tensor of the wrong dtype") {
    SaveTensors(dir / "a.safetensors", {{"frames", torch::rand({4, 8, 8, 3})}});
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": [)" + entry + "}]}");
    CHECK(Contains(InputErrorMessage(dir.path()), "got F32 [4, 8, 8, 3]"));
  }
  SECTION("no frames tensor") {
    SaveTensors(dir / "a.safetensors", {{"pixels", RandomFrames(4, 8, 8)}});
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": [)" + entry + "}]}");
    CHECK(Contains(InputErrorMessage(dir.path()), "no tensor named 'frames'"));
  }
  SECTION("unknown key") {
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": [)" + entry + R"(, "label": "x"}]})");
    const std::string message = InputErrorMessage(dir.path());
    CHECK(Contains(message, index));
    CHECK(Contains(message, "label"));
  }
  SECTION("duplicate class id") {
    WriteClip(dir / "b.safetensors", RandomFrames(4, 8, 8));
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": [)" + entry +
                                            R"(}, {"name": "b", "file": "b.safetensors", "class_id": 0, "frames": 4, "height": 8, "width": 8, "fps": 10}]})");
    CHECK(Contains(InputErrorMessage(dir.path()), "duplicate class id 0"));
  }
  SECTION("wrong version and empty list") {
    test::WriteText(dir / "index.json", R"({"version": 2, "clips": [)" + entry + "}]}");
    CHECK(Contains(InputErrorMessage(dir.path()), "version"));
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": []})");
    CHECK(Contains(InputErrorMessage(dir.path()), "clips"));
  }
  SECTION("corrupt clip file") {
    test::WriteText(dir / "a.safetensors", "not a safetensors file at all");
    test::WriteText(dir / "index.json", R"({"version": 1, "clips": [)" + entry + "}]}");
    CHECK(Contains(InputErrorMessage(dir.path()), "a.safetensors: header length"));
  }
}

TEST_CASE("clips: procedural clips are deterministic, bounded and moving", "[datasets]") {
  for (int64_t kind = 0; kind < kProceduralClipKinds; ++kind) {
    INFO("kind " << kind);
    const torch::Tensor clip = ProceduralClip(kind, 6, 24, 20, 1000 + kind);
    REQUIRE(clip.sizes().vec() == std::vector<int64_t>{6, 3, 24, 20});
    REQUIRE(clip.scalar_type() == torch::kFloat32);
    CHECK(clip.min().item<float>() >= 0.0f);
    CHECK(clip.max().item<float>() <= 1.0f);
    CHECK(torch::equal(clip, ProceduralClip(kind, 6, 24, 20, 1000 + kind)));
    CHECK_FALSE(torch::equal(clip, ProceduralClip(kind, 6, 24, 20, 2000 + kind)));
    // Spatial structure in the first frame, and motion between every pair of consecutive frames.
    CHECK(clip[0].std().item<float>() > 0.05f);
    for (int64_t t = 1; t < 6; ++t) {
      CHECK((clip[t] - clip[t - 1]).abs().mean().item<float>() > 1e-3f);
    }
  }
  // The same seed gives different pictures for different kinds.
  CHECK_FALSE(torch::allclose(ProceduralClip(0, 2, 16, 16, 5), ProceduralClip(3, 2, 16, 16, 5)));
}

TEST_CASE("clips: procedural clip arguments are checked", "[datasets]") {
  REQUIRE_THROWS_AS(ProceduralClip(-1, 4, 8, 8, 1), InputError);
  REQUIRE_THROWS_AS(ProceduralClip(kProceduralClipKinds, 4, 8, 8, 1), InputError);
  REQUIRE_THROWS_AS(ProceduralClip(0, 0, 8, 8, 1), InputError);
  REQUIRE_THROWS_AS(ProceduralClip(0, 4, 8, 5000, 1), InputError);
  REQUIRE_THROWS_AS(ProceduralClip(0, 4096, 4096, 4096, 1), InputError);
  REQUIRE_THROWS_WITH(ProceduralClip(0, 4, -3, 8, 1), "procedural clip: height -3 out of range [1, 4096]");
  REQUIRE(ProceduralClip(2, 1, 1, 1, 9).numel() == 3);
}

TEST_CASE("clips: prepare_clips.sh turns a video into clips LoadClips reads", "[datasets]") {
  const test::CommandResult probe = test::RunCommand("command -v ffmpeg");
  if (probe.exit_code != 0) {
    WARN("ffmpeg not installed: prepare_clips.sh not exercised");
    return;
  }
  test::TempDir dir;
  const fs::path video = dir / "bars.mp4";
  const fs::path out = dir / "clips";
  const std::string script = std::string(SPARSETUNE_SOURCE_DIR) + "/datasets/prepare_clips.sh";
  const test::CommandResult make = test::RunCommand(
      "ffmpeg -nostdin -v error -f lavfi -i testsrc=size=96x72:rate=25:duration=2 -pix_fmt yuv420p -y '" +
      video.string() + "'");
  REQUIRE(make.exit_code == 0);
  const std::string run = "'" + script + "' --out '" + out.string() + "' --size 16 --frames 12 --fps 5 --source '" +
                          video.string() + "'";
  const test::CommandResult first = test::RunCommand(run);
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  CHECK(Contains(first.out, "bars: wrote"));

  std::vector<Clip> clips = LoadClips(out);
  REQUIRE(clips.size() == 1);
  CHECK(clips[0].name == "bars");
  CHECK(clips[0].class_id == 0);
  CHECK(clips[0].fps == 5.0);
  CHECK(clips[0].frames.sizes().vec() == std::vector<int64_t>{10, 16, 16, 3});
  CHECK(clips[0].frames.to(torch::kFloat32).std().item<float>() > 10.0f);
  const SafeTensorsFile file = SafeTensorsFile::Load(out / "bars.safetensors");
  CHECK(file.metadata().at("original_size") == "96x72");

  // A second run keeps the clip; a bad argument fails with a message.
  const test::CommandResult second = test::RunCommand(run);
  REQUIRE(second.exit_code == 0);
  CHECK(Contains(second.out, "bars: kept"));
  CHECK(LoadClips(out).size() == 1);
  // Other settings make the kept file stale: it is decoded again and the index follows.
  const std::string smaller = "'" + script + "' --out '" + out.string() + "' --size 8 --frames 12 --fps 5 --source '" +
                              video.string() + "'";
  const test::CommandResult third = test::RunCommand(smaller);
  REQUIRE(third.exit_code == 0);
  CHECK(Contains(third.out, "bars: wrote"));
  clips = LoadClips(out);
  REQUIRE(clips.size() == 1);
  CHECK(clips[0].frames.sizes().vec() == std::vector<int64_t>{10, 8, 8, 3});
  const test::CommandResult bad = test::RunCommand("'" + script + "' --size 0 --source '" + video.string() + "'");
  CHECK(bad.exit_code != 0);
  CHECK(Contains(bad.err, "--size must be a positive integer"));
}

}  // namespace
}  // namespace sparsetune
