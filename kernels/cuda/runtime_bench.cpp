// Per-call timing of Runtime::attention on CUDA against dense SDPA (libtorch; cuDNN where it
// takes the call) at the Wan2.1-1.3B attention shape and at gpu-small's: the runtime's dense call,
// block_sparse with a cached mask through the row-index (gather) and the permuted (identity)
// kernel call, block_sparse rebuilding its mask every call with the GPU prediction and with
// libtorch ops, and a TimeRipple reuse step as attention on substituted keys (the default), through
// the GPU TimeRipple kernel, and (gpu-small) through the oracle.
// CUDA events around each call (host work between launches counts where the GPU waits for it),
// warm-up, median of repeats, random bf16 inputs. Run by scripts/gpu-rt.sh; one line per row.
//
//   sparsetune_cuda_runtime_bench [repeats] [wan|small|all]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "kernels/cuda/event_timing.h"
#include "kernels/layout.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"

namespace {

using namespace sparsetune;

using sparsetune::cuda::MedianEventMs;

struct Shape {
  std::string name;
  int64_t batch, heads, head_dim, text;
  std::array<int64_t, 3> grid;
  int64_t block;
  std::array<int64_t, 3> tile;
};

// SPARSETUNE_RT_<name> for the scope of one row.
class Env {
 public:
  Env(const char* name, const char* value) : name_(std::string("SPARSETUNE_RT_") + name) {
    setenv(name_.c_str(), value, 1);
  }
  ~Env() { unsetenv(name_.c_str()); }
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

