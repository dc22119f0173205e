// The Runtime's CUDA paths against the CPU Runtime on the same (bf16-rounded) inputs: reuse steps
// as attention on substituted keys (the default) and through the GPU TimeRipple kernel,
// block_sparse masks from the GPU mask prediction, and the permuted (identity kernel) call
// against the row-index (gather) call. [cuda] cases skip with a
// visible WARN without a device; the block_mask accessor is checked everywhere.
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/layout.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

bool HaveCuda() {
  if (torch::cuda::is_available()) return true;
  WARN("skipped: libtorch sees no CUDA device");
  return false;
}

TokenOrder TilesOrder(int64_t f, int64_t h, int64_t w) {
  TokenOrder o;
  o.kind = TokenOrderKind::kTiles;
  o.tile = {f, h, w};
  return o;
}

// Sets SPARSETUNE_RT_<name> for the scope, then removes it.
class ScopedRuntimeEnv {
 public:
  ScopedRuntimeEnv(const std::string& name, const std::string& value)
      : name_("SPARSETUNE_RT_" + name) {
    setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedRuntimeEnv() { unsetenv(name_.c_str()); }
  ScopedRuntimeEnv(const ScopedRuntimeEnv&) = delete;
  ScopedRuntimeEnv& operator=(const ScopedRuntimeEnv&) = delete;

 private:
  std::string name_;
};

torch::Tensor Bf16Cuda(const torch::Tensor& x) {
  return x.to(torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16));
}

// Reuse schedule over `steps` steps: off at step 0, threshold 0.9 afterwards.
Schedule ReuseSchedule(const ModelGeometry& m, const HeadPattern& p) {
  Schedule s = Uniform(m, p, 32, TilesOrder(1, 4, 4));
  s.reuse.enabled = true;
  s.reuse.threshold.assign(static_cast<size_t>(m.steps), 0.9);
  s.reuse.threshold[0] = 2.0;
  return s;
}

// Runs `s` on the CPU (float32, the oracle) and on CUDA (bf16) for every step on inputs rounded to
// bf16, and compares outputs, work counts and densities step by step. `ripple`: the value of
// SPARSETUNE_RT_RIPPLE on the CUDA side ("" = the default, substituted keys).
void CheckReuseSteps(const Schedule& s, int64_t seed, const std::string& ripple = "") {
  const ModelGeometry& m = s.model;
  const Layout l = BuildLayout(m, s.token_order, s.block_size);
  const int64_t batch = 2;
  const torch::Tensor k = RippleKeys(l, batch, m.heads, m.head_dim, m.rope_split, seed)
                              .to(torch::kBFloat16).to(torch::kFloat32);
  const torch::Tensor q = Rand(seed + 1, {batch, m.heads, l.tokens, m.head_dim})
                              .to(torch::kBFloat16).to(torch::kFloat32);
  const torch::Tensor v = Rand(seed + 2, {batch, m.heads, l.tokens, m.head_dim})
                              .to(torch::kBFloat16).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  Runtime cpu(s), gpu(s);
  int64_t skipped = 0;
  for (int64_t step = 0; step < m.steps; ++step) {
    INFO("step " << step);
    // Queries drift between steps; keys scale (cosines, hence reuse, unchanged).
    const double drift = 1.0 + 0.05 * static_cast<double>(step);
    const torch::Tensor qs = (q * drift).to(torch::kBFloat16).to(torch::kFloat32);
    const torch::Tensor ks = (k * drift).to(torch::kBFloat16).to(torch::kFloat32);
    const torch::Tensor want = cpu.attention(qs, ks, v, step, 0);
    torch::Tensor got;
    if (ripple.empty()) {
      got = gpu.attention(Bf16Cuda(qs), Bf16Cuda(ks), Bf16Cuda(v), step, 0);
    } else {
      const ScopedRuntimeEnv force("RIPPLE", ripple);
      got = gpu.attention(Bf16Cuda(qs), Bf16Cuda(ks), Bf16Cuda(v), step, 0);
    }
    REQUIRE(got.is_cuda());
    CHECK(MaxDiff(got.cpu(), want) < 2e-2);
    CHECK(RelL2(got, want) < 1e-2);
    // Substituted keys decide reuse per token like the oracle; the kernel per tile, which the
    // tile-uniform keys make the same: both skip exactly the oracle's multiply-adds.
    CHECK(gpu.last_call().qk_macs_skipped == cpu.last_call().qk_macs_skipped);
    CHECK(gpu.last_call().pairs_computed == cpu.last_call().pairs_computed);
    CHECK(gpu.last_call().density() == Approx(cpu.last_call().density()).margin(1e-12));
    skipped += gpu.last_call().qk_macs_skipped;
  }
  CHECK(skipped > 0);
  CHECK(gpu.stats().density() < 0.95);
}

}  // namespace

