// Workload: what a schedule is evaluated on. Three kinds (docs/workloads.md):
//
//   tiny-vdit  a real video DiT run end to end; output = the generated video, compared by PSNR/SSIM
//   trace      captured q/k/v of a real model's attention calls; output = the attention outputs
//   shape      synthetic q/k/v at a real model's attention shape, for latency
//
// A workload runs one sample at a time under a Runtime (the Evaluator owns the Runtime, the
// dense-baseline cache and the timing). Not thread-safe: one workload per evaluating thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/job_config.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"

namespace sparsetune {

// Quality of one sample's output against the dense output of the same sample.
struct Quality {
  double psnr = 0;              // dB, capped at 100
  double ssim = 0;              // NaN where the output is not an image (trace, shape)
  Json extra = Json::object();  // workload-specific detail (per-head errors, ...)
};

// q, k, v ([B, H, N, D], model token order, after RoPE) of one attention call of a dense run.
struct CapturedCall {
  int64_t step = 0;
  int64_t layer = 0;
  torch::Tensor q, k, v;
};

class Workload {
 public:
  virtual ~Workload() = default;

  // The attention geometry schedules for this workload must carry.
  virtual const ModelGeometry& geometry() const = 0;
  // "tiny-vdit" | "trace" | "shape".
  virtual std::string kind() const = 0;
  // Whether outputs are images, so SSIM means something.
  virtual bool has_ssim() const = 0;

  // Runs `sample` under `runtime` (resets it first) and returns the output compared by compare().
  virtual torch::Tensor run(const SampleSpec& sample, Runtime& runtime) = 0;
  // Quality of `output` against `dense` (both from run() of the same sample). Throws ShapeError
  // when the output holds NaN or Inf.
  virtual Quality compare(const torch::Tensor& dense, const torch::Tensor& output) const = 0;

  // Steps whose attention calls capture() can return (a few, after the early steps).
  virtual std::vector<int64_t> capture_steps() const = 0;
  // q/k/v of every layer's attention call at `steps` of the dense run of `sample`.
  virtual std::vector<CapturedCall> capture(const SampleSpec& sample,
                                            const std::vector<int64_t>& steps) = 0;

  // Waits for queued device work (no-op on CPU); the profiler calls it after each timed run.
  void synchronize() const;
  const torch::TensorOptions& options() const { return options_; }

 protected:
  explicit Workload(torch::TensorOptions options) : options_(options) {}
  torch::TensorOptions options_;  // device and dtype of every tensor the workload makes
};

// Device and dtype of a job's device config; InputError when CUDA is asked for but absent.
torch::TensorOptions TensorOptionsFor(const DeviceConfig& device);

// The workload a job config names.
std::unique_ptr<Workload> MakeWorkload(const JobConfig& config);

// One attention call as a DiT block makes it, for workloads that hold q/k/v directly: the
// runtime's token selection, attention for the selected queries, and the cached outputs of the
// others merged back (Astraea). q, k, v [B, H, N, D]; returns [B, H, N, D].
torch::Tensor RunAttentionCall(Runtime& runtime, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, int64_t step, int64_t layer);

// Quality of attention outputs (any shape whose last three dims are [H, N, D]): PSNR with the
// dense output's max - min as data range, SSIM NaN, per-head rel-L2 and cosine in extra.
Quality CompareAttentionOutputs(const torch::Tensor& dense, const torch::Tensor& output);

}  // namespace sparsetune