 private:
  std::string name_;
};

void RunShape(const Shape& sh, int repeats) {
  ModelGeometry m;
  m.name = sh.name;
  m.layers = 1;
  m.heads = sh.heads;
  m.head_dim = sh.head_dim;
  m.grid = sh.grid;
  m.text_tokens = sh.text;
  m.text_position = sh.text > 0 ? TextPosition::kFront : TextPosition::kNone;
  m.steps = 1000;
  m.rope_split = RopeSplitFor(sh.head_dim);
  Schedule base = Schedule::Dense(m);
  base.block_size = sh.block;
  base.token_order.kind = TokenOrderKind::kTiles;
  base.token_order.tile = sh.tile;
  const int64_t n = m.tokens();
  const auto opt = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::manual_seed(7);
  const torch::Tensor q = torch::randn({sh.batch, sh.heads, n, sh.head_dim}, opt);
  const torch::Tensor k = torch::randn({sh.batch, sh.heads, n, sh.head_dim}, opt);
  const torch::Tensor v = torch::randn({sh.batch, sh.heads, n, sh.head_dim}, opt);
  std::printf("shape %s: B=%lld H=%lld N=%lld D=%lld bf16, block %lld, tiles %lldx%lldx%lld\n",
              sh.name.c_str(), static_cast<long long>(sh.batch), static_cast<long long>(sh.heads),
              static_cast<long long>(n), static_cast<long long>(sh.head_dim),
              static_cast<long long>(sh.block), static_cast<long long>(sh.tile[0]),
              static_cast<long long>(sh.tile[1]), static_cast<long long>(sh.tile[2]));

  const int warmup = 3;
  const double sdpa =
      MedianEventMs(warmup, repeats, [&] { at::scaled_dot_product_attention(q, k, v); });
  double cudnn = -1.0;
  at::globalContext().setSDPUseFlash(false);
  at::globalContext().setSDPUseMemEfficient(false);
  at::globalContext().setSDPUseMath(false);
  try {
    cudnn = MedianEventMs(warmup, repeats, [&] { at::scaled_dot_product_attention(q, k, v); });
  } catch (const std::exception& e) {
    std::printf("  cudnn sdpa unavailable: %s\n", std::string(e.what()).substr(0, 100).c_str());
  }
  at::globalContext().setSDPUseFlash(true);
  at::globalContext().setSDPUseMemEfficient(true);
  at::globalContext().setSDPUseMath(true);
  const double ref = cudnn > 0.0 ? cudnn : sdpa;
  std::printf("  %-44s %9.3f ms\n", "sdpa_default", sdpa);
  if (cudnn > 0.0) std::printf("  %-44s %9.3f ms\n", "sdpa_cudnn", cudnn);

  // One row: `calls` through a fresh Runtime, steps counting up from 0 (a cached mask is built at
  // the first call only).
  auto row = [&](const std::string& name, const Schedule& s, int reps) {
    Runtime rt(s);
    int64_t step = 0;
    const double ms = MedianEventMs(warmup, reps, [&] {
      rt.attention(q, k, v, step, 0);
      step = step + 1 < m.steps ? step + 1 : 1;
    });
    const AttentionStats& c = rt.last_call();
    std::printf("  %-44s %9.3f ms  %5.2fx of ref  density %.3f  keys/row %lld\n", name.c_str(), ms,
                ref / ms, c.density(),
                static_cast<long long>(c.pairs_computed / std::max<int64_t>(1, c.tokens_computed * sh.heads)));
  };
  row("runtime_dense", base, repeats);
  for (double keep : {0.1, 0.2, 0.3, 0.5}) {
    HeadPattern p;
    p.pattern = PatternKind::kBlockSparse;
    p.keep = keep;
    p.first_frame_sink = true;
    p.mask_refresh = 100000;
    Schedule s = base;
    s.heads.assign(1, std::vector<HeadPattern>(static_cast<size_t>(sh.heads), p));
    // The same schedule with the kernel call forced each way (row-index gather, permuted copies).
    auto both_calls = [&](const char* label, const Schedule& sched) {
      char name[96];
      for (const char* side : {"gather", "permute"}) {
        const Env e("PERMUTE", side[0] == 'g' ? "0" : "1");
        std::snprintf(name, sizeof name, "block_sparse_cached %s %.2f %s", label, keep, side);
        row(name, sched, repeats);
      }
    };
    both_calls("keep", s);
    char name[96];
    std::snprintf(name, sizeof name, "block_sparse_cached keep %.2f auto", keep);
    row(name, s, repeats);
    if (keep <= 0.2) {
      // Without the first-frame sink: fewer keys per row, where the gather may win.
      HeadPattern lean = p;
      lean.first_frame_sink = false;
      Schedule ls = base;
      ls.heads.assign(1, std::vector<HeadPattern>(static_cast<size_t>(sh.heads), lean));
      both_calls("nosink", ls);
    }
    if (keep == 0.2) {
      s.heads[0].assign(static_cast<size_t>(sh.heads), [&] {
        HeadPattern r = p;
        r.mask_refresh = 1;
        return r;
      }());
      row("block_sparse_rebuilt keep 0.20 gpu_mask", s, repeats);
      const Env e("MASK", "torch");
      row("block_sparse_rebuilt keep 0.20 torch_mask", s, repeats);
    }
  }
  Schedule reuse = base;
  reuse.reuse.enabled = true;
  reuse.reuse.threshold.assign(static_cast<size_t>(m.steps), 0.9);
  reuse.reuse.threshold[0] = 2.0;
  {
    Runtime rt(reuse);
    rt.attention(q, k, v, 0, 0);  // step 0: reuse off (as the rows above, not timed here)
  }
  auto reuse_row = [&](const std::string& name, const Schedule& sched, int reps, int warm) {
    Runtime rt(sched);
    int64_t step = 1;
    const double ms = MedianEventMs(warm, reps, [&] {
      rt.attention(q, k, v, step, 0);
      step = step + 1 < m.steps ? step + 1 : 1;
    });
    std::printf("  %-44s %9.3f ms  %5.2fx of ref  density %.3f\n", name.c_str(), ms, ref / ms,
                rt.last_call().density());
  };
  reuse_row("reuse_step_dense_heads substituted_keys", reuse, repeats, warmup);
  {
    const Env e("RIPPLE", "kernel");
    reuse_row("reuse_step_dense_heads ripple_kernel", reuse, 3, 1);
  }
  if (n * n * sh.batch * sh.heads <= (int64_t{1} << 31)) {
    const Env e("RIPPLE", "oracle");
    reuse_row("reuse_step_dense_heads oracle", reuse, 3, 1);
  }
  // Reuse with block_sparse keep 0.2 heads (mask cached): the substituted keys through the
  // block-sparse kernel.
  HeadPattern bs;
  bs.pattern = PatternKind::kBlockSparse;
  bs.keep = 0.2;
  bs.mask_refresh = 100000;
  Schedule reuse_bs = reuse;
  reuse_bs.heads.assign(1, std::vector<HeadPattern>(static_cast<size_t>(sh.heads), bs));
  reuse_row("reuse_step_block_sparse_0.20 substituted_keys", reuse_bs, repeats, warmup);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(3, std::atoi(argv[1])) : 15;
  const std::string which = argc > 2 ? argv[2] : "all";
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "sparsetune_cuda_runtime_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n", prop.name);
  torch::NoGradGuard no_grad;
  // gpu-small: the tiny vDiT's attention call (CFG pair), configs/gpu-small.json's schedule
  // geometry; Wan2.1-1.3B: configs/wan2.1-1.3b-shape.json.
  const Shape small{"gpu-small", 2, 3, 64, 8, {16, 32, 32}, 64, {1, 8, 8}};
  const Shape wan{"wan2.1-1.3b-480p", 1, 12, 128, 0, {21, 30, 52}, 128, {1, 6, 4}};
  if (which == "small" || which == "all") RunShape(small, repeats);
  if (which == "wan" || which == "all") RunShape(wan, repeats);
  return 0;
}
