// Runtime: executes a Schedule for the attention calls of one generation (see runtime.h and
// docs/runtime.md). Per call: check inputs, resolve each head's pattern (ARM for auto), build or
// reuse block masks, then run dense heads through libtorch's flash kernel and sparse heads through
// the block-sparse kernel (or everything through TimeRipple when reuse is on). On CUDA the
// block_sparse masks and the sparse heads run the kernels of kernels/cuda where the shape and
// dtype allow it, and reuse steps run as attention on substituted keys (docs/runtime.md,
// "Devices").
#include "kernels/runtime.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <utility>

#include <ATen/Parallel.h>

#include "core/error.h"
#include "kernels/block_attention.h"
#include "kernels/cuda/ops.h"
#ifdef SPARSETUNE_CUDA_KERNELS
#include "kernels/cuda/aux_ops.h"
#endif
#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "kernels/timeripple.h"
#include "kernels/token_cache.h"

namespace sparsetune {

double AttentionStats::density() const {
  if (pairs_total == 0) return 1.0;
  const double computed = static_cast<double>(pairs_computed) / static_cast<double>(pairs_total);
  if (qk_macs_total == 0) return computed;
  return computed * (1.0 - static_cast<double>(qk_macs_skipped) /
                               static_cast<double>(qk_macs_total));
}

double AttentionStats::token_density() const {
  if (tokens_total == 0) return 1.0;
  return static_cast<double>(tokens_computed) / static_cast<double>(tokens_total);
}

AttentionStats& AttentionStats::operator+=(const AttentionStats& o) {
  calls += o.calls;
  pairs_total += o.pairs_total;
  pairs_computed += o.pairs_computed;
  tokens_total += o.tokens_total;
  tokens_computed += o.tokens_computed;
  qk_macs_total += o.qk_macs_total;
  qk_macs_skipped += o.qk_macs_skipped;
  mask_builds += o.mask_builds;
  arm_runs += o.arm_runs;
  return *this;
}

struct Runtime::State {
  explicit State(const Schedule& s)
      : layout(BuildLayout(s.model, s.token_order, s.block_size)),
        tokens(s.model.layers, s.model.tokens(), layout.video_offset, s.model.video_tokens()),
        masks(static_cast<size_t>(s.model.layers * s.model.heads)),
        arm(static_cast<size_t>(s.model.layers * s.model.heads)) {}

  // A block_sparse mask of one (layer, head) and when it was built.
  struct CachedMask {
    torch::Tensor mask;       // [B, nb, nb] bool
    torch::Tensor pooled_q;   // [B, nb, D] float32 block query representatives of the build
    int64_t first_step = -1;  // first step this head ran block_sparse since reset()
    double keep = 0.0;        // parameters it was built with (a change forces a rebuild)
    bool sink = true;
    int64_t serial = 0;       // State::mask_serial at the build: names the mask in plan keys
  };
  // ARM's pick of one (layer, head).
  struct ArmState {
    PatternKind pick = PatternKind::kDense;
    int64_t first_step = -1;  // first step ARM ran for this head since reset()
    int64_t last_step = -1;   // step of the most recent run
  };

  Layout layout;
  TokenCache tokens;
  // Device of the most recent attention()/complete_update() inputs: selections are handed out
  // there, so a model on CUDA can index its tensors with them directly.
  torch::Device device = torch::kCPU;
  std::vector<CachedMask> masks;  // [layer * heads + head]
  std::vector<ArmState> arm;      // [layer * heads + head]
  std::map<std::pair<int, double>, torch::Tensor> static_masks;  // (kind, density) -> [nb, nb]
  int64_t mask_serial = 0;  // block_sparse masks built since reset()
  // Sparse plans of full-selection calls, keyed by (batch, heads' mask ids): static patterns hit
  // this every step; block_sparse keys change with every rebuild, so the map is bounded.
  std::map<std::vector<int64_t>, SparsePlan> plans;
  static constexpr size_t kMaxPlans = 64;
  // The same for the CUDA block-sparse kernel: the CSR of the stacked mask (built with one host
  // sync) and the q·k pairs it computes, so a static pattern syncs once per generation.
  struct CudaPlan {
    cuda::BlockCsr csr;
    int64_t pairs = 0;
  };
  std::map<std::vector<int64_t>, CudaPlan> cuda_plans;
  // layout.order as int32 on the layout's device: the CUDA kernel's row index, through which it
  // reads q/k/v and writes out/lse in model order (no permuted copies around the call).
  torch::Tensor row_index;
  // Layout block of each model-order token, int32 on the layout's device (the GPU TimeRipple
  // kernel's key_block).
  torch::Tensor token_block;
  // The same as int64 (q_block of partial selections), made at the first partial call.
  torch::Tensor model_block;
  // A full selection's q_index [B, N] (0..N-1 per row) and q_block [B, N] for the batch size of
  // the calls: the same every call, so made once instead of three index ops per call. Read only.
  torch::Tensor full_q_index, full_q_block;