TEST_CASE("CUDA runtime reuse steps equal the CPU runtime's oracle", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  SECTION("dense heads, text front") {
    const ModelGeometry m = SmallModel({4, 8, 8}, 8, TextPosition::kFront, 2, 64, 1, 4);
    CheckReuseSteps(ReuseSchedule(m, HeadPattern{}), 700);
  }
  SECTION("a spatial head beside a dense head, text back, D 128") {
    const ModelGeometry m = SmallModel({4, 8, 12}, 5, TextPosition::kBack, 2, 128, 1, 3);
    Schedule s = ReuseSchedule(m, HeadPattern{});
    s.heads[0][1] = Pattern(PatternKind::kSpatial, 0.5);
    CheckReuseSteps(s, 710);
  }
  SECTION("every head temporal, no text") {
    const ModelGeometry m = SmallModel({3, 8, 8}, 0, TextPosition::kNone, 2, 64, 1, 3);
    CheckReuseSteps(ReuseSchedule(m, Pattern(PatternKind::kTemporal, 0.4)), 720);
  }
  SECTION("block_sparse heads on the block-sparse kernel (blocks of 64), text front") {
    const ModelGeometry m = SmallModel({4, 8, 16}, 8, TextPosition::kFront, 2, 64, 1, 3);
    Schedule s = ReuseSchedule(m, Pattern(PatternKind::kBlockSparse, 0.5));
    s.block_size = 64;
    s.token_order = TilesOrder(1, 8, 8);
    CheckReuseSteps(s, 725);
  }
  SECTION("GPU TimeRipple kernel: dense heads") {
    const ModelGeometry m = SmallModel({4, 8, 8}, 8, TextPosition::kFront, 2, 64, 1, 3);
    CheckReuseSteps(ReuseSchedule(m, HeadPattern{}), 730, "kernel");
  }
  SECTION("GPU TimeRipple kernel: a spatial head beside a dense head, D 128") {
    const ModelGeometry m = SmallModel({4, 8, 12}, 5, TextPosition::kBack, 2, 128, 1, 3);
    Schedule s = ReuseSchedule(m, HeadPattern{});
    s.heads[0][1] = Pattern(PatternKind::kSpatial, 0.5);
    CheckReuseSteps(s, 735, "kernel");
  }
}

TEST_CASE("CUDA runtime's GPU block_sparse masks equal the CPU runtime's masks", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  // Blocks of 64 with 1x8x8 tiles (the kernel path); random Gaussian inputs: block scores have no
  // ties. Heads keep different fractions (two prediction groups), one head without the sink.
  ModelGeometry m = SmallModel({4, 16, 16}, 8, TextPosition::kFront, 3, 64, 1, 4);
  Schedule s = Uniform(m, Pattern(PatternKind::kBlockSparse, 0.3), 64, TilesOrder(1, 8, 8));
  for (auto& p : s.heads[0]) p.mask_refresh = 2;
  s.heads[0][1].keep = 0.5;
  s.heads[0][2].first_frame_sink = false;
  const Layout l = BuildLayout(m, s.token_order, s.block_size);
  const int64_t batch = 2;
  const torch::Tensor q = Rand(730, {batch, m.heads, l.tokens, m.head_dim}).to(torch::kBFloat16).to(torch::kFloat32);
  const torch::Tensor k = Rand(731, {batch, m.heads, l.tokens, m.head_dim}).to(torch::kBFloat16).to(torch::kFloat32);
  const torch::Tensor v = Rand(732, {batch, m.heads, l.tokens, m.head_dim}).to(torch::kBFloat16).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  Runtime cpu(s), gpu(s);
  for (int64_t step = 0; step < m.steps; ++step) {
    INFO("step " << step);
    const double drift = 1.0 - 0.1 * static_cast<double>(step);
    const torch::Tensor qs = (q * drift).to(torch::kBFloat16).to(torch::kFloat32);
    const torch::Tensor want = cpu.attention(qs, k, v, step, 0);
    const torch::Tensor got = gpu.attention(Bf16Cuda(qs), Bf16Cuda(k), Bf16Cuda(v), step, 0);
    for (int64_t h = 0; h < m.heads; ++h) {
      INFO("head " << h);
      const torch::Tensor gm = gpu.block_mask(0, h);
      REQUIRE(gm.defined());
      CHECK(gm.is_cuda());
      CHECK(gm.cpu().equal(cpu.block_mask(0, h)));
    }
    CHECK(gpu.last_call().mask_builds == cpu.last_call().mask_builds);
    CHECK(gpu.last_call().pairs_computed == cpu.last_call().pairs_computed);
    CHECK(RelL2(got, want) < 1e-2);
  }
  CHECK(gpu.stats().mask_builds == 2 * m.heads);
}

