#include <filesystem>
#include <fstream>
#include <string>

#include "core/json_reader.h"
#include "evaluators/tiny_vdit.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"

using namespace sparsetune;

namespace {

std::string Cli() { return SPARSETUNE_CLI; }

std::string Quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// A job config for a tiny-vdit cpu-tiny workload with `weights` (may be empty: random init).
void WriteJob(const std::filesystem::path& path, const std::string& weights) {
  Json workload = {{"kind", "tiny-vdit"}, {"preset", "cpu-tiny"}, {"steps", 2},
                   {"calibration", Json::array({{{"class", 0}, {"seed", 1}}})}};
  if (!weights.empty()) workload["weights"] = weights;
  SaveJsonFile(path, Json{{"name", "t"}, {"workload", workload},
                          {"device", {{"device", "cpu"}, {"threads", 1}}}});
}

}  // namespace

TEST_CASE("cli: sample writes a contact sheet PNG of the right size", "[train]") {
  test::TempDir dir;
  WriteJob(dir / "job.json", "");
  const test::CommandResult r = test::RunCommand(Cli() + " sample " + Quote(dir / "job.json") +
                                                 " --class 2 --seed 5 --scale 2 -o " +
                                                 Quote(dir / "s.png"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::ifstream in(dir / "s.png", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 33);
  CHECK(bytes.substr(1, 3) == "PNG");
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
    return v;
  };
  // cpu-tiny: 8 frames of 32x32 at scale 2 with 2-pixel gaps.
  CHECK(be32(16) == 8 * 64 + 7 * 2);
  CHECK(be32(20) == 64);
  // The same class and seed make the same image.
  REQUIRE(test::RunCommand(Cli() + " sample " + Quote(dir / "job.json") +
                           " --class 2 --seed 5 --scale 2 -o " + Quote(dir / "t.png"))
              .exit_code == 0);
  std::ifstream again(dir / "t.png", std::ios::binary);
  CHECK(std::string((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>()) ==
        bytes);
}

TEST_CASE("cli: sample and train reject bad input with exit 2", "[train]") {
  test::TempDir dir;
  WriteJob(dir / "job.json", "");
  const std::string job = Quote(dir / "job.json");
  const std::string png = " -o " + Quote(dir / "x.png");
  CHECK(test::RunCommand(Cli() + " sample " + job + " --class 9 --seed 1" + png).exit_code == 2);
  CHECK(test::RunCommand(Cli() + " sample " + job + " --seed 1" + png).exit_code == 2);
  CHECK(test::RunCommand(Cli() + " sample " + job + " --class 0 --seed 1 --schedule " +
                         Quote(dir / "none.json") + png)
            .exit_code == 2);
  WriteJob(dir / "bad.json", (dir / "missing.safetensors").string());
  CHECK(test::RunCommand(Cli() + " sample " + Quote(dir / "bad.json") + " --class 0 --seed 1" +
                         png)
            .exit_code == 2);
  CHECK(!std::filesystem::exists(dir / "x.png"));
  CHECK(test::RunCommand(Cli() + " train " + Quote(dir / "none.json")).exit_code == 2);
  test::WriteText(dir / "t.json", R"({"name": "x", "preset": "cpu-tiny"})");
  const test::CommandResult r = test::RunCommand(Cli() + " train " + Quote(dir / "t.json"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("'clips'") != std::string::npos);
  CHECK(test::RunCommand(Cli() + " train --help").out.find("--resume") != std::string::npos);
}

TEST_CASE("the shipped job configs name shipped weights that load", "[train]") {
  const std::filesystem::path root = SPARSETUNE_SOURCE_DIR;
  // A job config that names weights names a file of its preset that loads, and every shipped
  // weights file stays small (the repository travels with every device call).
  for (const std::string name : {"default", "gpu-small"}) {
    const Json job = LoadJsonFile(root / "configs" / (name + ".json"));
    if (!job.at("workload").contains("weights")) continue;
    const std::filesystem::path weights =
        (root / "configs" / job.at("workload").at("weights").get<std::string>()).lexically_normal();
    INFO(weights.string());
    REQUIRE(std::filesystem::exists(weights));
    CHECK(std::filesystem::file_size(weights) < 8u * 1000u * 1000u);
    TinyVdit model(TinyVditConfig::Preset(job.at("workload").at("preset").get<std::string>()), 0);
    REQUIRE_NOTHROW(model->LoadWeights(weights));
  }
}
