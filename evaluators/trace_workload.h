// The trace workload: captured q/k/v of a real model's attention calls (docs/trace-format.md).
//
// A manifest JSON names the model geometry (schedule-v1 "model" object) and every captured call
// (sample, step, layer, safetensors file and the names of its q, k, v tensors [B, H, N, D]).
// One sample = the calls of one captured generation, selected by the config's sample "class";
// they run through the runtime in (step, layer) order and the output is their attention outputs
// stacked [calls, B, H, N, D], compared by CompareAttentionOutputs.
#pragma once

#include <filesystem>
#include <map>

#include "evaluators/workload.h"

namespace sparsetune {

class TraceWorkload : public Workload {
 public:
  // Reads and checks the manifest and every tensor it names; InputError naming the manifest
  // (or the safetensors file) and the field or tensor at fault.
  TraceWorkload(const std::filesystem::path& manifest, torch::TensorOptions options);

  const ModelGeometry& geometry() const override { return geometry_; }
  std::string kind() const override { return "trace"; }
  bool has_ssim() const override { return false; }
  torch::Tensor run(const SampleSpec& sample, Runtime& runtime) override;
  Quality compare(const torch::Tensor& dense, const torch::Tensor& output) const override;
  // Up to three of the captured steps, spread over the captured range.
  std::vector<int64_t> capture_steps() const override;
  std::vector<CapturedCall> capture(const SampleSpec& sample,
                                    const std::vector<int64_t>& steps) override;

  // Captured calls per sample id, in (step, layer) order.
  const std::map<int64_t, std::vector<CapturedCall>>& calls() const { return calls_; }

 private:
  const std::vector<CapturedCall>& calls_of(const SampleSpec& sample) const;
  std::filesystem::path manifest_;
  ModelGeometry geometry_;
  std::map<int64_t, std::vector<CapturedCall>> calls_;
};

}  // namespace sparsetune
