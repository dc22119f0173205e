// [cuda] tests: the runtime, the tiny vDiT and the Evaluator on a CUDA device in bfloat16,
// against the CPU float32 path on the same inputs. Without a CUDA device every test says so with
// a visible WARN and returns (the CPU suite stays meaningful everywhere).
//
// Accuracy rule (as FlashAttention's tests state it): the CUDA bf16 result may be off a float32
// reference by at most twice what a naive bf16 implementation is off the same reference, plus a
// small epsilon. The naive implementation here is dense attention with q·k, softmax and p·v each
// rounded to bf16; its relative L2 error on the same inputs is the yardstick. Inputs are rounded
// to bf16 once, so CPU and CUDA see identical values and only the arithmetic differs.
#include <cmath>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "evaluators/profile.h"
#include "evaluators/tiny_vdit_workload.h"
#include "evaluators/workload.h"
#include "kernels/block_attention.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

namespace sparsetune::test {
namespace {

bool CudaOrSkip() {
  if (torch::cuda::is_available()) return true;
  WARN("skipped: no CUDA device");
  return false;
}

// 4x8x8 video tokens + 8 text tokens in front, 2 heads x 64, 1 layer, 6 steps.
ModelGeometry CudaGeometry() {
  ModelGeometry g;
  g.name = "cuda-test";
  g.layers = 1;
  g.heads = 2;
  g.head_dim = 64;
  g.grid = {4, 8, 8};
  g.text_tokens = 8;
  g.text_position = TextPosition::kFront;
  g.steps = 6;
  g.rope_split = RopeSplitFor(64);
  return g;
}

Schedule UniformFor(const ModelGeometry& g, const HeadPattern& p) {
  Schedule s = Schedule::Dense(g);
  s.block_size = 32;
  s.token_order.kind = TokenOrderKind::kTiles;
  s.token_order.tile = {1, 4, 4};
  s.dense_warmup_steps = 1;
  s.heads.assign(static_cast<size_t>(g.layers), std::vector<HeadPattern>(static_cast<size_t>(g.heads), p));
  return s;
}

HeadPattern MakePattern(PatternKind kind, double density) {
  HeadPattern p;
  p.pattern = kind;
  p.density = density;
  p.keep = density;
  p.mask_refresh = 2;
  p.arm_refresh = 2;
  return p;
}


// Relative error of naive dense bf16 attention vs float32 dense attention on the same inputs.
double NaiveBf16Error(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const torch::Tensor ref =
      torch::matmul(torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1), v);
  const torch::Tensor qb = q.to(torch::kBFloat16), kb = k.to(torch::kBFloat16),
                      vb = v.to(torch::kBFloat16);
  const torch::Tensor s = torch::matmul(qb, kb.transpose(-2, -1)) * scale;
  const torch::Tensor p = torch::softmax(s, -1).to(torch::kBFloat16);
  return RelL2(torch::matmul(p, vb), ref);
}

// Runs `schedule` over every step of one layer as a DiT block would (token selection, attention,
// cached rows merged back), on `device` in `dtype`; returns each step's output as float32 CPU.
std::vector<torch::Tensor> RunSteps(const Schedule& schedule, const torch::Tensor& q,
                                    const torch::Tensor& k, const torch::Tensor& v,
                                    torch::Device device, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  Runtime runtime(schedule);
  const auto opts = torch::TensorOptions().device(device).dtype(dtype);
  const torch::Tensor qd = q.to(opts), kd = k.to(opts), vd = v.to(opts);
  std::vector<torch::Tensor> outs;
  for (int64_t step = 0; step < schedule.model.steps; ++step) {
    // Small per-step drift, as between denoising steps.
    const double drift = 0.02 * static_cast<double>(step);
    const torch::Tensor qs = qd * (1.0 + drift), ks = kd * (1.0 - drift);
    outs.push_back(RunAttentionCall(runtime, qs, ks, vd, step, 0).to(torch::kCPU, torch::kFloat32));
  }
  return outs;
}

// The rule at every step of `schedule`, inputs from `seed`.
void CheckAgainstCpu(const std::string& what, const Schedule& schedule, uint64_t seed) {
  const ModelGeometry& g = schedule.model;
  const torch::Tensor q = SmoothInput(g, seed), k = SmoothInput(g, seed + 1),
                      v = SmoothInput(g, seed + 2);
  const double naive = NaiveBf16Error(q, k, v);
  const std::vector<torch::Tensor> ref = RunSteps(schedule, q, k, v, torch::kCPU, torch::kFloat32);
  const std::vector<torch::Tensor> gpu =
      RunSteps(schedule, q, k, v, torch::Device(torch::kCUDA), torch::kBFloat16);
  REQUIRE(ref.size() == gpu.size());
  for (size_t step = 0; step < ref.size(); ++step) {
    INFO(what << " step " << step << ": naive bf16 rel error " << naive);
    REQUIRE(torch::isfinite(gpu[step]).all().item<bool>());
    CHECK(RelL2(gpu[step], ref[step]) <= 2 * naive + 1e-3);
  }
}

TEST_CASE("CUDA bf16 runtime matches the CPU float32 runtime within the bf16 error rule",
          "[cuda]") {
  if (!CudaOrSkip()) return;
  const ModelGeometry g = CudaGeometry();
  SECTION("dense") { CheckAgainstCpu("dense", UniformFor(g, HeadPattern{}), 11); }
  SECTION("block_sparse") {
    CheckAgainstCpu("block_sparse", UniformFor(g, MakePattern(PatternKind::kBlockSparse, 0.3)),
                    12);
  }
  SECTION("spatial") {
    CheckAgainstCpu("spatial", UniformFor(g, MakePattern(PatternKind::kSpatial, 0.4)), 13);
  }
  SECTION("temporal") {
    CheckAgainstCpu("temporal", UniformFor(g, MakePattern(PatternKind::kTemporal, 0.4)), 14);
  }
  SECTION("textural") {
    CheckAgainstCpu("textural", UniformFor(g, MakePattern(PatternKind::kTextural, 0.4)), 15);
  }
  SECTION("auto (ARM)") {
    CheckAgainstCpu("auto", UniformFor(g, MakePattern(PatternKind::kAuto, 0.25)), 16);
  }
  SECTION("Astraea token budget") {
    Schedule s = UniformFor(g, HeadPattern{});
    s.token_budget = {1.0, 1.0, 0.5, 0.5, 0.6, 0.5};
    CheckAgainstCpu("astraea", s, 17);
  }
  SECTION("TimeRipple reuse") {
    Schedule s = UniformFor(g, HeadPattern{});
    s.reuse.enabled = true;
    s.reuse.threshold = {2.0, 0.9, 0.9, 0.8, 0.8, 0.8};
    CheckAgainstCpu("timeripple", s, 18);
  }
}

// Blocks of 64 tokens with 1x8x8 tiles: every block but the text one is full, so sparse heads on
// CUDA run through the block-sparse flash kernel (kernels/cuda) rather than MaskedAttention.
Schedule KernelBlocksFor(const ModelGeometry& g, const HeadPattern& p) {
  Schedule s = UniformFor(g, p);
  s.block_size = 64;
  s.token_order.tile = {1, 8, 8};
  return s;
}

TEST_CASE("CUDA block-sparse kernel path matches the CPU runtime within the bf16 error rule",
          "[cuda]") {
  if (!CudaOrSkip()) return;
  ModelGeometry g = CudaGeometry();
  SECTION("block_sparse, text front") {
    CheckAgainstCpu("kernel block_sparse",
                    KernelBlocksFor(g, MakePattern(PatternKind::kBlockSparse, 0.3)), 21);
  }
  SECTION("spatial, text back") {
    g.text_position = TextPosition::kBack;
    CheckAgainstCpu("kernel spatial", KernelBlocksFor(g, MakePattern(PatternKind::kSpatial, 0.4)),
                    22);
  }
  SECTION("mixed dense and sparse heads") {
    Schedule s = KernelBlocksFor(g, MakePattern(PatternKind::kTemporal, 0.4));
    s.heads[0][0] = HeadPattern{};
    CheckAgainstCpu("kernel mixed", s, 23);
  }
  SECTION("block_sparse with a token budget (partial selections)") {
    Schedule s = KernelBlocksFor(g, MakePattern(PatternKind::kBlockSparse, 0.5));
    s.token_budget = {1.0, 1.0, 0.5, 0.6, 0.5, 1.0};
    CheckAgainstCpu("kernel astraea", s, 24);
  }
}

TEST_CASE("CUDA dense attention's LSE is the natural-log float32 [B, H, N] of its scores",
          "[cuda]") {
  if (!CudaOrSkip()) return;
  torch::NoGradGuard no_grad;
  torch::manual_seed(31);
  for (const torch::ScalarType dt : {torch::kBFloat16, torch::kHalf}) {
    for (const int64_t d : {64, 128}) {
      INFO("dtype " << c10::toString(dt) << ", D " << d);
      const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dt);
      const torch::Tensor q = torch::randn({2, 3, 300, d}).to(opts);
      const torch::Tensor k = torch::randn({2, 3, 300, d}).to(opts);
      const torch::Tensor v = torch::randn({2, 3, 300, d}).to(opts);
      const AttentionOutput r = DenseAttention(q, k, v, /*need_lse=*/true);
      REQUIRE(r.lse.defined());
      CHECK(r.lse.scalar_type() == torch::kFloat32);
      CHECK(r.lse.sizes() == torch::IntArrayRef({2, 3, 300}));
      CHECK(r.lse.is_cuda());
      // Explicit float32 on the same rounded inputs.
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      const torch::Tensor s =
          torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(2, 3)) * scale;
      const torch::Tensor ref_lse = s.logsumexp(-1);
      const torch::Tensor ref_out = torch::matmul(torch::softmax(s, -1), v.to(torch::kFloat32));
      // The inputs are exact in float32 and the kernels accumulate q·k in float32: the LSE differs
      // by summation order only (log2 units or a missing scale would be off by O(1)).
      CHECK((r.lse - ref_lse).abs().max().item<double>() < 1e-2);
      CHECK(RelL2(r.out, ref_out) < 2 * NaiveBf16Error(q.to(torch::kCPU, torch::kFloat32),
                                                       k.to(torch::kCPU, torch::kFloat32),
                                                       v.to(torch::kCPU, torch::kFloat32)) +
                                        1e-3);
      // Without need_lse: the same output, no LSE.
      const AttentionOutput plain = DenseAttention(q, k, v, /*need_lse=*/false);
      CHECK_FALSE(plain.lse.defined());
      CHECK(RelL2(plain.out, r.out) < 1e-2);
    }
  }
}

