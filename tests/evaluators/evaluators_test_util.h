// Small geometries and configs shared by the evaluator tests, so every test runs in well under a
// second: grid 4x4x4 (16x16 pixel frames, patch 4), 2 layers, 2 heads x 16, 4 steps, 4 prompt
// tokens.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "evaluators/tiny_vdit.h"
#include "evaluators/tiny_vdit_workload.h"
#include "kernels/schedule.h"

namespace sparsetune::test {

inline TinyVditConfig SmallModel() {
  TinyVditConfig c;
  c.name = "tiny-vdit/test";
  c.frames = 4;
  c.height = 16;
  c.width = 16;
  c.patch = 4;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 16;
  c.steps = 4;
  c.text_tokens = 4;
  c.classes = 3;
  return c;
}

// A job config for the small model: 2 calibration samples, 1 held-out, one timed repeat.
inline JobConfig SmallJob(const std::string& kind = "tiny-vdit") {
  Json doc = {{"name", "test"},
              {"workload",
               {{"kind", "tiny-vdit"},
                {"calibration", {{{"class", 0}, {"seed", 1}}, {{"class", 2}, {"seed", 2}}}},
                {"heldout", {{{"class", 1}, {"seed", 7}}}}}},
              {"latency", {{"warmup", 0}, {"repeats", 1}}},
              {"schedule", {{"block_size", 16}}}};
  if (kind == "shape") {
    doc["workload"] = {{"kind", "shape"}, {"shape", "cogvideox-5b"}};
  }
  return ParseJobConfig(doc, "test.json", ".");
}

inline std::unique_ptr<Workload> SmallWorkload(uint64_t init_seed = 3) {
  return std::make_unique<TinyVditWorkload>(SmallModel(), init_seed, std::nullopt,
                                            torch::TensorOptions().dtype(torch::kFloat32));
}

// A schedule for `geometry` with block size 16 and the given head pattern everywhere.
inline Schedule UniformSchedule(const ModelGeometry& geometry, const HeadPattern& pattern,
                                int64_t warmup) {
  Schedule s = Schedule::Dense(geometry);
  s.block_size = 16;
  s.dense_warmup_steps = warmup;
  for (auto& layer : s.heads) {
    for (auto& head : layer) head = pattern;
  }
  return s;
}

// The message of the InputError `f` throws ("" when it throws none).
inline std::string InputErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace sparsetune::test