  // Moves the layout to `device` (the device of the calls); masks built for another device are
  // dropped and rebuilt there.
  void use_device(const torch::Device& device) {
    if (layout.order.device() == device) return;
    layout = LayoutOn(layout, device);
    row_index = torch::Tensor();
    token_block = torch::Tensor();
    model_block = torch::Tensor();
    full_q_index = torch::Tensor();
    full_q_block = torch::Tensor();
    static_masks.clear();
    plans.clear();
    cuda_plans.clear();
    for (CachedMask& c : masks) c = CachedMask();
  }

  const torch::Tensor& static_mask(PatternKind kind, double density) {
    auto key = std::make_pair(static_cast<int>(kind), density);
    auto it = static_masks.find(key);
    if (it == static_masks.end())
      it = static_masks.emplace(key, StaticPatternMask(layout, kind, density)).first;
    return it->second;
  }
};

Runtime::Runtime(Schedule schedule)
    : schedule_(std::move(schedule)), state_(std::make_shared<State>(schedule_)) {}

void Runtime::reset() {
  stats_ = AttentionStats();
  last_call_ = AttentionStats();
  state_ = std::make_shared<State>(schedule_);
}

namespace {

// The CUDA kernel cuts the sequence into equal blocks (only the last may be shorter); the layout
// cuts video and text separately, so the two agree only when every block but the last is full.
bool UniformBlocks(const Layout& l) {
  for (size_t b = 0; b + 1 < l.block_len.size(); ++b) {
    if (l.block_len[b] != l.block_size) return false;
  }
  return true;
}

// Whether sparse heads of a call can run through the CUDA block-sparse kernel (kernels/cuda).
bool UseCudaKernel(const Layout& l, const torch::Tensor& q) {
  return q.is_cuda() && cuda::CudaKernelsBuilt() && UniformBlocks(l) &&
         (l.block_size == 64 || l.block_size == 128) && (q.size(3) == 64 || q.size(3) == 128) &&
         (q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf);
}

// The key tokens a query row keeps, on average, from which the permuted kernel call pays off over
// the row-index (gather) call: the gather's extra cost grows with the kernel's work (pairs), the
// permutation's with the rows (4 permuted tensors of N rows per head). Measured on an H200, two
// calls (benchmarks/gpu-runtime-h200-2026-11-27.md): at head_dim 64 (gpu-small) the gather won
// by 8% at 1679 keys per row, the two tied from 3342 to 6328 (within +-6% between calls) and the
// permuted call won by 10% at 9196; at 128 (Wan; the gather runs the slower v4 kernel there) the
// permuted call won by 2% at 3327 and by 12-15% from 6235 up.
constexpr int64_t kPermuteMinKeysD64 = 7500;
constexpr int64_t kPermuteMinKeysD128 = 3000;

// SPARSETUNE_RT_<name> read per call ("" when unset): lets one process time both sides of a
// runtime choice (the runtime bench and scripts/gpu-rt.sh); the defaults need no setting.
std::string RuntimeEnv(const char* name) {
  const char* v = std::getenv((std::string("SPARSETUNE_RT_") + name).c_str());
  return v == nullptr ? std::string() : std::string(v);
}

// Whether the GPU kernels of kernels/cuda's aux library (mask prediction, TimeRipple,
// permutation) are in this build.
constexpr bool kCudaAux =
#ifdef SPARSETUNE_CUDA_KERNELS
    true;
#else
    false;
#endif

bool HalfPrecision(const torch::Tensor& q) {
  return q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf;
}

// block_sparse masks of full-selection calls come from the GPU mask prediction
// (kernels/cuda/mask_predict.h) instead of libtorch ops. SPARSETUNE_RT_MASK=torch forces the ops.
bool UseCudaMaskPrediction(const Layout& l, const torch::Tensor& q, bool partial) {
  return kCudaAux && q.is_cuda() && !partial && HalfPrecision(q) && q.size(3) % 8 == 0 &&
         q.size(3) <= 256 && l.blocks() <= 16384 && l.tokens < (int64_t{1} << 31) &&
         RuntimeEnv("MASK") != "torch";
}

// Whether the GPU TimeRipple kernel (kernels/cuda/ripple.h) can run a reuse step. It is not the
// default: on an H200 it ran a gpu-small reuse step no faster than the oracle (89 vs 83 ms), while
// the substituted keys run at the attention kernels' speed (docs/runtime.md, "Devices").
bool UseCudaRipple(const Layout& l, const torch::Tensor& q) {
  return kCudaAux && q.is_cuda() && HalfPrecision(q) && q.size(3) % 8 == 0 && q.size(3) <= 128 &&
         l.grid[0] >= 1 && l.grid[1] * l.grid[2] >= 1 && l.tokens < (int64_t{1} << 31);
}

// Whether the block-sparse kernel runs on q/k/v permuted into layout order (identity kernel)
// rather than through the row index (gather kernel): by the mean kept keys per query row.
// SPARSETUNE_RT_PERMUTE=1 / 0 forces one side.
bool UsePermutedKernel(int64_t pairs, int64_t rows, int64_t head_dim) {
  const std::string force = RuntimeEnv("PERMUTE");
  if (force == "1") return true;
  if (force == "0") return false;
  return rows > 0 && pairs / rows >= (head_dim >= 128 ? kPermuteMinKeysD128 : kPermuteMinKeysD64);
}

std::string ShapeOf(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

std::array<int64_t, 3> SplitOf(const ModelGeometry& m) {
  const auto& s = m.rope_split;
  if (s[0] + s[1] + s[2] == m.head_dim && s[0] >= 0 && s[1] >= 0 && s[2] >= 0) return s;
  return RopeSplitFor(m.head_dim);
}

}  // namespace

namespace {

// Whether every element of a contiguous CPU float32 tensor is finite, exactly: a float is ±inf or
// NaN when its exponent bits are all ones. An OR over per-element integer compares, which the
// compiler vectorizes with baseline SSE2 (a float sum would need reassociation) and which costs
// no libtorch op. Chunks run over libtorch's intra-op threads when large.
bool AllFiniteFloat32(const torch::Tensor& t) {
  const float* data = t.data_ptr<float>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, t.numel(), int64_t{1} << 18, [&](int64_t begin, int64_t end) {
    constexpr uint32_t kExponent = 0x7f800000u;
    uint32_t any_special = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, data + i, sizeof bits);
      any_special |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (any_special != 0) finite = false;
  });
  return finite;
}

}  // namespace

