// Runtime: executes a Schedule for the attention calls of one generation (see runtime.h and
// docs/runtime.md). This first version runs every head dense and computes every token; the
// sparse patterns, Astraea and TimeRipple follow in the same file's later revisions.
#include "kernels/runtime.h"

#include <sstream>
#include <string>

#include "core/error.h"

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
  std::vector<torch::Tensor> token_cache;  // per layer: [B, N, C] last residual update per token
};

Runtime::Runtime(Schedule schedule) : schedule_(std::move(schedule)), state_(std::make_shared<State>()) {
  state_->token_cache.resize(static_cast<size_t>(schedule_.model.layers));
}

void Runtime::reset() {
  stats_ = AttentionStats();
  last_call_ = AttentionStats();
  state_ = std::make_shared<State>();
  state_->token_cache.resize(static_cast<size_t>(schedule_.model.layers));
}

namespace {

std::string ShapeOf(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
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
  if (q.device().is_cpu() && q.scalar_type() != torch::kFloat32)
    throw ShapeError("attention: CPU tensors must be float32");
  if (step < 0 || step >= m.steps)
    throw ShapeError("attention: step " + std::to_string(step) + " out of range [0, " +
                     std::to_string(m.steps) + ")");
  if (layer < 0 || layer >= m.layers)
    throw ShapeError("attention: layer " + std::to_string(layer) + " out of range [0, " +
                     std::to_string(m.layers) + ")");
  const int64_t batch = q.size(0);
  const bool partial = selection != nullptr && !selection->all();
  if (partial) {
    const torch::Tensor& idx = selection->index;
    if (idx.dim() != 2 || idx.size(0) != batch || idx.scalar_type() != torch::kInt64)
      throw ShapeError("attention: selection index must be int64 [B, k] with B = " +
                       std::to_string(batch) + "; got " + ShapeOf(idx));
    if (q.size(2) != idx.size(1))
      throw ShapeError("attention: q has " + std::to_string(q.size(2)) +
                       " tokens but the selection holds " + std::to_string(idx.size(1)));
  } else if (q.size(2) != n) {
    throw ShapeError("attention: q must hold all " + std::to_string(n) +
                     " tokens when no partial selection is given; got " + ShapeOf(q));
  }
  if (!torch::isfinite(q).all().item<bool>() || !torch::isfinite(k).all().item<bool>() ||
      !torch::isfinite(v).all().item<bool>())
    throw ShapeError("attention: q, k or v holds NaN or Inf");

  // Dense: each computed query (all, or the selected ones) sees every key.
  const torch::Tensor out = torch::scaled_dot_product_attention(q, k, v);
  const int64_t heads = q.size(1);
  const int64_t nq = q.size(2);
  AttentionStats call;
  call.calls = 1;
  call.pairs_total = batch * heads * n * n;
  call.pairs_computed = batch * heads * nq * n;
  call.tokens_total = batch * n;
  call.tokens_computed = batch * nq;
  call.qk_macs_total = call.pairs_computed * m.head_dim;
  last_call_ = call;
  stats_ += call;
  return out;
}

TokenSelection Runtime::select_tokens(int64_t step, int64_t layer, int64_t batch) {
  const ModelGeometry& m = schedule_.model;
  if (step < 0 || step >= m.steps)
    throw ShapeError("select_tokens: step " + std::to_string(step) + " out of range");
  if (layer < 0 || layer >= m.layers)
    throw ShapeError("select_tokens: layer " + std::to_string(layer) + " out of range");
  if (batch < 1) throw ShapeError("select_tokens: batch must be >= 1");
  TokenSelection sel;
  sel.tokens = m.tokens();
  return sel;
}

torch::Tensor Runtime::complete_update(int64_t step, int64_t layer, const TokenSelection& selection,
                                       const torch::Tensor& update) {
  const ModelGeometry& m = schedule_.model;
  if (layer < 0 || layer >= m.layers)
    throw ShapeError("complete_update: layer " + std::to_string(layer) + " out of range");
  if (update.dim() != 3 || update.size(1) != selection.count())
    throw ShapeError("complete_update: update must be [B, " + std::to_string(selection.count()) +
                     ", C]; got " + ShapeOf(update));
  if (!selection.all())
    throw ShapeError("complete_update: partial selections need the token cache (not built yet)");
  state_->token_cache[static_cast<size_t>(layer)] = update.detach().clone();
  return update;
}

int64_t Runtime::cache_bytes() const {
  int64_t bytes = 0;
  for (const auto& t : state_->token_cache)
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

std::vector<PatternKind> Runtime::arm_picks(int64_t layer) const {
  return std::vector<PatternKind>(static_cast<size_t>(schedule_.model.heads), PatternKind::kDense);
}

}  // namespace sparsetune