TEST_CASE("CUDA runtime's ARM picks and work counts agree with the CPU", "[cuda]") {
  if (!CudaOrSkip()) return;
  const ModelGeometry g = CudaGeometry();
  const Schedule s = UniformFor(g, MakePattern(PatternKind::kAuto, 0.25));
  const torch::Tensor q = SmoothInput(g, 21), k = SmoothInput(g, 22), v = SmoothInput(g, 23);
  torch::NoGradGuard no_grad;
  Runtime cpu(s), gpu(s);
  const auto bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  for (int64_t step = 0; step < 3; ++step) {
    cpu.attention(q, k, v, step, 0);
    gpu.attention(q.to(bf16), k.to(bf16), v.to(bf16), step, 0);
  }
  const bool same_picks = cpu.arm_picks(0) == gpu.arm_picks(0);
  CHECK(same_picks);
  CHECK(cpu.stats().pairs_computed == gpu.stats().pairs_computed);
  CHECK(cpu.stats().arm_runs == gpu.stats().arm_runs);
}

// A tiny vDiT with head_dim 64 (the fused kernels' sizes): 4x8x8 tokens, 2 layers, 4 steps.
TinyVditConfig CudaModel() {
  TinyVditConfig c;
  c.name = "tiny-vdit/cuda-test";
  c.frames = 4;
  c.height = 32;
  c.width = 32;
  c.patch = 4;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 64;
  c.steps = 4;
  c.text_tokens = 4;
  c.classes = 3;
  return c;
}

