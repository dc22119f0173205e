#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "core/error.h"
#include "core/json_reader.h"
#include "datasets/tensor_io.h"
#include "evaluators/tiny_vdit.h"
#include "kernels/runtime.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"
#include "train/trainer.h"

using namespace sparsetune;

namespace {

TinyVditConfig Small() {
  TinyVditConfig c;
  c.name = "tiny-vdit/train-test";
  c.frames = 4;
  c.height = 16;
  c.width = 16;
  c.patch = 4;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 16;
  c.steps = 4;
  c.text_tokens = 3;
  c.classes = 3;
  return c;
}

TrainConfig ConfigIn(const test::TempDir& dir, const Json& overrides = Json::object()) {
  Json doc = test::TinyTrainConfig(dir.path());
  for (auto it = overrides.begin(); it != overrides.end(); ++it) doc[it.key()] = it.value();
  SaveJsonFile(dir / "train.json", doc);
  return LoadTrainConfig(dir / "train.json");
}

}  // namespace

TEST_CASE("tiny-vdit: velocity() is the dense runtime's forward, and differentiable", "[train]") {
  torch::manual_seed(11);
  TinyVdit model(Small(), 4);
  const torch::Tensor x = torch::randn({2, 3, 4, 16, 16});
  const torch::Tensor t = torch::rand({2});
  const torch::Tensor labels = torch::tensor({0, 2}, torch::kInt64);
  Runtime dense(Schedule::Dense(model->config().geometry()));
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = model->forward(x, t, labels, dense, 0);
  }
  const torch::Tensor v = model->velocity(x, t, labels);
  REQUIRE(v.sizes() == x.sizes());
  CHECK(torch::allclose(v.detach(), reference, 1e-4, 1e-5));
  v.pow(2).mean().backward();
  for (const auto& item : model->named_parameters()) {
    INFO(item.key());
    REQUIRE(item.value().grad().defined());
    // Every parameter but the prompts of the unused class 1 gets gradient.
    if (item.key() == "prompt") {
      CHECK(item.value().grad()[1].abs().sum().item<double>() == 0.0);
      CHECK(item.value().grad()[2].abs().sum().item<double>() > 0.0);
    } else if (item.key() != "class_embed.weight") {
      CHECK(item.value().grad().abs().sum().item<double>() > 0.0);
    }
  }
}

TEST_CASE("tiny-vdit: weights saved as float16 load back", "[train]") {
  test::TempDir dir;
  TinyVdit a(Small(), 1);
  a->SaveWeights(dir / "w.safetensors", torch::kFloat16, {{"note", "x"}});
  std::map<std::string, std::string> metadata;
  const auto tensors = LoadTensors(dir / "w.safetensors", &metadata);
  CHECK(tensors.at("patch_embed.weight").scalar_type() == torch::kFloat16);
  CHECK(metadata.at("note") == "x");
  TinyVdit b(Small(), 2);
  b->LoadWeights(dir / "w.safetensors");
  CHECK(torch::allclose(a->patch_embed->weight, b->patch_embed->weight, 1e-3, 1e-3));
  CHECK(!torch::equal(a->patch_embed->weight, b->patch_embed->weight));  // fp16 rounding
}