// Contiguous CPU float32 tensors (every CPU call's): one exact pass over the bits per tensor.
// Otherwise one float32 sum per tensor, added up, read back once. A NaN element makes the total
// NaN; a ±inf element makes it ±inf or NaN (inf - inf); so a finite total proves every element
// finite. The converse fails only when finite values overflow float32 while summing: a
// non-finite total therefore falls back to the exact isfinite check, which decides.
void CheckFinite(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  auto bits_pass = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  if (bits_pass(q) && bits_pass(k) && bits_pass(v)) {
    if (!AllFiniteFloat32(q) || !AllFiniteFloat32(k) || !AllFiniteFloat32(v))
      throw ShapeError("attention: q, k or v holds NaN or Inf");
    return;
  }
  const torch::Tensor total = q.sum(torch::kFloat32) + k.sum(torch::kFloat32) +
                              v.sum(torch::kFloat32);
  if (std::isfinite(total.item<float>())) return;
  for (const torch::Tensor* t : {&q, &k, &v})
    if (!torch::isfinite(*t).all().item<bool>())
      throw ShapeError("attention: q, k or v holds NaN or Inf");
}

namespace {

bool UsesTokenBudget(const Schedule& s) {
  for (double b : s.token_budget)
    if (b < 1.0) return true;
  return false;
}

void CheckStepLayer(const ModelGeometry& m, int64_t step, int64_t layer, const char* what) {
  if (step < 0 || step >= m.steps)
    throw ShapeError(std::string(what) + ": step " + std::to_string(step) + " out of range [0, " +
                     std::to_string(m.steps) + ")");
  if (layer < 0 || layer >= m.layers)
    throw ShapeError(std::string(what) + ": layer " + std::to_string(layer) +
                     " out of range [0, " + std::to_string(m.layers) + ")");
}

}  // namespace

