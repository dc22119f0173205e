#include "kernels/cuda/attn_bench.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/build_info.h"
#include "core/error.h"
#include "kernels/cuda/ops.h"

#ifdef SPARSETUNE_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/aux_ops.h"
#include "kernels/layout.h"
#endif

namespace sparsetune {

namespace {

// Peak allocated bytes of the caching allocator while `fn` runs once (inputs already allocated
// count too: both paths hold the same q/k/v).
double PeakMib(const torch::Device& device, const std::function<void()>& fn) {
#ifdef SPARSETUNE_CUDA_KERNELS
  torch::cuda::synchronize();
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  fn();
  torch::cuda::synchronize();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return static_cast<double>(stats.allocated_bytes[agg].peak) / (1024.0 * 1024.0);
#else
  (void)device;
  fn();
  return 0.0;
#endif
}

std::string CardName(const torch::Device& device) {
#ifdef SPARSETUNE_CUDA_KERNELS
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index() < 0 ? 0 : device.index()) == cudaSuccess)
    return prop.name;
#endif
  (void)device;
  return "unknown";
}

// Mask prediction's token order: the tiles of configs/wan2.1-1.3b-shape.json for every shape (the
// order changes which rows the pooling gathers, not how much it reads).
constexpr std::array<int64_t, 3> kMaskTile = {1, 6, 4};

bool HasGrid(const ModelGeometry& g) { return g.grid[0] > 0 || g.grid[1] > 0 || g.grid[2] > 0; }

// The mask-prediction rows for every keep = 1 - sparsity (sparsity > 0), first-frame sink on, and
// the text under the table. q, k, v are the bench's inputs in model order.
void BenchMaskPredict(const CudaBenchOptions& o, const torch::Tensor& q, const torch::Tensor& k,
                      const torch::Tensor& v, double dense_ms, const MeasureMs& measure,
                      CudaBenchReport& report) {
  std::vector<double> keeps;
  for (double sp : o.sparsities)
    if (sp > 0.0) keeps.push_back(1.0 - sp);
  if (!HasGrid(o.geometry)) {
    report.mask_predict_note = "mask prediction not measured: the bench was given no grid for this shape";
    return;
  }
  if (keeps.empty()) {
    report.mask_predict_note = "mask prediction not measured: no sparsity above 0 was requested";
    return;
  }
#ifdef SPARSETUNE_CUDA_KERNELS
  TokenOrder order;
  order.kind = TokenOrderKind::kTiles;
  order.tile = kMaskTile;
  const Layout l = LayoutOn(BuildLayout(o.geometry, order, o.block), q.device());
  cuda::MaskPrediction plain = cuda::EmptyMaskPrediction(l, q);
  cuda::MaskPrediction fused = cuda::EmptyMaskPrediction(l, q, /*layout_copies=*/true);
  torch::Tensor ql = torch::empty_like(q), kl = torch::empty_like(k), vl = torch::empty_like(v);
  torch::Tensor out = torch::empty_like(q);  // O back in model order
  const double pairs = static_cast<double>(o.batch * o.heads) * static_cast<double>(l.blocks()) *
                       static_cast<double>(l.blocks());
  for (double keep : keeps) {
    auto add = [&](const std::string& path, const cuda::MaskPrediction& m,
                   const std::function<void()>& region) {
      MaskPredictRow row;
      row.path = path;
      row.keep = keep;
      row.time_ms = measure(region);
      row.share = row.time_ms / dense_ms;
      row.density = static_cast<double>(m.row_ptr[-1].item<int64_t>()) / pairs;
      report.mask_predict.push_back(row);
    };
    add("predict", plain, [&] { cuda::PredictBlockMaskInto(l, q, k, keep, true, plain); });
    add("predict_qk_layout", fused, [&] { cuda::PredictBlockMaskInto(l, q, k, keep, true, fused); });
    // The runtime's path: the kernel gathers q/k/v and scatters O through the row index, so
    // prediction plus building that index is all it adds (it builds the index once per layout;
    // counted per call here as an upper bound). The gather's own cost is in the kernel rows
    // (ours_sparse_gather against ours_sparse).
    torch::Tensor index;
    add("predict_row_index", plain, [&] {
      cuda::PredictBlockMaskInto(l, q, k, keep, true, plain);
      index = l.order.to(torch::kInt32);
    });
    // The kernel's O is in layout order; ql stands in for it (same shape) on the way back.
    add("predict_permute", plain, [&] {
      cuda::PredictBlockMaskInto(l, q, k, keep, true, plain);
      cuda::PermuteRowsInto(q, l.order, ql);
      cuda::PermuteRowsInto(k, l.order, kl);
      cuda::PermuteRowsInto(v, l.order, vl);
      cuda::PermuteRowsInto(ql, l.position, out);
    });
    add("predict_qk_layout_permute", fused, [&] {
      cuda::PredictBlockMaskInto(l, q, k, keep, true, fused);
      cuda::PermuteRowsInto(v, l.order, vl);
      cuda::PermuteRowsInto(fused.q_layout, l.position, out);
    });
  }
  std::string text = "mask prediction (GPU, first-frame sink, tiles " +
                     std::to_string(kMaskTile[0]) + "x" + std::to_string(kMaskTile[1]) + "x" +
                     std::to_string(kMaskTile[2]) + ", same timer) as a share of dense_sdpa:";
  char line[160];
  for (const MaskPredictRow& r : report.mask_predict) {
    std::snprintf(line, sizeof line, "\n  %-26s keep %.2f density %.3f %9.3f ms %6.2f %%",
                  r.path.c_str(), r.keep, r.density, r.time_ms, 100.0 * r.share);
    text += line;
  }
  report.mask_predict_note = text;
#else
  (void)q;
  (void)k;
  (void)v;
  (void)dense_ms;
  (void)measure;
  report.mask_predict_note = "mask prediction not measured: this build has no CUDA kernels";
#endif
}

}  // namespace