TEST_CASE("train: bad data and a missing checkpoint are input errors", "[train]") {
  test::TempDir dir;
  test::WriteProceduralClips(dir / "clips");
  // 40 frames with half held out leave 20 frames a side: enough for 8-frame windows...
  REQUIRE_NOTHROW(ConfigIn(dir, {{"heldout_fraction", 0.5}}));
  // ...but a missing clips folder, or resuming with no checkpoint, is refused before training.
  REQUIRE_THROWS_AS(Train(ConfigIn(dir, {{"clips", (dir / "none").string()}}), TrainOptions{}),
                    InputError);
  TrainOptions resume;
  resume.resume = true;
  REQUIRE_THROWS_AS(Train(ConfigIn(dir), resume), InputError);
  // Clips too short for a held-out window of the preset's 8 frames.
  test::TempDir short_dir;
  std::filesystem::create_directories(short_dir / "clips");
  SaveTensors(short_dir / "clips" / "a.safetensors",
              {{"frames", torch::randint(0, 256, {12, 32, 32, 3}, torch::kUInt8)}});
  SaveJsonFile(short_dir / "clips" / "index.json",
               Json{{"version", 1},
                    {"clips", Json::array({{{"name", "a"}, {"file", "a.safetensors"},
                                            {"class_id", 0}, {"frames", 12}, {"height", 32},
                                            {"width", 32}, {"fps", 10}}})}});
  REQUIRE_THROWS_WITH(Train(ConfigIn(short_dir), TrainOptions{}),
                      (short_dir / "train.json").string() +
                          ": clip 'a' (12 frames): too short for 8-frame windows in both the "
                          "training part and the held-out part (field 'heldout_fraction')");
}

// Two short cpu-tiny trainings on CPU (4 steps; ~10-30 s on 2 cores with the validation passes).
TEST_CASE("train: cpu-tiny trains on CPU, ships fp16 weights + card; resume is exact",
          "[train][slow]") {
  test::TempDir dir;
  test::WriteProceduralClips(dir / "clips");
  // Stills and pans on, so the exact resume covers their draws and per-frame crops too.
  const TrainConfig config = ConfigIn(dir, {{"image_fraction", 0.5}, {"pan_fraction", 0.5}});
  std::vector<std::string> lines;
  TrainOptions options;
  options.command = "sparsetune train test.json";
  options.progress = [&](const std::string& line) { lines.push_back(line); };
  const TrainResult a = Train(config, options);
  CHECK(a.steps == 4);
  CHECK(!a.time_limited);
  CHECK(std::isfinite(a.train_loss));
  CHECK(a.heldout_loss > 0);
  // adaLN-Zero start predicts zero velocity: loss = E|e - x0|^2 = 1 + E x0^2 > 1.
  CHECK(a.untrained_heldout_loss > 1.0);
  REQUIRE(a.heldout_history.size() >= 3);  // step 0, step 2, the end
  CHECK(a.heldout_history.front().first == 0);
  CHECK(a.heldout_history.back().first == 4);
  bool progress_line = false;
  for (const auto& l : lines) progress_line |= l.find("it/s  ETA") != std::string::npos;
  CHECK(progress_line);

  REQUIRE(std::filesystem::exists(dir / "models" / "tiny.safetensors"));
  TinyVdit loaded(TinyVditConfig::Preset("cpu-tiny"), 9);
  REQUIRE_NOTHROW(loaded->LoadWeights(dir / "models" / "tiny.safetensors"));
  const Json card = LoadJsonFile(dir / "models" / "tiny.json");
  CHECK(card.at("training").at("steps") == 4);
  CHECK(card.at("loss").at("heldout_ema").get<double>() == Approx(a.heldout_loss));
  CHECK(card.at("command") == "sparsetune train test.json");
  REQUIRE(std::filesystem::exists(dir / "models" / "tiny.md"));

  // The same run split in two (stop at step 2, resume) gives the same weights.
  TrainConfig split = config;
  split.out = dir / "split";
  split.checkpoint_dir = dir / "ckpt-split";
  TrainOptions first;
  first.stop_at = 2;
  CHECK(Train(split, first).steps == 2);
  TrainOptions second;
  second.resume = true;
  const TrainResult b = Train(split, second);
  CHECK(b.steps == 4);
  CHECK(b.untrained_heldout_loss == Approx(a.untrained_heldout_loss));
  const auto wa = LoadTensors(dir / "models" / "tiny.safetensors");
  const auto wb = LoadTensors(dir / "split" / "tiny.safetensors");
  for (const auto& [name, tensor] : wa) {
    INFO(name);
    CHECK(torch::equal(tensor, wb.at(name)));
  }
  CHECK(b.heldout_loss == Approx(a.heldout_loss).epsilon(1e-6));
}