torch::Tensor Runtime::attention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, int64_t step, int64_t layer,
                                 const TokenSelection* selection) {
  const ModelGeometry& m = schedule_.model;
  const int64_t n = m.tokens();
  if (!q.defined() || !k.defined() || !v.defined())
    throw ShapeError("attention: q, k and v must be defined tensors");
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw ShapeError("attention: q, k, v must be 4-D [B, H, N, D]; got q " + ShapeOf(q) + ", k " +
                     ShapeOf(k) + ", v " + ShapeOf(v));
  if (k.sizes() != v.sizes())
    throw ShapeError("attention: k " + ShapeOf(k) + " and v " + ShapeOf(v) + " differ in shape");
  if (k.size(1) != m.heads || k.size(2) != n || k.size(3) != m.head_dim)
    throw ShapeError("attention: k/v must be [B, " + std::to_string(m.heads) + ", " +
                     std::to_string(n) + ", " + std::to_string(m.head_dim) + "] for model '" +
                     m.name + "'; got " + ShapeOf(k));
  if (q.size(0) != k.size(0) || q.size(1) != k.size(1) || q.size(3) != k.size(3))
    throw ShapeError("attention: q " + ShapeOf(q) + " does not match k " + ShapeOf(k) +
                     " in batch, heads or head_dim");
  if (q.scalar_type() != k.scalar_type() || q.scalar_type() != v.scalar_type())
    throw ShapeError("attention: q, k, v must share one dtype");
  if (q.device() != k.device() || q.device() != v.device())
    throw ShapeError("attention: q, k, v must be on one device");
  state_->device = q.device();
  const auto dtype = q.scalar_type();
  if (q.device().is_cpu() && dtype != torch::kFloat32)
    throw ShapeError("attention: CPU tensors must be float32; got " +
                     std::string(c10::toString(dtype)));
  if (!q.device().is_cpu() && dtype != torch::kFloat32 && dtype != torch::kBFloat16 &&
      dtype != torch::kHalf)
    throw ShapeError("attention: " + q.device().str() +
                     " tensors must be float32, bfloat16 or float16; got " +
                     std::string(c10::toString(dtype)));
  CheckStepLayer(m, step, layer, "attention");
  const int64_t batch = q.size(0);
  if (batch < 1) throw ShapeError("attention: batch must be >= 1");
  const bool partial = selection != nullptr && !selection->all();
  torch::Tensor q_index;  // [B, Nq] model index of each query row
  if (partial) {
    const torch::Tensor idx = selection->index.defined() ? selection->index.cpu() : torch::Tensor();
    if (idx.dim() != 2 || idx.size(0) != batch || idx.scalar_type() != torch::kInt64)
      throw ShapeError("attention: selection index must be int64 [B, k] with B = " +
                       std::to_string(batch) + "; got " + ShapeOf(idx));
    if (q.size(2) != idx.size(1))
      throw ShapeError("attention: q has " + std::to_string(q.size(2)) +
                       " tokens but the selection holds " + std::to_string(idx.size(1)));
    if (selection->tokens != n || idx.numel() == 0 || idx.min().item<int64_t>() < 0 ||
        idx.max().item<int64_t>() >= n ||
        (idx.size(1) > 1 && !(idx.narrow(1, 1, idx.size(1) - 1) >
                              idx.narrow(1, 0, idx.size(1) - 1)).all().item<bool>()))
      throw ShapeError("attention: selection indices must be strictly ascending in [0, " +
                       std::to_string(n) + ")");
    q_index = idx.to(q.device()).contiguous();
  } else if (q.size(2) != n) {
    throw ShapeError("attention: q must hold all " + std::to_string(n) +
                     " tokens when no partial selection is given; got " + ShapeOf(q));
  }
  CheckFinite(q, k, v);

  State& st = *state_;
  st.use_device(q.device());
  const Layout& lay = st.layout;
  // [B, Nq] layout block of each query row.
  torch::Tensor q_block;
  if (partial) {
    if (!st.model_block.defined()) st.model_block = lay.block_of.index_select(0, lay.position);
    q_block = st.model_block.index_select(0, q_index.reshape({-1})).reshape({batch, q.size(2)});
  } else {
    if (!st.full_q_index.defined() || st.full_q_index.size(0) != batch) {
      st.full_q_index =
          torch::arange(n, q.options().dtype(torch::kInt64)).unsqueeze(0).expand({batch, n}).contiguous();
      st.full_q_block = lay.block_of.index_select(0, lay.position)
                            .unsqueeze(0)
                            .expand({batch, n})
                            .contiguous();
    }
    q_index = st.full_q_index;
    q_block = st.full_q_block;
  }
  const int64_t heads = m.heads;
  const int64_t nq = q.size(2);
  AttentionStats call;
  call.calls = 1;

  // Resolve each head's block mask ([B, nb, nb]) or leave it undefined for a dense head.
  std::vector<torch::Tensor> masks(static_cast<size_t>(heads));
  std::vector<int64_t> mask_id = {batch, nq};  // plan key: which mask each sparse head runs
  // The keys the attention runs on: k, or on CUDA reuse steps k with TimeRipple's substitutions
  // (masks are always built from k itself).
  torch::Tensor ka = k;
  torch::Tensor kl;  // ka in layout order, made when a sparse head needs it
  auto keys_in_layout = [&]() -> const torch::Tensor& {
    if (!kl.defined()) kl = PermuteTokens(ka, lay.order);
    return kl;
  };
  // Per head: the resolved pattern (ARM's pick for auto).
  std::vector<HeadPattern> resolved(static_cast<size_t>(heads));
  // block_sparse heads whose mask is rebuilt on the GPU this call, grouped by (keep, sink).
  std::map<std::pair<double, bool>, std::vector<int64_t>> gpu_builds;
  const bool gpu_masks = UseCudaMaskPrediction(lay, q, partial);
  for (int64_t h = 0; h < heads; ++h) {
    HeadPattern p = schedule_.pattern_at(step, layer, h);
    const size_t slot = static_cast<size_t>(layer * heads + h);
    if (p.pattern == PatternKind::kAuto) {
      State::ArmState& a = st.arm[slot];
      if (a.first_step < 0) a.first_step = step;
      if (a.last_step < 0 || (step - a.first_step) % p.arm_refresh == 0) {
        if (a.last_step != step) {
          const std::array<torch::Tensor, 3> cands = {
              st.static_mask(PatternKind::kSpatial, p.density),
              st.static_mask(PatternKind::kTemporal, p.density),
              st.static_mask(PatternKind::kTextural, p.density)};
          a.pick = ArmPick(ArmRecall(lay, q.select(1, h), q_index, k.select(1, h), cands));
          a.last_step = step;
          ++call.arm_runs;
        }
      }
      p.pattern = a.pick;
    }
    resolved[static_cast<size_t>(h)] = p;
    switch (p.pattern) {
      case PatternKind::kDense:
        break;
      case PatternKind::kSpatial:
      case PatternKind::kTemporal:
      case PatternKind::kTextural:
        if (p.density < 1.0)
          masks[static_cast<size_t>(h)] =
              st.static_mask(p.pattern, p.density).unsqueeze(0).expand({batch, -1, -1});
        break;
      case PatternKind::kBlockSparse: {
        State::CachedMask& c = st.masks[slot];
        if (c.first_step < 0) c.first_step = step;
        const bool stale = !c.mask.defined() || c.mask.size(0) != batch || c.keep != p.keep ||
                           c.sink != p.first_frame_sink ||
                           (step - c.first_step) % p.mask_refresh == 0;
        if (stale && gpu_masks) {
          gpu_builds[{p.keep, p.first_frame_sink}].push_back(h);
        } else if (stale) {
          // A partial selection pools each block's left-out queries at the previous build's
          // representative (BuildBlockSparseMask), so the mask does not hinge on which few
          // queries of a block Astraea happened to select.
          // On the CPU the mask comes from plain loops (MaskBuild::kAuto); SPARSETUNE_RT_MASK=torch
          // forces the libtorch ops there too, for A/B timing.
          BlockSparseMaskResult r = BuildBlockSparseMask(
              lay, q.select(1, h), keys_in_layout().select(1, h), q_block, p.keep,
              p.first_frame_sink, c.mask.defined() ? c.pooled_q : torch::Tensor(),
              RuntimeEnv("MASK") == "torch" ? MaskBuild::kTorch : MaskBuild::kAuto);
          c.mask = r.mask;
          c.pooled_q = r.pooled_q;
          c.keep = p.keep;
          c.sink = p.first_frame_sink;
          c.serial = ++st.mask_serial;
          ++call.mask_builds;
        }
        break;
      }
      case PatternKind::kAuto:
        break;
    }
  }
#ifdef SPARSETUNE_CUDA_KERNELS
  // One GPU prediction per (keep, sink) group for every stale head of the group: the mask and
  // block query means BuildBlockSparseMask gives a full selection (docs/runtime.md, "Devices").
  for (const auto& [params, group] : gpu_builds) {
    const int64_t hg = static_cast<int64_t>(group.size());
    torch::Tensor qg = q, kg = k;
    if (hg != heads) {
      const torch::Tensor gi = torch::tensor(group, torch::kInt64).to(q.device());
      qg = q.index_select(1, gi);
      kg = k.index_select(1, gi);
    }
    const cuda::MaskPrediction mp = cuda::PredictBlockMask(lay, qg.contiguous(), kg.contiguous(),
                                                           params.first, params.second);
    const torch::Tensor dense = cuda::MaskBitsToDense(mp, batch, hg);
    for (int64_t i = 0; i < hg; ++i) {
      const int64_t h = group[static_cast<size_t>(i)];
      State::CachedMask& c = st.masks[static_cast<size_t>(layer * heads + h)];
      c.mask = dense.select(1, i);
      c.pooled_q = mp.pooled[0].select(1, i);
      c.keep = params.first;
      c.sink = params.second;
      c.serial = ++st.mask_serial;
      ++call.mask_builds;
    }
  }
#endif
  // Masks and plan keys in head order, whichever heads were rebuilt and where.
  for (int64_t h = 0; h < heads; ++h) {
    const HeadPattern& p = resolved[static_cast<size_t>(h)];
    if (p.pattern == PatternKind::kBlockSparse) {
      const State::CachedMask& c = st.masks[static_cast<size_t>(layer * heads + h)];
      masks[static_cast<size_t>(h)] = c.mask;
      mask_id.insert(mask_id.end(), {h, static_cast<int64_t>(PatternKind::kBlockSparse), c.serial});
    } else if (masks[static_cast<size_t>(h)].defined()) {
      int64_t bits = 0;
      std::memcpy(&bits, &p.density, sizeof bits);
      mask_id.insert(mask_id.end(), {h, static_cast<int64_t>(p.pattern), bits});
    }
  }

  std::vector<int64_t> dense_heads, sparse_heads;
  for (int64_t h = 0; h < heads; ++h)
    (masks[static_cast<size_t>(h)].defined() ? sparse_heads : dense_heads).push_back(h);
  const int64_t hs = static_cast<int64_t>(sparse_heads.size());
  const bool reuse_step = schedule_.reuse.enabled &&
                         step < static_cast<int64_t>(schedule_.reuse.threshold.size()) &&
                         schedule_.reuse.threshold[static_cast<size_t>(step)] <= 1.0;
  const double reuse_threshold =
      reuse_step ? schedule_.reuse.threshold[static_cast<size_t>(step)] : 2.0;
  // How a reuse step runs (docs/runtime.md, "Devices"): on CUDA by default as ordinary attention
  // on substituted keys (exact oracle semantics, any kernel below); SPARSETUNE_RT_RIPPLE=kernel
  // takes the GPU TimeRipple kernel where it applies, =oracle (and the CPU) the oracle.
  const std::string ripple_env = reuse_step && q.is_cuda() ? RuntimeEnv("RIPPLE") : std::string();
  const bool ripple_kernel = reuse_step && ripple_env == "kernel" && UseCudaRipple(lay, q);
  const bool ripple_keys = reuse_step && q.is_cuda() && !ripple_kernel && ripple_env != "oracle";
  // `reuse`: the step runs one of the two TimeRipple-specific paths instead of the attention
  // kernels.
  const bool reuse = reuse_step && !ripple_keys;
  if (ripple_keys) {
    const RippleSubstitution rk = RippleSubstituteKeys(lay, k, SplitOf(m), reuse_threshold);
    call.qk_macs_skipped = RippleSkippedMacs(lay, rk.reuse, masks, q_block, SplitOf(m));
    ka = rk.keys;
    kl = torch::Tensor();
  }
  // Sparse heads stacked into one mask [B*hs, nb, nb] (batch-major).
  auto stacked_mask = [&]() {
    std::vector<torch::Tensor> sm;
    for (int64_t h : sparse_heads) sm.push_back(masks[static_cast<size_t>(h)]);
    return torch::stack(sm, 1).reshape({batch * hs, lay.blocks(), lay.blocks()});
  };
  // The CPU path runs sparse heads through a plan, cached for full selections (a partial
  // selection changes every step).
  const SparsePlan* plan = nullptr;
  SparsePlan fresh_plan;
  if (!reuse && hs > 0 && q.device().is_cpu()) {
    auto it = partial ? st.plans.end() : st.plans.find(mask_id);
    if (it != st.plans.end()) {
      plan = &it->second;
    } else {
      fresh_plan = BuildSparsePlan(lay, stacked_mask(), q_block, hs, m.head_dim);
      if (!partial) {
        if (st.plans.size() >= State::kMaxPlans) st.plans.clear();
        plan = &st.plans.emplace(mask_id, std::move(fresh_plan)).first->second;
      } else {
        plan = &fresh_plan;
      }
    }
  }

  // On CUDA, full selections run sparse heads through the block-sparse kernel (its CSR cached
  // per mask like the CPU plans); partial selections and other shapes take MaskedAttention.
  const State::CudaPlan* cuda_plan = nullptr;
  if (!reuse && hs > 0 && !partial && UseCudaKernel(lay, q)) {
    auto it = st.cuda_plans.find(mask_id);
    if (it == st.cuda_plans.end()) {
      if (st.cuda_plans.size() >= State::kMaxPlans) st.cuda_plans.clear();
      const torch::Tensor sm = stacked_mask();
      State::CudaPlan cp;
      cp.csr = cuda::BlockCsrFromMask(sm.unsqueeze(1), lay.block_size);
      cp.pairs = KeyTokensPerRow(lay, sm).gather(1, q_block.repeat_interleave(hs, 0)).sum()
                     .item<int64_t>();
      it = st.cuda_plans.emplace(mask_id, std::move(cp)).first;
    }
    cuda_plan = &it->second;
  }

  // Pairs computed per head from the masks (partial blocks and the query selection included).
  call.pairs_computed += static_cast<int64_t>(dense_heads.size()) * batch * nq * n;
  if (plan != nullptr) {
    call.pairs_computed += plan->pairs;
  } else if (cuda_plan != nullptr) {
    call.pairs_computed += cuda_plan->pairs;
  } else {
    for (int64_t h : sparse_heads)
      call.pairs_computed +=
          KeyTokensPerRow(lay, masks[static_cast<size_t>(h)]).gather(1, q_block).sum().item<int64_t>();
  }

  // Astraea reads the recorded LSE only when some step has a token budget below 1, so only then is
  // it recorded (a head mean and a scatter per call). Off the CPU the dense kernel gives no LSE
  // for free and it is not computed otherwise either; on the CPU every kernel returns it anyway.
  const bool record_lse = UsesTokenBudget(schedule_);
  const bool need_lse = q.device().is_cpu() || record_lse;
  torch::Tensor out, lse;
  if (ripple_kernel) {
#ifdef SPARSETUNE_CUDA_KERNELS
    // The GPU kernel reuses a group only for whole 32-key tiles (kernels/cuda/ripple.h), so it
    // skips at most what the oracle skips; sparse heads pass their masks, dense heads none.
    cuda::RippleMask rm;
    if (hs > 0) {
      if (!st.token_block.defined())
        st.token_block = lay.block_of.index_select(0, lay.position).to(torch::kInt32).contiguous();
      std::vector<torch::Tensor> all;
      torch::Tensor full;
      for (int64_t h = 0; h < heads; ++h) {
        const torch::Tensor& mh = masks[static_cast<size_t>(h)];
        if (!mh.defined() && !full.defined())
          full = torch::ones({batch, lay.blocks(), lay.blocks()}, q.options().dtype(torch::kBool));
        all.push_back(mh.defined() ? mh : full);
      }
      rm.mask = torch::stack(all, 1).contiguous();
      rm.q_block = q_block.to(torch::kInt32).contiguous();
      rm.key_block = st.token_block;
    }
    cuda::RippleResult r = cuda::RippleAttention(
        lay, q.contiguous(), k.contiguous(), v.contiguous(), SplitOf(m), reuse_threshold,
        hs > 0 ? &rm : nullptr);
    out = r.out, lse = r.lse;
    call.qk_macs_skipped = r.macs_skipped;
#endif
  } else if (reuse) {
    RippleOutput r = RippleAttention(lay, q, q_index, k, v, masks, SplitOf(m), reuse_threshold);
    out = r.out, lse = r.lse;
    call.qk_macs_skipped = r.macs_skipped;
  } else {
    if (hs == 0) {
      AttentionOutput d = DenseAttention(q, ka, v, need_lse);
      out = d.out, lse = d.lse;
    } else {
      const bool all_sparse = hs == heads;
      const torch::Tensor hi =
          all_sparse ? torch::Tensor()
                     : torch::tensor(sparse_heads, torch::kInt64).to(q.device());
      auto flat = [&](const torch::Tensor& x) {
        return (all_sparse ? x : x.index_select(1, hi)).reshape({batch * hs, x.size(2), x.size(3)});
      };
      AttentionOutput s;
      if (cuda_plan != nullptr) {
        // The kernel sees q, k, v in MODEL order as [B*hs, 1, N, D] (views when every head is
        // sparse and the inputs are contiguous) and cuts its blocks over layout positions through
        // the row index; out and lse come back in model order.
        const int64_t g = batch * hs;
        const double scale = 1.0 / std::sqrt(static_cast<double>(m.head_dim));
        auto as4 = [&](const torch::Tensor& x) {
          return flat(x).reshape({g, 1, n, m.head_dim}).contiguous();
        };
        if (kCudaAux && UsePermutedKernel(cuda_plan->pairs, g * n, m.head_dim)) {
#ifdef SPARSETUNE_CUDA_KERNELS
          // q, k, v permuted into layout order once, the identity kernel, out and lse back.
          AttentionOutput r = cuda::BlockSparseAttentionCuda(
              cuda::PermuteRows(as4(q), lay.order), cuda::PermuteRows(as4(ka), lay.order),
              cuda::PermuteRows(as4(v), lay.order), cuda_plan->csr, scale);
          s.out = cuda::PermuteRows(r.out, lay.position).view({g, n, m.head_dim});
          s.lse = r.lse.view({g, n}).index_select(1, lay.position);
#endif
        } else {
          if (!st.row_index.defined()) st.row_index = lay.order.to(torch::kInt32).contiguous();
          AttentionOutput r = cuda::BlockSparseAttentionCuda(as4(q), as4(ka), as4(v),
                                                             cuda_plan->csr, scale,
                                                             /*validate=*/false, st.row_index);
          s.out = r.out.view({g, n, m.head_dim});
          s.lse = r.lse.view({g, n});
        }
      } else {
        const torch::Tensor vl = PermuteTokens(v, lay.order);
        if (plan != nullptr) {
          s = RunSparsePlan(*plan, flat(q), flat(keys_in_layout()), flat(vl));
        } else {
          s = MaskedAttention(lay, flat(q), q_block, flat(keys_in_layout()), flat(vl),
                              stacked_mask(), hs);
        }
      }
      if (all_sparse) {
        out = s.out.view({batch, heads, nq, m.head_dim});
        lse = s.lse.view({batch, heads, nq});
      } else {
        out = torch::empty_like(q);
        lse = torch::empty({batch, heads, nq}, q.options().dtype(torch::kFloat32));
        const torch::Tensor di = torch::tensor(dense_heads, torch::kInt64).to(q.device());
        AttentionOutput d = DenseAttention(q.index_select(1, di), ka.index_select(1, di),
                                           v.index_select(1, di), need_lse);
        out.index_copy_(1, di, d.out);
        if (d.lse.defined()) lse.index_copy_(1, di, d.lse);
        out.index_copy_(1, hi, s.out.view({batch, hs, nq, m.head_dim}));
        lse.index_copy_(1, hi, s.lse.view({batch, hs, nq}));
      }
    }
  }
  if (lse.defined() && record_lse) st.tokens.record_lse(layer, q_index, lse.mean(1));

  call.pairs_total = batch * heads * n * n;
  call.tokens_total = batch * n;
  call.tokens_computed = batch * nq;
  call.qk_macs_total = call.pairs_computed * m.head_dim;
  last_call_ = call;
  stats_ += call;
  return out;
}

