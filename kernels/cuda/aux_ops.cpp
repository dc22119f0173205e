#include "kernels/cuda/aux_ops.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/mask_predict.h"
#include "kernels/cuda/ripple.h"
#include "kernels/cuda/token_ops.h"

namespace sparsetune::cuda {

namespace {

// exp(n_skip) cap of TokenCache::scores (token_cache.cpp, kMaxSkipExponent).
constexpr int64_t kMaxSkipExponent = 60;

std::string Sizes(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// The message is built only on failure (these checks run on every call of a hot op).
template <typename Msg>
void Require(bool ok, const char* fn, const Msg& what) {
  if (!ok) throw ShapeError(std::string("cuda::") + fn + ": " + what());
}

void RequireCuda(const char* fn, const char* name, const torch::Tensor& t) {
  Require(t.defined(), fn, [&] { return std::string(name) + " is undefined"; });
  Require(t.is_cuda(), fn,
          [&] { return std::string(name) + " must be a CUDA tensor; got " + t.device().str(); });
  Require(t.is_contiguous(), fn, [&] { return std::string(name) + " must be contiguous"; });
}

void RequireSameDevice(const char* fn, const char* name, const torch::Tensor& t,
                       const torch::Tensor& ref) {
  Require(t.device() == ref.device(), fn, [&] {
    return std::string(name) + " is on " + t.device().str() + " but the input is on " +
           ref.device().str();
  });
}

void RequireDtype(const char* fn, const char* name, const torch::Tensor& t, torch::ScalarType s) {
  Require(t.scalar_type() == s, fn, [&] {
    return std::string(name) + " must be " + c10::toString(s) + "; got " +
           c10::toString(t.scalar_type());
  });
}

HalfType HalfOf(const char* fn, const char* name, const torch::Tensor& t) {
  if (t.scalar_type() == torch::kBFloat16) return HalfType::kBFloat16;
  if (t.scalar_type() == torch::kFloat16) return HalfType::kFloat16;
  throw ShapeError(std::string("cuda::") + fn + ": " + name + " must be bfloat16 or float16; got " +
                   c10::toString(t.scalar_type()));
}

void Launched(const char* fn, int err) {
  if (err != 0)
    throw RunError(std::string("cuda::") + fn +
                   ": kernel launch failed: " + cudaGetErrorString(static_cast<cudaError_t>(err)));
}

void* StreamOf(const torch::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// [B, H, N, D] with N == tokens (tokens < 0: any N).
void RequireBhnd(const char* fn, const char* name, const torch::Tensor& t, int64_t tokens) {
  Require(t.dim() == 4, fn,
          [&] { return std::string(name) + " must be [B, H, N, D]; got " + Sizes(t); });
  if (tokens >= 0)
    Require(t.size(2) == tokens, fn, [&] {
      return std::string(name) + " has " + std::to_string(t.size(2)) +
             " tokens but the layout has " + std::to_string(tokens);
    });
}

}  // namespace

namespace {

// Checks q/k of a mask prediction; returns the sizes of its outputs.
MaskPredictSizes CheckMaskInputs(const char* fn, const Layout& layout, const torch::Tensor& q,
                                 const torch::Tensor* k) {
  RequireCuda(fn, "q", q);
  RequireBhnd(fn, "q", q, layout.tokens);
  HalfOf(fn, "q", q);
  if (k != nullptr) {
    RequireCuda(fn, "k", *k);
    RequireSameDevice(fn, "k", *k, q);
    Require(k->sizes() == q.sizes(), fn,
            [&] { return "k " + Sizes(*k) + " must match q " + Sizes(q); });
    Require(k->scalar_type() == q.scalar_type(), fn, [&] { return "k must have q's dtype"; });
  }
  const int64_t d = q.size(3);
  Require(d % 8 == 0 && d >= 8 && d <= 256, fn,
          [&] { return "head_dim must be a multiple of 8 in [8, 256]; got " + std::to_string(d); });
  Require(layout.blocks() <= kMaxMaskBlocks, fn, [&] {
    return std::to_string(layout.blocks()) + " blocks exceed the supported " +
           std::to_string(kMaxMaskBlocks);
  });
  Require(layout.tokens < (int64_t{1} << 31), fn, [&] { return "more than 2^31 tokens"; });
  const MaskPredictSizes sz = MaskPredictSizesFor(
      static_cast<int32_t>(q.size(0)), static_cast<int32_t>(q.size(1)),
      static_cast<int32_t>(layout.video_tokens), static_cast<int32_t>(layout.text_tokens),
      static_cast<int32_t>(d), static_cast<int32_t>(layout.block_size));
  Require(sz.col_capacity < (int64_t{1} << 31), fn,
          [&] { return "the CSR would exceed 2^31 entries"; });
  return sz;
}

void RequireOut(const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& ref,
                torch::IntArrayRef sizes, torch::ScalarType dtype) {
  RequireCuda(fn, name, t);
  RequireSameDevice(fn, name, t, ref);
  RequireDtype(fn, name, t, dtype);
  Require(t.sizes() == sizes, fn,
          [&] { return std::string(name) + " must be " + c10::str(sizes) + "; got " + Sizes(t); });
}

}  // namespace

MaskPrediction EmptyMaskPrediction(const Layout& layout, const torch::Tensor& q,
                                   bool layout_copies) {
  const MaskPredictSizes sz = CheckMaskInputs("EmptyMaskPrediction", layout, q, nullptr);
  const int64_t batch = q.size(0), heads = q.size(1), d = q.size(3);
  const auto i32 = q.options().dtype(torch::kInt32);
  MaskPrediction m;
  m.blocks = sz.blocks;
  m.pooled = torch::empty({2, batch, heads, sz.blocks, d}, q.options().dtype(torch::kFloat32));
  m.row_ptr = torch::empty({sz.rows + 1}, i32);
  m.col_idx = torch::empty({sz.col_capacity}, i32);
  m.workspace = torch::empty({sz.workspace_bytes}, q.options().dtype(torch::kUInt8));
  if (layout_copies) {
    m.q_layout = torch::empty_like(q);
    m.k_layout = torch::empty_like(q);
  }
  return m;
}

MaskPrediction PredictBlockMask(const Layout& layout, const torch::Tensor& q,
                                const torch::Tensor& k, double keep, bool first_frame_sink) {
  CheckMaskInputs("PredictBlockMask", layout, q, &k);
  MaskPrediction m = EmptyMaskPrediction(layout, q);
  PredictBlockMaskInto(layout, q, k, keep, first_frame_sink, m);
  return m;
}

void PredictBlockMaskInto(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                          double keep, bool first_frame_sink, MaskPrediction& out) {
  const char* fn = "PredictBlockMask";
  const MaskPredictSizes sz = CheckMaskInputs(fn, layout, q, &k);
  Require(keep > 0.0 && keep <= 1.0, fn,
          [&] { return "keep must be in (0, 1]; got " + std::to_string(keep); });
  const int64_t batch = q.size(0), heads = q.size(1), d = q.size(3);
  RequireOut(fn, "pooled", out.pooled, q, {2, batch, heads, sz.blocks, d}, torch::kFloat32);
  RequireOut(fn, "row_ptr", out.row_ptr, q, {sz.rows + 1}, torch::kInt32);
  RequireOut(fn, "col_idx", out.col_idx, q, {sz.col_capacity}, torch::kInt32);
  RequireOut(fn, "workspace", out.workspace, q, {sz.workspace_bytes}, torch::kUInt8);
  for (torch::Tensor* t : {&out.q_layout, &out.k_layout})
    if (t->defined())
      RequireOut(fn, t == &out.q_layout ? "q_layout" : "k_layout", *t, q, q.sizes(),
                 q.scalar_type());
  out.blocks = sz.blocks;
  c10::cuda::CUDAGuard guard(q.device());
  const torch::Tensor order =
      layout.order.device() == q.device() ? layout.order : layout.order.to(q.device());

  MaskPredictParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.order = order.data_ptr<int64_t>();
  p.batch = static_cast<int32_t>(batch);
  p.heads = static_cast<int32_t>(heads);
  p.tokens = static_cast<int32_t>(layout.tokens);
  p.head_dim = static_cast<int32_t>(d);
  p.video_tokens = static_cast<int32_t>(layout.video_tokens);
  p.video_offset = static_cast<int32_t>(layout.video_offset);
  p.frame_tokens = static_cast<int32_t>(layout.grid[1] * layout.grid[2]);
  p.block_size = static_cast<int32_t>(layout.block_size);
  // Same count as BlockSparseMask: min(nv, ceil(keep * nv - 1e-9)).
  const int64_t nv = layout.video_blocks;
  p.keep_n = static_cast<int32_t>(std::min<int64_t>(
      nv, static_cast<int64_t>(std::ceil(keep * static_cast<double>(nv) - 1e-9))));
  p.first_frame_sink = first_frame_sink;
  p.dtype = HalfOf(fn, "q", q);
  p.pooled = out.pooled.data_ptr<float>();
  p.row_ptr = out.row_ptr.data_ptr<int32_t>();
  p.col_idx = out.col_idx.data_ptr<int32_t>();
  p.workspace = out.workspace.data_ptr();
  p.q_layout = out.q_layout.defined() ? out.q_layout.data_ptr() : nullptr;
  p.k_layout = out.k_layout.defined() ? out.k_layout.data_ptr() : nullptr;
  Launched(fn, LaunchMaskPredict(p, StreamOf(q)));
}

torch::Tensor ArmRecallHeads(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                             const std::array<torch::Tensor, 3>& masks) {
  const char* fn = "ArmRecallHeads";
  RequireCuda(fn, "q", q);
  RequireCuda(fn, "k", k);
  RequireSameDevice(fn, "k", k, q);
  RequireBhnd(fn, "q", q, layout.tokens);
  Require(k.sizes() == q.sizes(), fn,
          [&] { return "k " + Sizes(k) + " must match q " + Sizes(q); });
  const HalfType dtype = HalfOf(fn, "q", q);
  Require(k.scalar_type() == q.scalar_type(), fn, [&] { return "k must have q's dtype"; });
  const int64_t d = q.size(3), nb = layout.blocks();
  Require(d % 4 == 0 && d >= 4 && d <= 256, fn,
          [&] { return "head_dim must be a multiple of 4 in [4, 256]; got " + std::to_string(d); });
  for (const torch::Tensor& m : masks)
    Require(m.defined() && m.dim() == 2 && m.size(0) == nb && m.size(1) == nb, fn, [&] {
      return "each candidate mask must be [" + std::to_string(nb) + ", " + std::to_string(nb) +
             "]; got " + (m.defined() ? Sizes(m) : std::string("undefined"));
    });
  Require(layout.video_tokens > 0, fn, [&] { return "the layout has no video tokens"; });
  c10::cuda::CUDAGuard guard(q.device());
  // The samples of ArmRecall: evenly strided with the (i mod stride) jitter, the same list for
  // queries (every video token is a query) and keys.
  const int64_t f = layout.grid[0], s = layout.grid[1] * layout.grid[2], n = layout.video_tokens;
  const int64_t count = std::min(s, n);
  const int64_t stride = std::max<int64_t>(1, n / std::max<int64_t>(1, count));
  std::vector<int64_t> rows;
  std::vector<int32_t> blocks;
  const torch::Tensor position = layout.position.cpu(), block_of = layout.block_of.cpu();
  const auto pos = position.accessor<int64_t, 1>();
  const auto blk = block_of.accessor<int64_t, 1>();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t base = static_cast<int64_t>(static_cast<double>(i) * static_cast<double>(n) /
                                              static_cast<double>(count));
    const int64_t model = std::min(n - 1, base + (i % std::min(stride, f))) + layout.video_offset;
    rows.push_back(model);
    blocks.push_back(static_cast<int32_t>(blk[pos[model]]));
  }
  const auto dev = q.options();
  const torch::Tensor rows_d = torch::tensor(rows, torch::kInt64).to(q.device());
  const torch::Tensor blocks_d = torch::tensor(blocks, torch::kInt32).to(q.device());
  const torch::Tensor mask_d =
      torch::stack({masks[0].to(q.device(), torch::kUInt8), masks[1].to(q.device(), torch::kUInt8),
                    masks[2].to(q.device(), torch::kUInt8)})
          .contiguous();
  torch::Tensor recall = torch::zeros({q.size(1), 3}, dev.dtype(torch::kFloat64));
  ArmProbeParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.batch = static_cast<int32_t>(q.size(0));
  p.heads = static_cast<int32_t>(q.size(1));
  p.tokens = static_cast<int32_t>(layout.tokens);
  p.head_dim = static_cast<int32_t>(d);
  p.dtype = dtype;
  p.q_rows = rows_d.data_ptr<int64_t>();
  p.q_block = blocks_d.data_ptr<int32_t>();
  p.key_rows = rows_d.data_ptr<int64_t>();
  p.key_block = blocks_d.data_ptr<int32_t>();
  p.q_samples = static_cast<int32_t>(count);
  p.key_samples = static_cast<int32_t>(count);
  p.masks = mask_d.data_ptr<uint8_t>();
  p.blocks = static_cast<int32_t>(nb);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  p.recall = recall.data_ptr<double>();
  Launched(fn, LaunchArmProbe(p, StreamOf(q)));
  return recall.cpu() / static_cast<double>(q.size(0) * count);
}

torch::Tensor CsrToDense(const MaskPrediction& mask, int64_t batch, int64_t heads) {
  const int64_t nb = mask.blocks;
  const torch::Tensor rp = mask.row_ptr.to(torch::kCPU, torch::kInt64);
  Require(rp.numel() == batch * heads * nb + 1, "CsrToDense", [&] {
    return "row_ptr has " + std::to_string(rp.numel()) +
           " entries; expected B*H*nb+1 = " + std::to_string(batch * heads * nb + 1);
  });
  const int64_t nnz = rp[-1].item<int64_t>();
  const torch::Tensor cols = mask.col_idx.narrow(0, 0, nnz).to(torch::kCPU, torch::kInt64);
  const torch::Tensor counts =
      rp.narrow(0, 1, batch * heads * nb) - rp.narrow(0, 0, batch * heads * nb);
  const torch::Tensor rows = torch::repeat_interleave(torch::arange(batch * heads * nb), counts);
  torch::Tensor dense = torch::zeros({batch * heads * nb * nb}, torch::kBool);
  dense.index_put_({rows * nb + cols}, true);
  return dense.view({batch, heads, nb, nb});
}

torch::Tensor MaskBitsToDense(const MaskPrediction& mask, int64_t batch, int64_t heads) {
  const int64_t nb = mask.blocks, rows = batch * heads * nb, words = (nb + 31) / 32;
  Require(mask.workspace.defined() && mask.workspace.numel() >= rows * words * 4,
          "MaskBitsToDense", [&] {
            return "the workspace holds no bitmap of " + std::to_string(rows) + " rows";
          });
  // SelectKernel writes row r's bitmap as `words` uint32 at the workspace's start (bit j of
  // word w = key block 32 w + j); LaunchMaskPredict lays the workspace out so.
  const torch::Tensor bits = mask.workspace.narrow(0, 0, rows * words * 4)
                                 .view(torch::kInt32)
                                 .view({rows, words, 1});
  const torch::Tensor shifts =
      torch::arange(32, mask.workspace.options().dtype(torch::kInt32)).view({1, 1, 32});
  return bits.bitwise_right_shift(shifts)
      .bitwise_and(1)
      .view({rows, words * 32})
      .narrow(1, 0, nb)
      .ne(0)
      .view({batch, heads, nb, nb});
}

torch::Tensor PermuteRows(const torch::Tensor& x, const torch::Tensor& index) {
  RequireCuda("PermuteRows", "x", x);
  RequireBhnd("PermuteRows", "x", x, -1);
  Require(index.dim() == 1, "PermuteRows",
          [&] { return "index must be [M]; got " + Sizes(index); });
  torch::Tensor out = torch::empty({x.size(0), x.size(1), index.size(0), x.size(3)}, x.options());
  PermuteRowsInto(x, index, out);
  return out;
}

void PermuteRowsInto(const torch::Tensor& x, const torch::Tensor& index, torch::Tensor& out) {
  const char* fn = "PermuteRows";
  RequireCuda(fn, "x", x);
  RequireCuda(fn, "index", index);
  RequireSameDevice(fn, "index", index, x);
  RequireBhnd(fn, "x", x, -1);
  HalfOf(fn, "x", x);
  RequireDtype(fn, "index", index, torch::kInt64);
  Require(index.dim() == 1, fn, [&] { return "index must be [M]; got " + Sizes(index); });
  RequireOut(fn, "out", out, x, {x.size(0), x.size(1), index.size(0), x.size(3)}, x.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  Launched(fn, LaunchPermuteRows(x.data_ptr(), out.data_ptr(), index.data_ptr<int64_t>(),
                                 x.size(0) * x.size(1), x.size(2), index.size(0), x.size(3),
                                 StreamOf(x)));
}

torch::Tensor ToLayoutOrder(const Layout& layout, const torch::Tensor& x) {
  Require(x.dim() == 4 && x.size(2) == layout.tokens, "ToLayoutOrder", [&] {
    return "x must be [B, H, " + std::to_string(layout.tokens) + ", D]; got " + Sizes(x);
  });
  return PermuteRows(
      x, layout.order.device() == x.device() ? layout.order : layout.order.to(x.device()));
}

torch::Tensor FromLayoutOrder(const Layout& layout, const torch::Tensor& x) {
  Require(x.dim() == 4 && x.size(2) == layout.tokens, "FromLayoutOrder", [&] {
    return "x must be [B, H, " + std::to_string(layout.tokens) + ", D]; got " + Sizes(x);
  });
  return PermuteRows(
      x, layout.position.device() == x.device() ? layout.position : layout.position.to(x.device()));
}

namespace {

// x [B, N, C], index [B, k] int64 on x's device.
void RequireTokenIndex(const char* fn, const torch::Tensor& x, const torch::Tensor& index) {
  RequireCuda(fn, "index", index);
  RequireSameDevice(fn, "index", index, x);
  RequireDtype(fn, "index", index, torch::kInt64);
  Require(x.dim() == 3, fn, [&] { return "tokens must be [B, N, C]; got " + Sizes(x); });
  Require(index.dim() == 2 && index.size(0) == x.size(0), fn, [&] {
    return "index must be [B, k] with B = " + std::to_string(x.size(0)) + "; got " + Sizes(index);
  });
}

TokenDtype TokenDtypeOf(const char* fn, const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return TokenDtype::kFloat32;
    case torch::kBFloat16:
      return TokenDtype::kBFloat16;
    case torch::kFloat16:
      return TokenDtype::kFloat16;
    default:
      throw ShapeError(std::string("cuda::") + fn +
                       ": cache must be float32, bfloat16 or float16; got " +
                       c10::toString(t.scalar_type()));
  }
}

}  // namespace

torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index) {
  RequireCuda("GatherTokens", "x", x);
  RequireTokenIndex("GatherTokens", x, index);
  torch::Tensor out = torch::empty({x.size(0), index.size(1), x.size(2)}, x.options());
  GatherTokensInto(x, index, out);
  return out;
}

void GatherTokensInto(const torch::Tensor& x, const torch::Tensor& index, torch::Tensor& out) {
  const char* fn = "GatherTokens";
  RequireCuda(fn, "x", x);
  RequireTokenIndex(fn, x, index);
  RequireOut(fn, "out", out, x, {x.size(0), index.size(1), x.size(2)}, x.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  Launched(fn, LaunchGatherTokens(x.data_ptr(), out.data_ptr(), index.data_ptr<int64_t>(),
                                  x.size(0), x.size(1), index.size(1),
                                  x.size(2) * static_cast<int64_t>(x.element_size()), StreamOf(x)));
}

void ScatterTokens(torch::Tensor& cache, const torch::Tensor& update, const torch::Tensor& index,
                   torch::Tensor delta) {
  const char* fn = "ScatterTokens";
  RequireCuda(fn, "cache", cache);
  RequireCuda(fn, "update", update);
  RequireSameDevice(fn, "update", update, cache);
  RequireTokenIndex(fn, cache, index);
  const TokenDtype dtype = TokenDtypeOf(fn, cache);
  Require(update.dim() == 3 && update.size(0) == cache.size(0) && update.size(1) == index.size(1) &&
              update.size(2) == cache.size(2),
          fn, [&] {
            return "update must be [B, k, C] = [" + std::to_string(cache.size(0)) + ", " +
                   std::to_string(index.size(1)) + ", " + std::to_string(cache.size(2)) +
                   "]; got " + Sizes(update);
          });
  float* delta_ptr = nullptr;
  if (delta.defined()) {
    RequireCuda(fn, "delta", delta);
    RequireSameDevice(fn, "delta", delta, cache);
    RequireDtype(fn, "delta", delta, torch::kFloat32);
    Require(delta.dim() == 2 && delta.size(0) == cache.size(0) && delta.size(1) == cache.size(1),
            fn, [&] { return "delta must be [B, N]; got " + Sizes(delta); });
    delta_ptr = delta.data_ptr<float>();
  }
  c10::cuda::CUDAGuard guard(cache.device());
  const torch::Tensor u = update.scalar_type() == cache.scalar_type()
                              ? update
                              : update.to(cache.scalar_type()).contiguous();
  Launched(fn, LaunchScatterTokens(cache.data_ptr(), u.data_ptr(), index.data_ptr<int64_t>(),
                                   delta_ptr, cache.size(0), cache.size(1), index.size(1),
                                   cache.size(2), dtype, StreamOf(cache)));
}

void UpdateSkipped(torch::Tensor& skipped, const torch::Tensor& index) {
  const char* fn = "UpdateSkipped";
  RequireCuda(fn, "skipped", skipped);
  RequireDtype(fn, "skipped", skipped, torch::kInt64);
  Require(skipped.dim() == 2, fn, [&] { return "skipped must be [B, N]; got " + Sizes(skipped); });
  RequireCuda(fn, "index", index);
  RequireSameDevice(fn, "index", index, skipped);
  RequireDtype(fn, "index", index, torch::kInt64);
  Require(index.dim() == 2 && index.size(0) == skipped.size(0), fn,
          [&] { return "index must be [B, k]; got " + Sizes(index); });
  c10::cuda::CUDAGuard guard(skipped.device());
  Launched(fn,
           LaunchUpdateSkipped(skipped.data_ptr<int64_t>(), index.data_ptr<int64_t>(),
                               skipped.size(0), skipped.size(1), index.size(1), StreamOf(skipped)));
}

void RecordLse(torch::Tensor& lse_tokens, const torch::Tensor& lse, const torch::Tensor& q_index) {
  const char* fn = "RecordLse";
  RequireCuda(fn, "lse_tokens", lse_tokens);
  RequireCuda(fn, "lse", lse);
  RequireCuda(fn, "q_index", q_index);
  RequireSameDevice(fn, "lse", lse, lse_tokens);
  RequireSameDevice(fn, "q_index", q_index, lse_tokens);
  RequireDtype(fn, "lse_tokens", lse_tokens, torch::kFloat32);
  RequireDtype(fn, "lse", lse, torch::kFloat32);
  RequireDtype(fn, "q_index", q_index, torch::kInt64);
  Require(lse_tokens.dim() == 2, fn,
          [&] { return "lse_tokens must be [B, N]; got " + Sizes(lse_tokens); });
  Require(lse.dim() == 3 && lse.size(0) == lse_tokens.size(0), fn,
          [&] { return "lse must be [B, H, Nq]; got " + Sizes(lse); });
  Require(q_index.dim() == 2 && q_index.size(0) == lse.size(0) && q_index.size(1) == lse.size(2),
          fn, [&] {
            return "q_index must be [B, Nq] = [" + std::to_string(lse.size(0)) + ", " +
                   std::to_string(lse.size(2)) + "]; got " + Sizes(q_index);
          });
  c10::cuda::CUDAGuard guard(lse.device());
  Launched(fn, LaunchRecordLse(lse.data_ptr<float>(), q_index.data_ptr<int64_t>(),
                               lse_tokens.data_ptr<float>(), lse.size(0), lse.size(1), lse.size(2),
                               lse_tokens.size(1), StreamOf(lse)));
}

torch::Tensor TokenScores(const torch::Tensor& lse, const torch::Tensor& delta,
                          const torch::Tensor& skipped, int64_t video_offset,
                          int64_t video_tokens) {
  RequireCuda("TokenScores", "lse", lse);
  torch::Tensor scores = torch::empty(lse.sizes(), lse.options().dtype(torch::kFloat64));
  TokenScoresInto(lse, delta, skipped, video_offset, video_tokens, scores);
  return scores;
}

void TokenScoresInto(const torch::Tensor& lse, const torch::Tensor& delta,
                     const torch::Tensor& skipped, int64_t video_offset, int64_t video_tokens,
                     torch::Tensor& scores) {
  const char* fn = "TokenScores";
  RequireCuda(fn, "lse", lse);
  RequireCuda(fn, "delta", delta);
  RequireCuda(fn, "skipped", skipped);
  RequireSameDevice(fn, "delta", delta, lse);
  RequireSameDevice(fn, "skipped", skipped, lse);
  RequireDtype(fn, "lse", lse, torch::kFloat32);
  RequireDtype(fn, "delta", delta, torch::kFloat32);
  RequireDtype(fn, "skipped", skipped, torch::kInt64);
  Require(lse.dim() == 2, fn, [&] { return "lse must be [B, N]; got " + Sizes(lse); });
  Require(delta.sizes() == lse.sizes() && skipped.sizes() == lse.sizes(), fn, [&] {
    return "delta " + Sizes(delta) + " and skipped " + Sizes(skipped) + " must match lse " +
           Sizes(lse);
  });
  Require(video_offset >= 0 && video_tokens >= 1 && video_offset + video_tokens <= lse.size(1), fn,
          [&] {
            return "video range [" + std::to_string(video_offset) + ", " +
                   std::to_string(video_offset + video_tokens) + ") outside the " +
                   std::to_string(lse.size(1)) + " tokens";
          });
  RequireOut(fn, "out", scores, lse, lse.sizes(), torch::kFloat64);
  c10::cuda::CUDAGuard guard(lse.device());
  Launched(fn, LaunchTokenScores(
                   lse.data_ptr<float>(), delta.data_ptr<float>(), skipped.data_ptr<int64_t>(),
                   scores.data_ptr<double>(), lse.size(0), lse.size(1), video_offset, video_tokens,
                   0.05 /* TokenCache::kPenaltyWeight */, kMaxSkipExponent, StreamOf(lse)));
}

RippleResult RippleAttention(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const std::array<int64_t, 3>& split,
                             double threshold, const RippleMask* mask) {
  RequireCuda("RippleAttention", "q", q);
  RequireBhnd("RippleAttention", "q", q, -1);
  const int64_t hw = layout.grid[1] * layout.grid[2];
  RippleResult r;
  r.out = torch::empty_like(q);
  r.lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(torch::kFloat32));
  r.reuse =
      torch::empty({q.size(0), q.size(1), 3, layout.grid[0], (hw + kRippleTile - 1) / kRippleTile},
                   q.options().dtype(torch::kUInt8));
  RippleAttentionInto(layout, q, k, v, split, threshold, r, mask);
  return r;
}

void RippleAttentionInto(const Layout& layout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const std::array<int64_t, 3>& split,
                         double threshold, RippleResult& r, const RippleMask* mask) {
  const char* fn = "RippleAttention";
  RequireCuda(fn, "q", q);
  RequireCuda(fn, "k", k);
  RequireCuda(fn, "v", v);
  RequireSameDevice(fn, "k", k, q);
  RequireSameDevice(fn, "v", v, q);
  RequireBhnd(fn, "q", q, -1);
  RequireBhnd(fn, "k", k, layout.tokens);
  Require(v.sizes() == k.sizes(), fn,
          [&] { return "v " + Sizes(v) + " must match k " + Sizes(k); });
  Require(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), fn, [&] {
    return "q " + Sizes(q) + " and k " + Sizes(k) + " differ in batch, heads or head_dim";
  });
  const HalfType dtype = HalfOf(fn, "q", q);
  Require(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), fn,
          [&] { return "k and v must have q's dtype"; });
  const int64_t d = q.size(3);
  Require(d % 8 == 0 && d >= 8 && d <= 128, fn,
          [&] { return "head_dim must be a multiple of 8 in [8, 128]; got " + std::to_string(d); });
  Require(split[0] >= 0 && split[1] >= 0 && split[2] >= 0 && split[0] + split[1] + split[2] == d,
          fn, [&] {
            return "rope split must be 3 non-negative channel counts summing to head_dim " +
                   std::to_string(d);
          });
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2);
  const int64_t frames = layout.grid[0], hw = layout.grid[1] * layout.grid[2];
  const int64_t chunks = (hw + kRippleTile - 1) / kRippleTile;
  Require(frames >= 1 && hw >= 1, fn, [&] { return "the layout has no video tokens"; });
  RequireOut(fn, "out", r.out, q, q.sizes(), q.scalar_type());
  RequireOut(fn, "lse", r.lse, q, {batch, heads, nq}, torch::kFloat32);
  RequireOut(fn, "reuse", r.reuse, q, {batch, heads, 3, frames, chunks}, torch::kUInt8);
  const int64_t nb = layout.blocks();
  torch::Tensor mask_u8;
  if (mask != nullptr) {
    RequireCuda(fn, "mask", mask->mask);
    RequireSameDevice(fn, "mask", mask->mask, q);
    RequireDtype(fn, "mask", mask->mask, torch::kBool);
    Require(mask->mask.sizes() == torch::IntArrayRef({batch, heads, nb, nb}), fn, [&] {
      return "mask must be [B, H, nb, nb] = [" + std::to_string(batch) + ", " +
             std::to_string(heads) + ", " + std::to_string(nb) + ", " + std::to_string(nb) +
             "]; got " + Sizes(mask->mask);
    });
    RequireOut(fn, "q_block", mask->q_block, q, {batch, nq}, torch::kInt32);
    RequireOut(fn, "key_block", mask->key_block, q, {layout.tokens}, torch::kInt32);
    mask_u8 = mask->mask.view(torch::kUInt8);
  }
  const torch::Tensor macs = torch::zeros({1}, q.options().dtype(torch::kInt64));
  RippleParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = r.out.data_ptr();
  p.lse = r.lse.data_ptr<float>();
  p.batch = static_cast<int32_t>(batch);
  p.heads = static_cast<int32_t>(heads);
  p.q_rows = static_cast<int32_t>(nq);
  p.tokens = static_cast<int32_t>(layout.tokens);
  p.head_dim = static_cast<int32_t>(d);
  p.frames = static_cast<int32_t>(frames);
  p.frame_tokens = static_cast<int32_t>(hw);
  p.video_offset = static_cast<int32_t>(layout.video_offset);
  for (int g = 0; g < 3; ++g) p.split[g] = static_cast<int32_t>(split[static_cast<size_t>(g)]);
  p.threshold = static_cast<float>(threshold);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  p.dtype = dtype;
  p.reuse = r.reuse.data_ptr<uint8_t>();
  p.macs_skipped = reinterpret_cast<unsigned long long*>(macs.data_ptr<int64_t>());
  if (mask != nullptr) {
    p.mask = mask_u8.data_ptr<uint8_t>();
    p.q_block = mask->q_block.data_ptr<int32_t>();
    p.key_block = mask->key_block.data_ptr<int32_t>();
    p.blocks = static_cast<int32_t>(nb);
  }
  Launched(fn, LaunchRippleAttention(p, StreamOf(q)));
  if (mask == nullptr) {
    r.macs_skipped = macs.item<int64_t>();
    return;
  }
  // The oracle's count: per reused (key, group), the computed queries the mask lets attend the
  // key, times the group's width. allowed[b, h, key block] = sum over query blocks of (queries
  // in the block) * mask; float64 is exact for these integer sums.
  const auto i64 = q.options().dtype(torch::kInt64);
  const torch::Tensor per_block =
      torch::zeros({batch, nb}, i64).scatter_add_(1, mask->q_block.to(torch::kInt64),
                                                   torch::ones({batch, nq}, i64));
  const torch::Tensor allowed =
      torch::matmul(per_block.to(torch::kFloat64).view({batch, 1, 1, nb}),
                    mask->mask.to(torch::kFloat64))
          .view({batch, heads, nb})
          .round()
          .to(torch::kInt64);
  const torch::Tensor video_block =
      mask->key_block.narrow(0, layout.video_offset, frames * hw).to(torch::kInt64);
  const torch::Tensor per_key = allowed.index_select(2, video_block);  // [B, H, F*HW]
  const torch::Tensor flags = r.reuse.to(torch::kInt64)
                                  .repeat_interleave(kRippleTile, 4)
                                  .narrow(4, 0, hw)
                                  .reshape({batch, heads, 3, frames * hw});
  const torch::Tensor per_group = (flags * per_key.unsqueeze(2)).sum({0, 1, 3});  // [3]
  const torch::Tensor widths = torch::tensor({split[0], split[1], split[2]}, i64);
  r.macs_skipped = (per_group * widths).sum().item<int64_t>();
}

}  // namespace sparsetune::cuda
