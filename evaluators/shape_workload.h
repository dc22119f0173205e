// The shape workload: synthetic q/k/v at a named real model's attention shape, for latency.
//
// One sample = one set of q, k, v [1, H, N, D] drawn from a normal distribution with a CPU
// generator seeded by the sample's seed (cached, so timed runs do not include drawing them) and
// used by every (step, layer) call. Quality: the attention output of the last call compared with
// the dense one (CompareAttentionOutputs), so a search on a shape still has a signal; SSIM is NaN.
#pragma once

#include <string>

#include "evaluators/workload.h"

namespace sparsetune {

// The geometry of a named shape ("wan2.1-1.3b-480p", "hunyuan-720p", "cogvideox-5b") with
// `layers` attention calls per step and `steps` steps; InputError for an unknown name.
ModelGeometry ShapeGeometry(const std::string& shape, int64_t layers, int64_t steps);

class ShapeWorkload : public Workload {
 public:
  ShapeWorkload(ModelGeometry geometry, torch::TensorOptions options);

  const ModelGeometry& geometry() const override { return geometry_; }
  std::string kind() const override { return "shape"; }
  bool has_ssim() const override { return false; }
  torch::Tensor run(const SampleSpec& sample, Runtime& runtime) override;
  Quality compare(const torch::Tensor& dense, const torch::Tensor& output) const override;
  std::vector<int64_t> capture_steps() const override;
  std::vector<CapturedCall> capture(const SampleSpec& sample,
                                    const std::vector<int64_t>& steps) override;

 private:
  // Draws (or returns the cached) q, k, v of `seed`.
  void prepare(uint64_t seed);
  ModelGeometry geometry_;
  bool prepared_ = false;
  uint64_t seed_ = 0;
  torch::Tensor q_, k_, v_;
};

}  // namespace sparsetune
