#include "evaluators/workload.h"

#include <cmath>

#include "core/error.h"
#include "evaluators/shape_workload.h"
#include "evaluators/tiny_vdit_workload.h"
#include "evaluators/trace_workload.h"
#include "metrics/metrics.h"

#if __has_include(<torch/cuda.h>)
#include <torch/cuda.h>
#endif

namespace sparsetune {

void Workload::synchronize() const {
  if (options_.device().is_cuda()) torch::cuda::synchronize();
}

torch::TensorOptions TensorOptionsFor(const DeviceConfig& device) {
  torch::TensorOptions options;
  if (device.device == "cuda") {
    if (!torch::cuda::is_available()) {
      throw InputError("device.device: \"cuda\" was asked for but no CUDA device is available");
    }
    options = options.device(torch::kCUDA);
  }
  if (device.dtype == "bfloat16") return options.dtype(torch::kBFloat16);
  if (device.dtype == "float16") return options.dtype(torch::kFloat16);
  return options.dtype(torch::kFloat32);
}

std::unique_ptr<Workload> MakeWorkload(const JobConfig& config) {
  const WorkloadConfig& w = config.workload;
  const torch::TensorOptions options = TensorOptionsFor(config.device);
  if (w.kind == "tiny-vdit") {
    TinyVditConfig model = TinyVditConfig::Preset(w.preset);
    if (w.steps > 0) model.steps = w.steps;
    return std::make_unique<TinyVditWorkload>(model, w.init_seed, w.weights, options);
  }
  if (w.kind == "trace") {
    if (!w.trace) throw InputError(config.source.string() + ": field 'workload.trace': missing");
    return std::make_unique<TraceWorkload>(*w.trace, options);
  }
  if (w.kind == "shape") {
    return std::make_unique<ShapeWorkload>(ShapeGeometry(w.shape, w.shape_layers, w.shape_steps),
                                           options);
  }
  throw InputError(config.source.string() + ": field 'workload.kind': unknown kind '" + w.kind +
                   "'");
}

torch::Tensor RunAttentionCall(Runtime& runtime, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, int64_t step, int64_t layer) {
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3);
  const TokenSelection sel = runtime.select_tokens(step, layer, b);
  torch::Tensor q_sel = q;
  if (!sel.all()) {
    q_sel = q.gather(2, sel.index.view({b, 1, sel.count(), 1}).expand({b, h, sel.count(), d}));
  }
  const torch::Tensor o = runtime.attention(q_sel, k, v, step, layer, &sel);
  const torch::Tensor update = o.transpose(1, 2).reshape({b, sel.count(), h * d});
  return runtime.complete_update(step, layer, sel, update).view({b, n, h, d}).transpose(1, 2);
}

Quality CompareAttentionOutputs(const torch::Tensor& dense, const torch::Tensor& output) {
  torch::NoGradGuard no_grad;
  // Scored on the CPU in float64 (the per-head statistics read tensors through accessors), so
  // scores are the same whatever device produced the outputs.
  const torch::Tensor ref = dense.to(torch::kCPU, torch::kFloat64);
  const torch::Tensor test = output.to(torch::kCPU, torch::kFloat64);
  if (!torch::isfinite(test).all().item<bool>()) {
    throw ShapeError("attention outputs hold NaN or Inf");
  }
  double range = (ref.max() - ref.min()).item<double>();
  if (!(range > 0)) range = 1.0;
  Quality q;
  q.psnr = Psnr(ref, test, range);
  q.ssim = std::nan("");
  const int64_t heads = ref.size(-3);
  const torch::Tensor r4 = ref.reshape({-1, heads, ref.size(-2), ref.size(-1)});
  const torch::Tensor t4 = test.reshape({-1, heads, test.size(-2), test.size(-1)});
  Json rel = Json::array();
  Json cosine = Json::array();
  for (const AttentionError& e : CompareAttentionPerHead(r4, t4)) {
    rel.push_back(e.rel_l2);
    cosine.push_back(e.cosine);
  }
  q.extra["head_rel_l2"] = rel;
  q.extra["head_cosine"] = cosine;
  q.extra["data_range"] = range;
  return q;
}

}  // namespace sparsetune
