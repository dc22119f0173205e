#include <string>

#include "core/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "train/train_config.h"

using namespace sparsetune;

namespace {

void Write(const test::TempDir& dir, const std::string& body) {
  test::WriteText(dir / "t.json", body);
}

const char* kMinimal = R"({"name": "x", "preset": "cpu-tiny", "clips": "clips", "out": "models",
  "checkpoint_dir": "ckpt", "steps": 10, "batch": 2, "lr": 0.001)";

}  // namespace

TEST_CASE("train config: the shipped configs read", "[train]") {
  const std::string root = SPARSETUNE_SOURCE_DIR;
  const TrainConfig tiny = LoadTrainConfig(root + "/configs/train-cpu-tiny.json");
  CHECK(tiny.preset == "cpu-tiny");
  CHECK(tiny.device == "cuda");
  CHECK(tiny.clips.filename() == "clips");
  CHECK(tiny.out.lexically_normal().filename() == "models");
  const TrainConfig small = LoadTrainConfig(root + "/configs/train-gpu-small.json");
  CHECK(small.preset == "gpu-small");
  CHECK(small.time_limit_s > 0);
}

TEST_CASE("train config: defaults and relative paths", "[train]") {
  test::TempDir dir;
  Write(dir, std::string(kMinimal) + "}");
  const TrainConfig c = LoadTrainConfig(dir / "t.json");
  CHECK(c.name == "x");
  CHECK(c.steps == 10);
  CHECK(c.batch == 2);
  CHECK(c.lr == Approx(0.001));
  CHECK(c.device == "cpu");
  CHECK(c.frame_strides == std::vector<int64_t>{1});
  CHECK(c.image_fraction == 0.0);
  CHECK(c.pan_fraction == 0.0);
  CHECK(c.clips == dir.path() / "clips");
  CHECK(c.checkpoint_dir == dir.path() / "ckpt");
}

TEST_CASE("train config: bad input names the field", "[train]") {
  test::TempDir dir;
  const std::string file = (dir / "t.json").string();
  Write(dir, std::string(kMinimal) + R"(, "lr_typo": 1})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "crop_min": 0.9, "crop_max": 0.5})");
  REQUIRE_THROWS_WITH(LoadTrainConfig(file), file + ": field 'crop_min': must be <= crop_max");
  Write(dir, std::string(kMinimal) + R"(, "preset": "huge"})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "batch": 0})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "frame_strides": []})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, R"({"preset": "cpu-tiny"})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  REQUIRE_THROWS_AS(LoadTrainConfig(dir / "missing.json"), InputError);
}

TEST_CASE("train config: image_fraction and pan_fraction are read strictly", "[train]") {
  test::TempDir dir;
  const std::string file = (dir / "t.json").string();
  Write(dir, std::string(kMinimal) + R"(, "image_fraction": 0.3, "pan_fraction": 0.25})");
  const TrainConfig c = LoadTrainConfig(file);
  CHECK(c.image_fraction == Approx(0.3));
  CHECK(c.pan_fraction == Approx(0.25));
  Write(dir, std::string(kMinimal) + R"(, "image_fraction": 1})");
  REQUIRE_THROWS_WITH(LoadTrainConfig(file),
                      file + ": field 'image_fraction': must be < 1 (a video model needs video "
                             "windows)");
  Write(dir, std::string(kMinimal) + R"(, "image_fraction": -0.1})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "image_fraction": "half"})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "pan_fraction": 1.5})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
  Write(dir, std::string(kMinimal) + R"(, "pan_fraction": 0.5, "crop_min": 1.0})");
  REQUIRE_THROWS_WITH(LoadTrainConfig(file),
                      file + ": field 'pan_fraction': needs crop_min < 1 (a full-frame crop has "
                             "no room to pan)");
  Write(dir, std::string(kMinimal) + R"(, "image_frac": 0.3})");
  REQUIRE_THROWS_AS(LoadTrainConfig(file), InputError);
}