CudaBenchReport BenchAttentionCuda(const CudaBenchOptions& o, const MeasureMs& measure) {
  for (int64_t x : {o.batch, o.heads, o.tokens})
    if (x < 1) throw InputError("bench: batch, heads and tokens must be >= 1");
  if (o.head_dim != 64 && o.head_dim != 128)
    throw InputError("bench: the CUDA kernel takes head dim 64 or 128; got " + std::to_string(o.head_dim));
  if (o.block != 64 && o.block != 128)
    throw InputError("bench: the CUDA kernel takes block 64 or 128; got " + std::to_string(o.block));
  for (double sp : o.sparsities)
    if (!(sp >= 0.0 && sp < 1.0)) throw InputError("bench: --sparsity values must be in [0, 1)");
  torch::ScalarType dtype = torch::kBFloat16;
  if (o.dtype == "float16") dtype = torch::kHalf;
  else if (o.dtype != "bfloat16")
    throw InputError("bench: the CUDA kernel takes bfloat16 or float16; got '" + o.dtype + "'");
  if (HasGrid(o.geometry) && o.geometry.tokens() != o.tokens)
    throw InputError("bench: the geometry has " + std::to_string(o.geometry.tokens()) +
                     " tokens but tokens is " + std::to_string(o.tokens));
  if (!cuda::CudaKernelsBuilt()) throw InputError("bench: this build has no CUDA kernels");
  if (!torch::cuda::is_available()) throw InputError("bench: no CUDA device is available");
  torch::Device device(torch::kCUDA);
  try {
    device = torch::Device(o.device);
  } catch (const std::exception&) {
    throw InputError("bench: unknown device '" + o.device + "'");
  }
  if (!device.is_cuda()) throw InputError("bench: --shape needs a CUDA device");
  if (!device.has_index()) device = torch::Device(torch::kCUDA, 0);

  torch::manual_seed(o.seed);
  const int64_t b = o.batch, h = o.heads, n = o.tokens, d = o.head_dim;
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor q = torch::randn({b, h, n, d}, opts);
  const torch::Tensor k = torch::randn({b, h, n, d}, opts);
  const torch::Tensor v = torch::randn({b, h, n, d}, opts);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const double dense_flops = 4.0 * static_cast<double>(b * h) * static_cast<double>(n) *
                             static_cast<double>(n) * static_cast<double>(d);
  const int64_t nb = (n + o.block - 1) / o.block;
  // Tokens of each block (the last one partial), for the computed-pair count of a mask.
  const torch::Tensor block_len =
      torch::full({nb}, static_cast<double>(o.block), torch::kFloat64)
          .index_put_({nb - 1}, static_cast<double>(n - (nb - 1) * o.block));

  CudaBenchReport report;
  report.card = CardName(device);

  CudaBenchRow dense;
  dense.path = "dense_sdpa";
  dense.time_ms = measure([&] { torch::scaled_dot_product_attention(q, k, v); });
  dense.tflops = dense_flops / (dense.time_ms * 1e9);
  dense.peak_mib = PeakMib(device, [&] { torch::scaled_dot_product_attention(q, k, v); });
  report.rows.push_back(dense);

  // With a grid, the runtime's way of calling the kernel too: q, k, v, out, lse in model order,
  // rows gathered and scattered through the tile layout's row index (ops.h), so the difference
  // between the "ours_sparse_gather" and "ours_sparse" rows is what the permutation costs inside
  // the kernel.
  torch::Tensor row_index;
#ifdef SPARSETUNE_CUDA_KERNELS
  if (HasGrid(o.geometry)) {
    TokenOrder order;
    order.kind = TokenOrderKind::kTiles;
    order.tile = kMaskTile;
    row_index = BuildLayout(o.geometry, order, o.block).order.to(device, torch::kInt32).contiguous();
  }
#endif
  auto add_row = [&](const std::string& path, double sparsity, double flops,
                     const cuda::BlockCsr& csr, const torch::Tensor& index = torch::Tensor()) {
    CudaBenchRow row;
    row.path = path;
    row.sparsity = sparsity;
    auto run = [&] { cuda::BlockSparseAttentionCuda(q, k, v, csr, scale, false, index); };
    row.time_ms = measure(run);
    row.tflops = flops / (row.time_ms * 1e9);
    row.speedup = dense.time_ms / row.time_ms;
    row.peak_mib = PeakMib(device, run);
    report.rows.push_back(row);
  };
  add_row("ours_dense", 0.0, dense_flops, cuda::DenseBlockCsr(b, h, n, o.block, device));

  for (double sp : o.sparsities) {
    const int64_t keep = std::max<int64_t>(1, std::llround((1.0 - sp) * static_cast<double>(nb)));
    // Uniform random subset of `keep` key blocks per row: the first `keep` of a random permutation.
    const torch::Tensor order = torch::rand({b, h, nb, nb}).argsort(/*dim=*/int64_t{3});
    const torch::Tensor mask =
        torch::zeros({b, h, nb, nb}, torch::kBool).scatter_(3, order.slice(3, 0, keep), true);
    const cuda::BlockCsr csr = cuda::BlockCsrFromMask(mask.to(device), o.block);
    cuda::ValidateBlockCsr(csr, b, h, n);
    // Computed q·k pairs: sum over kept (query block, key block) of their token counts.
    const torch::Tensor pairs = torch::matmul(
        torch::matmul(block_len, mask.to(torch::kFloat64)), block_len);  // [B, H]
    const double flops = 4.0 * static_cast<double>(d) * pairs.sum().item<double>();
    const double sparsity = 1.0 - static_cast<double>(keep) / static_cast<double>(nb);
    add_row("ours_sparse", sparsity, flops, csr);
    if (row_index.defined()) add_row("ours_sparse_gather", sparsity, flops, csr, row_index);
  }
  BenchMaskPredict(o, q, k, v, dense.time_ms, measure, report);
  return report;
}

