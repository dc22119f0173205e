#include "kernels/token_cache.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace sparsetune {

namespace {

// exp(n_skip) is capped here so long skips cannot overflow; far beyond any rotation bound.
constexpr int64_t kMaxSkipExponent = 60;

std::string ShapeStr(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

TokenCache::TokenCache(int64_t layers, int64_t tokens, int64_t video_offset, int64_t video_tokens)
    : tokens_(tokens), video_offset_(video_offset), video_tokens_(video_tokens),
      layers_(static_cast<size_t>(layers)) {}

void TokenCache::reset() {
  for (Layer& l : layers_) l = Layer();
}

bool TokenCache::ready(int64_t layer, int64_t batch) const {
  const Layer& l = layers_[static_cast<size_t>(layer)];
  return l.update.defined() && l.update.size(0) == batch;
}

void TokenCache::record_lse(int64_t layer, const torch::Tensor& q_index, const torch::Tensor& lse) {
  Layer& l = layers_[static_cast<size_t>(layer)];
  const int64_t batch = q_index.size(0);
  if (!l.lse.defined() || l.lse.size(0) != batch) l.lse = torch::zeros({batch, tokens_});
  l.lse.scatter_(1, q_index.cpu(), lse.to(torch::kFloat32).cpu());
}

torch::Tensor TokenCache::scores(int64_t layer) const {
  const Layer& l = layers_[static_cast<size_t>(layer)];
  const int64_t batch = l.update.size(0);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor lse = l.lse.defined() && l.lse.size(0) == batch
                                ? l.lse.to(torch::kFloat64)
                                : torch::zeros({batch, tokens_}, f64);
  torch::Tensor sig = lse * l.delta.to(torch::kFloat64);
  // Min-max normalisation over the video tokens of each row, to [0, 1].
  const torch::Tensor video = sig.narrow(1, video_offset_, video_tokens_);
  const torch::Tensor lo = std::get<0>(video.min(1, true));
  const torch::Tensor hi = std::get<0>(video.max(1, true));
  sig = (sig - lo) / (hi - lo).clamp_min(1e-30);
  const torch::Tensor penalty =
      kPenaltyWeight * l.skipped.clamp_max(kMaxSkipExponent).to(torch::kFloat64).exp();
  torch::Tensor s = torch::full({batch, tokens_}, std::numeric_limits<double>::infinity(), f64);
  s.narrow(1, video_offset_, video_tokens_)
      .copy_((sig + penalty).narrow(1, video_offset_, video_tokens_));
  return s;
}

TokenSelection TokenCache::select(int64_t layer, double budget) const {
  const torch::Tensor s = scores(layer);
  const int64_t k_video = std::min<int64_t>(
      video_tokens_,
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(budget * video_tokens_ - 1e-9))));
  const int64_t text = tokens_ - video_tokens_;
  // Stable descending sort: equal scores keep ascending index order.
  const torch::Tensor idx =
      std::get<1>(s.sort(/*stable=*/true, 1, /*descending=*/true)).narrow(1, 0, text + k_video);
  TokenSelection sel;
  sel.tokens = tokens_;
  sel.index = std::get<0>(idx.sort(1));
  return sel;
}

torch::Tensor TokenCache::complete(int64_t layer, const TokenSelection& selection,
                                   const torch::Tensor& update) {
  Layer& l = layers_[static_cast<size_t>(layer)];
  const int64_t batch = update.size(0);
  const torch::Tensor u = update.detach();
  torch::Tensor fresh_rows;  // [B, k] model indices of the computed tokens
  torch::Tensor merged;
  if (selection.all()) {
    if (update.size(1) != tokens_)
      throw ShapeError("complete_update: update must be [B, " + std::to_string(tokens_) +
                       ", C] when all tokens are selected; got " + ShapeStr(update));
    fresh_rows = torch::arange(tokens_, torch::kInt64).unsqueeze(0).expand({batch, tokens_});
    merged = u.clone();
    if (l.update.defined() && l.update.device() != u.device()) l.update = torch::Tensor();
  } else {
    if (!ready(layer, batch))
      throw ShapeError("complete_update: partial selection for layer " + std::to_string(layer) +
                       " but no cached update for a batch of " + std::to_string(batch));
    if (update.size(1) != selection.count() || selection.index.size(0) != batch ||
        update.size(2) != l.update.size(2))
      throw ShapeError("complete_update: update " + ShapeStr(update) + " does not match the " +
                       "selection [" + std::to_string(selection.index.size(0)) + ", " +
                       std::to_string(selection.count()) + "] and the cached channels " +
                       std::to_string(l.update.size(2)));
    if (u.device() != l.update.device())
      throw ShapeError("complete_update: update is on " + u.device().str() +
                       " but the cached updates are on " + l.update.device().str());
    fresh_rows = selection.index.cpu();
    merged = l.update.clone();
    merged.scatter_(1,
                    fresh_rows.to(u.device()).unsqueeze(2).expand({batch, fresh_rows.size(1), u.size(2)}),
                    u.to(merged.scalar_type()));
  }
  if (!l.delta.defined() || l.delta.size(0) != batch) {
    // No history: every token counts as fully changing.
    l.delta = torch::ones({batch, tokens_});
    l.skipped = torch::zeros({batch, tokens_}, torch::kInt64);
  }
  if (l.update.defined() && l.update.sizes() == merged.sizes()) {
    // Cached updates live on the update's device; the token bookkeeping stays on the CPU.
    const torch::Tensor idx3 =
        fresh_rows.to(merged.device()).unsqueeze(2).expand({batch, fresh_rows.size(1), merged.size(2)});
    const torch::Tensor now = merged.gather(1, idx3).to(torch::kFloat32);
    const torch::Tensor before = l.update.gather(1, idx3).to(torch::kFloat32);
    const torch::Tensor rel = (now - before).norm(2, 2) / before.norm(2, 2).clamp_min(1e-12);
    l.delta.scatter_(1, fresh_rows, rel.cpu());
  }
  torch::Tensor chosen = torch::zeros({batch, tokens_}, torch::kBool);
  chosen.scatter_(1, fresh_rows, true);
  l.skipped = torch::where(chosen, torch::zeros_like(l.skipped), l.skipped + 1);
  l.update = merged;
  return merged.clone();
}

int64_t TokenCache::bytes() const {
  int64_t total = 0;
  for (const Layer& l : layers_)
    for (const torch::Tensor* t : {&l.update, &l.lse, &l.delta, &l.skipped})
      if (t->defined()) total += t->numel() * static_cast<int64_t>(t->element_size());
  return total;
}

}  // namespace sparsetune
