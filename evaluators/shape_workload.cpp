#include "evaluators/shape_workload.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"

namespace sparsetune {

ModelGeometry ShapeGeometry(const std::string& shape, int64_t layers, int64_t steps) {
  ModelGeometry g;
  g.name = shape;
  g.layers = layers;
  g.steps = steps;
  g.head_dim = 128;
  // Head counts, grids, text tokens and RoPE splits from the models' code and configs
  // (docs/workloads.md, "shape").
  if (shape == "wan2.1-1.3b-480p") {
    g.heads = 12;
    g.grid = {21, 30, 52};
    g.text_tokens = 0;  // text enters through cross-attention
    g.text_position = TextPosition::kNone;
    g.rope_split = RopeSplitFor(128);
  } else if (shape == "hunyuan-720p") {
    g.heads = 24;
    g.grid = {33, 45, 80};
    g.text_tokens = 256;
    g.text_position = TextPosition::kBack;
    g.rope_split = {16, 56, 56};
  } else if (shape == "cogvideox-5b") {
    g.heads = 48;
    g.head_dim = 64;
    g.grid = {13, 30, 45};
    g.text_tokens = 226;
    g.text_position = TextPosition::kFront;
    g.rope_split = {16, 24, 24};
  } else {
    throw InputError("shape workload: unknown shape '" + shape +
                     "' (wan2.1-1.3b-480p, hunyuan-720p, cogvideox-5b)");
  }
  return g;
}

ShapeWorkload::ShapeWorkload(ModelGeometry geometry, torch::TensorOptions options)
    : Workload(options), geometry_(std::move(geometry)) {}

void ShapeWorkload::prepare(uint64_t seed) {
  if (prepared_ && seed == seed_) return;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::vector<int64_t> shape = {1, geometry_.heads, geometry_.tokens(), geometry_.head_dim};
  auto draw = [&] { return torch::randn(shape, gen, torch::kFloat32).to(options_); };
  q_ = draw();
  k_ = draw();
  v_ = draw();
  prepared_ = true;
  seed_ = seed;
}

torch::Tensor ShapeWorkload::run(const SampleSpec& sample, Runtime& runtime) {
  torch::NoGradGuard no_grad;
  prepare(sample.seed);
  runtime.reset();
  torch::Tensor out;
  for (int64_t step = 0; step < geometry_.steps; ++step) {
    for (int64_t layer = 0; layer < geometry_.layers; ++layer) {
      out = RunAttentionCall(runtime, q_, k_, v_, step, layer);
    }
  }
  return out;
}

Quality ShapeWorkload::compare(const torch::Tensor& dense, const torch::Tensor& output) const {
  return CompareAttentionOutputs(dense, output);
}

std::vector<int64_t> ShapeWorkload::capture_steps() const { return {geometry_.steps - 1}; }

std::vector<CapturedCall> ShapeWorkload::capture(const SampleSpec& sample,
                                                 const std::vector<int64_t>& steps) {
  prepare(sample.seed);
  std::vector<CapturedCall> calls;
  for (int64_t step : steps) {
    for (int64_t layer = 0; layer < geometry_.layers; ++layer) {
      calls.push_back(CapturedCall{step, layer, q_, k_, v_});
    }
  }
  return calls;
}

}  // namespace sparsetune
