// Timing of the auxiliary CUDA kernels at the Wan2.1-1.3B attention shape (B=1, 12 heads,
// N=32760 = 21x30x52, D=128, bf16, block 128): mask prediction, the layout permutation of q, k, v
// and of O back, against dense SDPA (libtorch) on the same card in the same run. CUDA events, warm-up,
// median of repeats, random inputs. Run by scripts/gpu-aux.sh; prints one line per measurement.
//
//   sparsetune_cuda_aux_bench [repeats]
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "kernels/cuda/aux_ops.h"
#include "kernels/cuda/event_timing.h"
#include "kernels/layout.h"
#include "kernels/patterns.h"

namespace {

using sparsetune::Layout;
namespace stc = sparsetune::cuda;

// Median milliseconds of `fn` over `repeats` event-timed runs after 5 warm-up runs.
double MedianMs(int repeats, const std::function<void()>& fn) {
  return sparsetune::cuda::MedianEventMs(5, repeats, fn);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(3, std::atoi(argv[1])) : 30;
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "sparsetune_cuda_aux_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n", prop.name);
  torch::NoGradGuard no_grad;
  const int64_t batch = 1, heads = 12, d = 128;
  sparsetune::ModelGeometry m;
  m.name = "wan2.1-1.3b-480p";
  m.layers = 30;
  m.heads = heads;
  m.head_dim = d;
  m.grid = {21, 30, 52};
  m.steps = 50;
  sparsetune::TokenOrder order;
  order.kind = sparsetune::TokenOrderKind::kTiles;
  order.tile = {1, 6, 4};  // configs/wan2.1-1.3b-shape.json
  const Layout l = sparsetune::LayoutOn(sparsetune::BuildLayout(m, order, 128), torch::kCUDA);
  const int64_t n = l.tokens;
  const auto opt = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::manual_seed(1);
  const torch::Tensor q = torch::randn({batch, heads, n, d}, opt);
  const torch::Tensor k = torch::randn({batch, heads, n, d}, opt);
  const torch::Tensor v = torch::randn({batch, heads, n, d}, opt);
  std::printf("shape: B=%lld H=%lld N=%lld D=%lld bf16, block 128, tiles 1x6x4, %lld blocks\n",
              static_cast<long long>(batch), static_cast<long long>(heads),
              static_cast<long long>(n), static_cast<long long>(d),
              static_cast<long long>(l.blocks()));

  const double dense_default =
      MedianMs(repeats, [&] { at::scaled_dot_product_attention(q, k, v); });
  std::printf("dense_sdpa_default_ms %.4f\n", dense_default);
  // cuDNN alone (the baseline); the default choice stands in when cuDNN refuses.
  double dense = dense_default;
  at::globalContext().setSDPUseFlash(false);
  at::globalContext().setSDPUseMemEfficient(false);
  at::globalContext().setSDPUseMath(false);
  try {
    dense = MedianMs(repeats, [&] { at::scaled_dot_product_attention(q, k, v); });
    std::printf("dense_sdpa_cudnn_ms %.4f (%.0f TFLOP/s)\n", dense,
                4.0 * batch * heads * static_cast<double>(n) * n * d / (dense * 1e9));
  } catch (const std::exception& e) {
    std::printf("dense_sdpa_cudnn unavailable (%s); ratios use the default backend\n",
                std::string(e.what()).substr(0, 120).c_str());
  }
  at::globalContext().setSDPUseFlash(true);
  at::globalContext().setSDPUseMemEfficient(true);
  at::globalContext().setSDPUseMath(true);