TEST_CASE("tiny vDiT dense on CUDA bf16 reproduces the CPU float32 video above 30 dB", "[cuda]") {
  if (!CudaOrSkip()) return;
  TinyVditWorkload cpu(CudaModel(), 5, std::nullopt, torch::TensorOptions().dtype(torch::kFloat32));
  TinyVditWorkload gpu(CudaModel(), 5, std::nullopt,
                       torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16));
  Runtime r_cpu(Schedule::Dense(cpu.geometry()));
  Runtime r_gpu(Schedule::Dense(gpu.geometry()));
  const SampleSpec sample{1, 42};
  const torch::Tensor a = cpu.run(sample, r_cpu);
  const torch::Tensor b = gpu.run(sample, r_gpu);
  REQUIRE(b.is_cuda());
  // The outputs must differ at all (bf16 arithmetic really ran) and agree closely.
  CHECK(RelL2(b, a) > 0);
  const Quality q = cpu.compare(a, b);
  INFO("PSNR " << q.psnr << " dB, SSIM " << q.ssim);
  CHECK(q.psnr > 30.0);
}

JobConfig CudaJob() {
  Json doc = {{"name", "cuda-test"},
              {"workload",
               {{"kind", "tiny-vdit"},
                {"calibration", {{{"class", 0}, {"seed", 1}}, {{"class", 2}, {"seed", 2}}}}}},
              {"device", {{"device", "cuda"}, {"dtype", "bfloat16"}}},
              {"latency", {{"warmup", 1}, {"repeats", 2}}},
              {"schedule", {{"block_size", 32}, {"tile", {1, 4, 4}}}}};
  return ParseJobConfig(doc, "cuda-test.json", ".");
}

