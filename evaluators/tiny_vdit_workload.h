// The tiny-vdit workload: one sample = one generated video (class, noise seed); its output is the
// video [1, 3, T, H, W] in [0, 1], compared with the dense video by per-frame PSNR and SSIM.
#pragma once

#include <filesystem>
#include <optional>

#include "evaluators/tiny_vdit.h"
#include "evaluators/workload.h"

namespace sparsetune {

class TinyVditWorkload : public Workload {
 public:
  // Random initialisation from `init_seed`, or the safetensors `weights` when given.
  TinyVditWorkload(const TinyVditConfig& config, uint64_t init_seed,
                   const std::optional<std::filesystem::path>& weights,
                   torch::TensorOptions options);

  const ModelGeometry& geometry() const override { return geometry_; }
  std::string kind() const override { return "tiny-vdit"; }
  bool has_ssim() const override { return true; }
  torch::Tensor run(const SampleSpec& sample, Runtime& runtime) override;
  Quality compare(const torch::Tensor& dense, const torch::Tensor& output) const override;
  // Three steps spread over the second to last quarter of sampling (past typical warm-ups).
  std::vector<int64_t> capture_steps() const override;
  std::vector<CapturedCall> capture(const SampleSpec& sample,
                                    const std::vector<int64_t>& steps) override;

  TinyVdit& model() { return model_; }

 private:
  TinyVdit model_;
  ModelGeometry geometry_;
};

}  // namespace sparsetune