TEST_CASE("CUDA runtime's permuted kernel call equals the row-index call", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  for (const int64_t d : {64, 128}) {
    INFO("head_dim " << d);
    const ModelGeometry m = SmallModel({4, 16, 16}, 8, TextPosition::kBack, 2, d, 1, 2);
    Schedule s = Uniform(m, Pattern(PatternKind::kBlockSparse, 0.3), 64, TilesOrder(1, 8, 8));
    s.heads[0][0] = Pattern(PatternKind::kSpatial, 0.5);
    const Layout l = BuildLayout(m, s.token_order, s.block_size);
    const torch::Tensor q = Bf16Cuda(Rand(740 + d, {2, m.heads, l.tokens, d}));
    const torch::Tensor k = Bf16Cuda(Rand(741 + d, {2, m.heads, l.tokens, d}));
    const torch::Tensor v = Bf16Cuda(Rand(742 + d, {2, m.heads, l.tokens, d}));
    torch::NoGradGuard no_grad;
    Runtime gather(s), permuted(s);
    torch::Tensor a, b;
    {
      const ScopedRuntimeEnv force("PERMUTE", "0");
      a = gather.attention(q, k, v, 0, 0);
    }
    {
      const ScopedRuntimeEnv force("PERMUTE", "1");
      b = permuted.attention(q, k, v, 0, 0);
    }
    CHECK(gather.last_call().pairs_computed == permuted.last_call().pairs_computed);
    CHECK(RelL2(b, a) < 1e-3);
    // Against the CPU runtime on the same values.
    Runtime cpu(s);
    const torch::Tensor want = cpu.attention(q.cpu().to(torch::kFloat32), k.cpu().to(torch::kFloat32),
                                             v.cpu().to(torch::kFloat32), 0, 0);
    CHECK(RelL2(b, want) < 1e-2);
  }
}

TEST_CASE("Runtime::block_mask reports the cached block_sparse mask", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 4, 4}, 2, TextPosition::kFront, 2, 32, 1, 2);
  Schedule s = Uniform(m, Pattern(PatternKind::kBlockSparse, 0.5), 8);
  s.heads[0][1] = HeadPattern{};
  Runtime rt(s);
  CHECK_FALSE(rt.block_mask(0, 0).defined());
  const torch::Tensor q = Rand(750, {1, 2, m.tokens(), 32});
  rt.attention(q, q * 0.5, q + 0.25, 0, 0);
  const torch::Tensor mask = rt.block_mask(0, 0);
  const Layout l = BuildLayout(m, s.token_order, s.block_size);
  REQUIRE(mask.defined());
  CHECK(mask.sizes() == torch::IntArrayRef({1, l.blocks(), l.blocks()}));
  CHECK(mask.scalar_type() == torch::kBool);
  CHECK_FALSE(rt.block_mask(0, 1).defined());
  REQUIRE_THROWS_AS(rt.block_mask(1, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.block_mask(0, 2), ShapeError);
  REQUIRE_THROWS_AS(rt.block_mask(-1, 0), ShapeError);
  rt.reset();
  CHECK_FALSE(rt.block_mask(0, 0).defined());
}