Json CudaBenchToJson(const CudaBenchOptions& o, const CudaBenchReport& r,
                     const std::string& timing_source) {
  Json j;
  j["card"] = r.card;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  j["date"] = date;
  j["commit"] = GetBuildInfo().git_commit;
  j["timing"] = timing_source;
  j["shape"] = {{"name", o.shape}, {"batch", o.batch}, {"heads", o.heads}, {"tokens", o.tokens},
                {"head_dim", o.head_dim}, {"block", o.block}, {"dtype", o.dtype}};
  j["mask"] = "per row exactly max(1, round((1 - sparsity) * nb)) key blocks, uniform without replacement";
  Json mp = Json::array();
  for (const MaskPredictRow& row : r.mask_predict)
    mp.push_back({{"path", row.path}, {"keep", row.keep}, {"density", row.density},
                  {"time_ms", row.time_ms}, {"share_of_dense_sdpa", row.share}});
  j["mask_predict"] = mp;
  j["mask_predict_setup"] =
      "GPU PredictBlockMask (first-frame sink, token order tiles " + std::to_string(kMaskTile[0]) +
      "x" + std::to_string(kMaskTile[1]) + "x" + std::to_string(kMaskTile[2]) +
      ") and PermuteRows, same profiler and run as the rows; share = time_ms / dense_sdpa time_ms";
  if (r.mask_predict.empty()) j["mask_predict_note"] = r.mask_predict_note;
  Json list = Json::array();
  for (const CudaBenchRow& row : r.rows)
    list.push_back({{"path", row.path}, {"sparsity", row.sparsity}, {"time_ms", row.time_ms},
                    {"tflops", row.tflops}, {"speedup", row.speedup}, {"peak_mib", row.peak_mib}});
  j["rows"] = list;
  return j;
}

}  // namespace sparsetune