bool HasCategory(const std::vector<KernelTime>& kernels, const std::string& category) {
  for (const KernelTime& k : kernels) {
    if (k.category == category && k.launches > 0 && k.total_ns > 0) return true;
  }
  return false;
}

TEST_CASE("Evaluator on CUDA measures CUPTI device time with a per-kernel breakdown", "[cuda]") {
  if (!CudaOrSkip()) return;
  const JobConfig config = CudaJob();
  Evaluator ev(config, std::make_unique<TinyVditWorkload>(
                           CudaModel(), 5, std::nullopt, TensorOptionsFor(config.device)));
  CHECK(ev.device_name().find("cuda:0") != std::string::npos);

  const EvalResult dense = ev.dense_baseline();
  REQUIRE(dense.ok);
  CHECK(dense.latency_source == "cupti");
  CHECK(dense.latency_ms > 0);
  REQUIRE_FALSE(dense.kernels.empty());
  CHECK(HasCategory(dense.kernels, "attention"));
  CHECK(dense.extra.at("kernel_categories").contains("attention"));

  Schedule s = ev.base_schedule();
  s.dense_warmup_steps = 1;
  for (auto& layer : s.heads) {
    for (auto& head : layer) head = MakePattern(PatternKind::kBlockSparse, 0.3);
  }
  const EvalResult r = ev.evaluate_schedule(s);
  INFO(r.error);
  REQUIRE(r.ok);
  CHECK(r.latency_source == "cupti");
  CHECK(std::isfinite(r.psnr));
  CHECK(r.density < 1.0);
  CHECK(HasCategory(r.kernels, "attention"));
}

TEST_CASE("profile on CUDA reports CUPTI records for the trace", "[cuda]") {
  if (!CudaOrSkip()) return;
  const JobConfig config = CudaJob();
  Evaluator ev(config, std::make_unique<TinyVditWorkload>(
                           CudaModel(), 5, std::nullopt, TensorOptionsFor(config.device)));
  ProfileOptions options;
  options.warmup = 1;
  options.repeats = 2;
  const ProfileReport p = ProfileGeneration(ev, options);
  CHECK(p.measurement.source == "cupti");
  CHECK(p.fallback.empty());
  REQUIRE(p.measurement.repeat_ns.size() == 2);
  CHECK(p.measurement.records.size() > 10);
  const Json j = ProfileToJson(p, 5);
  CHECK(j.at("kernels").size() == 5);
  CHECK(ChromeTrace(p.measurement.records, "test").dump().find("\"ph\":\"X\"") !=
        std::string::npos);
}

}  // namespace
}  // namespace sparsetune::test