TokenSelection Runtime::select_tokens(int64_t step, int64_t layer, int64_t batch) {
  const ModelGeometry& m = schedule_.model;
  CheckStepLayer(m, step, layer, "select_tokens");
  if (batch < 1) throw ShapeError("select_tokens: batch must be >= 1");
  const double budget = schedule_.budget_at(step);
  if (budget >= 1.0 || step < schedule_.dense_warmup_steps || !state_->tokens.ready(layer, batch)) {
    TokenSelection sel;
    sel.tokens = m.tokens();
    return sel;
  }
  TokenSelection sel = state_->tokens.select(layer, budget);
  if (sel.index.device() != state_->device) sel.index = sel.index.to(state_->device);
  return sel;
}

torch::Tensor Runtime::complete_update(int64_t step, int64_t layer, const TokenSelection& selection,
                                       const torch::Tensor& update) {
  CheckStepLayer(schedule_.model, step, layer, "complete_update");
  if (!update.defined() || update.dim() != 3)
    throw ShapeError("complete_update: update must be a 3-D tensor [B, k, C]");
  if (selection.tokens != schedule_.model.tokens())
    throw ShapeError("complete_update: selection is for " + std::to_string(selection.tokens) +
                     " tokens, the model has " + std::to_string(schedule_.model.tokens()));
  state_->device = update.device();
  return state_->tokens.complete(layer, selection, update);
}

