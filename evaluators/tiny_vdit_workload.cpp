#include "evaluators/tiny_vdit_workload.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "metrics/metrics.h"

namespace sparsetune {

TinyVditWorkload::TinyVditWorkload(const TinyVditConfig& config, uint64_t init_seed,
                                   const std::optional<std::filesystem::path>& weights,
                                   torch::TensorOptions options)
    : Workload(options), model_(config, init_seed), geometry_(config.geometry()) {
  if (weights) model_->LoadWeights(*weights);
  model_->to(options.device(), options.dtype().toScalarType());
  model_->eval();
}

torch::Tensor TinyVditWorkload::run(const SampleSpec& sample, Runtime& runtime) {
  return SampleVideo(model_, SampleRequest{sample.class_id, sample.seed}, runtime);
}

Quality TinyVditWorkload::compare(const torch::Tensor& dense, const torch::Tensor& output) const {
  if (!torch::isfinite(output).all().item<bool>()) {
    throw ShapeError("generated video holds NaN or Inf");
  }
  // [1, 3, T, H, W] -> frames [T, 3, H, W]; the metrics run on the CPU in float64 whatever the
  // device, so scores do not depend on where the video was generated.
  const VideoQuality v =
      CompareVideos(dense.squeeze(0).transpose(0, 1).to(torch::kCPU, torch::kFloat64),
                    output.squeeze(0).transpose(0, 1).to(torch::kCPU, torch::kFloat64));
  Quality q;
  q.psnr = v.psnr;
  q.ssim = v.ssim;
  q.extra["frame_psnr"] = v.frame_psnr;
  return q;
}

std::vector<int64_t> TinyVditWorkload::capture_steps() const {
  const int64_t s = geometry_.steps;
  std::set<int64_t> steps = {s / 4, s / 2, (3 * s) / 4};
  return {steps.begin(), steps.end()};
}

std::vector<CapturedCall> TinyVditWorkload::capture(const SampleSpec& sample,
                                                    const std::vector<int64_t>& steps) {
  std::vector<CapturedCall> calls;
  const AttentionObserver observer = [&](int64_t step, int64_t layer, const torch::Tensor& q,
                                         const torch::Tensor& k, const torch::Tensor& v) {
    if (std::find(steps.begin(), steps.end(), step) == steps.end()) return;
    calls.push_back(CapturedCall{step, layer, q.clone(), k.clone(), v.clone()});
  };
  Runtime dense(Schedule::Dense(geometry_));
  SampleVideo(model_, SampleRequest{sample.class_id, sample.seed}, dense, &observer);
  return calls;
}

}  // namespace sparsetune