  stc::MaskPrediction mask = stc::EmptyMaskPrediction(l, q);
  for (double keep : {0.1, 0.2, 0.5}) {
    const double t = MedianMs(repeats, [&] { stc::PredictBlockMaskInto(l, q, k, keep, true, mask); });
    const int64_t nnz = mask.row_ptr[-1].item<int64_t>();
    std::printf("mask_predict_ms keep %.2f: %.4f (%.2f%% of dense; density %.3f)\n", keep, t,
                100.0 * t / dense,
                static_cast<double>(nnz) / static_cast<double>(batch * heads * l.blocks() * l.blocks()));
  }
  torch::Tensor ql = torch::empty_like(q), kl = torch::empty_like(k), vl = torch::empty_like(v);
  torch::Tensor o = torch::empty_like(q);
  const double perm1 = MedianMs(repeats, [&] { stc::PermuteRowsInto(q, l.order, ql); });
  std::printf("permute_one_tensor_ms %.4f (%.1f GB/s)\n", perm1,
              2.0 * static_cast<double>(q.nbytes()) / (perm1 * 1e6));
  const double perm4 = MedianMs(repeats, [&] {
    stc::PermuteRowsInto(q, l.order, ql);
    stc::PermuteRowsInto(k, l.order, kl);
    stc::PermuteRowsInto(v, l.order, vl);
    stc::PermuteRowsInto(ql, l.position, o);
  });
  std::printf("permute_qkv_and_back_ms %.4f (%.2f%% of dense)\n", perm4, 100.0 * perm4 / dense);
  const double total = MedianMs(repeats, [&] {
    stc::PredictBlockMaskInto(l, q, k, 0.2, true, mask);
    stc::PermuteRowsInto(q, l.order, ql);
    stc::PermuteRowsInto(k, l.order, kl);
    stc::PermuteRowsInto(v, l.order, vl);
    stc::PermuteRowsInto(ql, l.position, o);
  });
  std::printf("mask_predict_plus_permutation_ms keep 0.20: %.4f (%.2f%% of dense)\n", total,
              100.0 * total / dense);
  // The pooling pass writes q and k in layout order itself: only v and O are permuted apart.
  stc::MaskPrediction fused = stc::EmptyMaskPrediction(l, q, /*layout_copies=*/true);
  const double total_fused = MedianMs(repeats, [&] {
    stc::PredictBlockMaskInto(l, q, k, 0.2, true, fused);
    stc::PermuteRowsInto(v, l.order, vl);
    stc::PermuteRowsInto(fused.q_layout, l.position, o);
  });
  std::printf("mask_predict_fused_qk_permutation_plus_v_and_o_ms keep 0.20: %.4f (%.2f%% of dense)\n",
              total_fused, 100.0 * total_fused / dense);

  // ARM's probes for all 12 heads (host sampling, mask upload and the result's sync included).
  const std::array<torch::Tensor, 3> cands = {
      sparsetune::StaticPatternMask(l, sparsetune::PatternKind::kSpatial, 0.2),
      sparsetune::StaticPatternMask(l, sparsetune::PatternKind::kTemporal, 0.2),
      sparsetune::StaticPatternMask(l, sparsetune::PatternKind::kTextural, 0.2)};
  const double arm = MedianMs(repeats, [&] { stc::ArmRecallHeads(l, q, k, cands); });
  std::printf("arm_probe_all_heads_ms: %.4f (%.2f%% of dense)\n", arm, 100.0 * arm / dense);

  // Astraea token ops at the model width (1536 channels), budget 0.3.
  const int64_t ch = 1536, sel = (n * 3 + 9) / 10;
  const torch::Tensor x = torch::randn({batch, n, ch}, opt);
  torch::Tensor cache = torch::randn({batch, n, ch}, opt);
  const torch::Tensor idx =
      std::get<0>(torch::randperm(n, torch::TensorOptions().dtype(torch::kInt64).device(torch::kCUDA))
                      .narrow(0, 0, sel).sort()).unsqueeze(0).contiguous();
  torch::Tensor gathered = torch::empty({batch, sel, ch}, opt);
  const torch::Tensor upd = torch::randn({batch, sel, ch}, opt);
  torch::Tensor delta = torch::ones({batch, n}, opt.dtype(torch::kFloat32));
  torch::Tensor skipped = torch::zeros({batch, n}, opt.dtype(torch::kInt64));
  torch::Tensor lse = torch::randn({batch, n}, opt.dtype(torch::kFloat32));
  torch::Tensor scores = torch::empty({batch, n}, opt.dtype(torch::kFloat64));
  std::printf("gather_tokens_ms (k=%lld, C=%lld): %.4f\n", static_cast<long long>(sel),
              static_cast<long long>(ch),
              MedianMs(repeats, [&] { stc::GatherTokensInto(x, idx, gathered); }));
  std::printf("scatter_tokens_with_delta_ms: %.4f\n",
              MedianMs(repeats, [&] { stc::ScatterTokens(cache, upd, idx, delta); }));
  std::printf("token_scores_ms: %.4f\n", MedianMs(repeats, [&] {
                stc::TokenScoresInto(lse, delta, skipped, 0, n, scores);
              }));
  return 0;
}