int64_t Runtime::cache_bytes() const {
  int64_t bytes = state_->tokens.bytes();
  for (const auto& [key, plan] : state_->plans) bytes += plan.bytes();
  for (const auto& c : state_->masks)
    if (c.mask.defined()) bytes += c.mask.numel() * static_cast<int64_t>(c.mask.element_size());
  return bytes;
}

torch::Tensor Runtime::block_mask(int64_t layer, int64_t head) const {
  if (layer < 0 || layer >= schedule_.model.layers || head < 0 || head >= schedule_.model.heads)
    throw ShapeError("block_mask: (layer " + std::to_string(layer) + ", head " +
                     std::to_string(head) + ") out of range");
  return state_->masks[static_cast<size_t>(layer * schedule_.model.heads + head)].mask;
}

std::vector<PatternKind> Runtime::arm_picks(int64_t layer) const {
  if (layer < 0 || layer >= schedule_.model.layers)
    throw ShapeError("arm_picks: layer " + std::to_string(layer) + " out of range");
  std::vector<PatternKind> picks;
  for (int64_t h = 0; h < schedule_.model.heads; ++h)
    picks.push_back(state_->arm[static_cast<size_t>(layer * schedule_.model.heads + h)].pick);
  return picks;
}

}  // namespace sparsetune
