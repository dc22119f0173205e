#include <cmath>

#include "datasets/tensor_io.h"
#include "evaluators/tiny_vdit.h"
#include "tests/catch.h"
#include "tests/evaluators/evaluators_test_util.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

using test::SmallModel;

torch::Tensor Generate(TinyVdit& model, int64_t class_id, uint64_t seed) {
  Runtime runtime(Schedule::Dense(model->config().geometry()));
  return SampleVideo(model, SampleRequest{class_id, seed}, runtime);
}

TEST_CASE("presets have the documented geometry", "[evaluators]") {
  const ModelGeometry tiny = TinyVditConfig::Preset("cpu-tiny").geometry();
  CHECK(tiny.grid == std::array<int64_t, 3>{8, 8, 8});
  CHECK(tiny.layers == 6);
  CHECK(tiny.heads == 4);
  CHECK(tiny.head_dim == 32);
  CHECK(tiny.steps == 16);
  CHECK(tiny.text_tokens == 4);
  CHECK(tiny.text_position == TextPosition::kFront);
  CHECK(tiny.rope_split == RopeSplitFor(32));
  const ModelGeometry small = TinyVditConfig::Preset("gpu-small").geometry();
  CHECK(small.video_tokens() == 16384);
  CHECK(small.layers == 6);
  CHECK(small.heads == 3);
  CHECK(small.head_dim == 64);
  CHECK(small.steps == 30);
  REQUIRE_THROWS_AS(TinyVditConfig::Preset("huge"), InputError);
}

TEST_CASE("the sampler is deterministic per seed and independent of earlier work",
          "[evaluators]") {
  TinyVdit model(SmallModel(), 5);
  const torch::Tensor a = Generate(model, 1, 42);
  REQUIRE(a.sizes() == torch::IntArrayRef({1, 3, 4, 16, 16}));
  CHECK(a.min().item<double>() >= 0.0);
  CHECK(a.max().item<double>() <= 1.0);
  // Draw from the global generator in between: the sample must not change.
  (void)torch::randn({100});
  (void)Generate(model, 2, 7);
  const torch::Tensor b = Generate(model, 1, 42);
  CHECK(torch::equal(a, b));
  CHECK_FALSE(torch::equal(a, Generate(model, 1, 43)));
  CHECK_FALSE(torch::equal(a, Generate(model, 2, 42)));
  // Same init seed, same model.
  TinyVdit again(SmallModel(), 5);
  CHECK(torch::equal(a, Generate(again, 1, 42)));
  TinyVdit other(SmallModel(), 6);
  CHECK_FALSE(torch::equal(a, Generate(other, 1, 42)));
}

TEST_CASE("an out-of-range class is rejected", "[evaluators]") {
  TinyVdit model(SmallModel(), 5);
  const std::string msg = test::InputErrorOf([&] { Generate(model, 3, 1); });
  CHECK(msg.find("class 3 out of range") != std::string::npos);
}

TEST_CASE("RoPE rotates video tokens by position and leaves text tokens alone", "[evaluators]") {
  const ModelGeometry g = SmallModel().geometry();
  const auto [cos, sin] = RopeTables(g, 10000);
  REQUIRE(cos.sizes() == torch::IntArrayRef({68, 8}));
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({1, 2, 68, 16});
  const torch::Tensor y = ApplyRope(x, cos, sin);
  CHECK(torch::allclose(y.narrow(2, 0, 4), x.narrow(2, 0, 4)));
  CHECK_FALSE(torch::allclose(y.narrow(2, 5, 1), x.narrow(2, 5, 1)));
  CHECK(torch::allclose(y.norm(2, -1), x.norm(2, -1), 1e-5, 1e-5));
  // Relative positions: q at token a and k at token b score the same as at a + shift, b + shift
  // (shift by one frame = 16 video tokens).
  const torch::Tensor q = torch::randn({16});
  const torch::Tensor k = torch::randn({16});
  auto score = [&](int64_t a, int64_t b) {
    const torch::Tensor qa = ApplyRope(q.view({1, 1, 1, 16}), cos[a], sin[a]);
    const torch::Tensor kb = ApplyRope(k.view({1, 1, 1, 16}), cos[b], sin[b]);
    return (qa * kb).sum().item<double>();
  };
  CHECK(score(4 + 1, 4 + 6) == Approx(score(4 + 17, 4 + 22)).epsilon(1e-4));
}

TEST_CASE("weights round-trip through safetensors", "[evaluators]") {
  test::TempDir dir;
  TinyVdit a(SmallModel(), 11);
  a->SaveWeights(dir / "w.safetensors");
  TinyVdit b(SmallModel(), 12);
  CHECK_FALSE(torch::equal(Generate(a, 0, 3), Generate(b, 0, 3)));
  b->LoadWeights(dir / "w.safetensors");
  for (const auto& item : a->named_parameters()) {
    CHECK(torch::equal(item.value(), b->named_parameters()[item.key()]));
  }
  CHECK(torch::equal(Generate(a, 0, 3), Generate(b, 0, 3)));
}

TEST_CASE("mismatched or incomplete weights are rejected naming the tensor", "[evaluators]") {
  test::TempDir dir;
  TinyVditConfig wide = SmallModel();
  wide.head_dim = 24;
  TinyVdit(wide, 1)->SaveWeights(dir / "wide.safetensors");
  TinyVdit model(SmallModel(), 1);
  std::string msg = test::InputErrorOf([&] { model->LoadWeights(dir / "wide.safetensors"); });
  CHECK(msg.find("wide.safetensors: tensor '") != std::string::npos);
  CHECK(msg.find("has shape") != std::string::npos);

  TinyVdit(SmallModel(), 1)->SaveWeights(dir / "ok.safetensors");
  std::map<std::string, torch::Tensor> tensors = LoadTensors(dir / "ok.safetensors");
  tensors.erase("blocks.1.q_norm");
  SaveTensors(dir / "missing.safetensors", tensors);
  msg = test::InputErrorOf([&] { model->LoadWeights(dir / "missing.safetensors"); });
  CHECK(msg.find("tensor 'blocks.1.q_norm' is missing") != std::string::npos);

  tensors = LoadTensors(dir / "ok.safetensors");
  tensors["extra.weight"] = torch::ones({2});
  SaveTensors(dir / "extra.safetensors", tensors);
  msg = test::InputErrorOf([&] { model->LoadWeights(dir / "extra.safetensors"); });
  CHECK(msg.find("tensor 'extra.weight' is not a parameter") != std::string::npos);

  REQUIRE_THROWS_AS(model->LoadWeights(dir / "absent.safetensors"), InputError);
}

}  // namespace
}  // namespace sparsetune
