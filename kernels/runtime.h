// The sparse-attention runtime: executes a Schedule for the attention calls of one generation.
//
//   Runtime rt(schedule);                       // one per generation stream; not thread-safe
//   for step: for layer:
//     TokenSelection sel = rt.select_tokens(step, layer, batch);   // Astraea budget
//     ... the block computes q for the selected tokens, k and v for all tokens ...
//     o = rt.attention(q, k, v, step, layer, &sel);               // pattern of each head
//     ... the block finishes its work for the selected tokens -> update [B, k, C] ...
//     full_update = rt.complete_update(step, layer, sel, update); // cached rows for the rest
//   rt.reset();                                  // before the next generation
//
// Token indices are positions in the model's joint sequence (text front/back + video tokens in
// raster [frame, row, column] order); the runtime permutes to the schedule's token order
// internally and returns results in model order. Inputs are checked here (shapes, dtypes, NaN,
// geometry) and rejected with a ShapeError that says what was expected.
// Devices: CPU takes float32; CUDA (any non-CPU device) takes float32, bfloat16 or float16, with
// float32 softmax and accumulation. Every internal tensor is made on q's device; the layout and
// masks follow the device of the calls (moved once when it changes).
// Semantics of every pattern: docs/runtime.md.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "kernels/schedule.h"

namespace sparsetune {

// Work done by attention calls; accumulates over calls (see Runtime::stats).
struct AttentionStats {
  int64_t calls = 0;
  int64_t pairs_total = 0;       // q·k pairs dense attention would compute (all tokens)
  int64_t pairs_computed = 0;    // q·k pairs actually computed
  int64_t tokens_total = 0;      // query tokens dense attention would compute
  int64_t tokens_computed = 0;   // query tokens actually computed (Astraea selection)
  int64_t qk_macs_total = 0;     // q·k multiply-adds of the computed pairs before reuse
  int64_t qk_macs_skipped = 0;   // of those, skipped by TimeRipple reuse
  int64_t mask_builds = 0;       // block_sparse masks computed (not served from cache)
  int64_t arm_runs = 0;          // ARM recognitions run

  // Fraction of q·k pairs computed, counting reuse as skipped work.
  double density() const;
  // Fraction of query tokens computed.
  double token_density() const;
  AttentionStats& operator+=(const AttentionStats& o);
};

// The tokens a block computes at one (step, layer).
struct TokenSelection {
  torch::Tensor index;  // [B, k] int64 ascending token indices; undefined = all tokens
  int64_t tokens = 0;   // N, tokens in the joint sequence
  bool all() const { return !index.defined(); }
  int64_t count() const { return all() ? tokens : index.size(1); }
};

// Throws ShapeError when q, k or v holds a NaN or ±Inf; exact, and cheap on finite inputs (contiguous
// CPU float32: one integer pass over the bits per tensor, no libtorch op; otherwise one reduction
// per tensor, and the exact per-element check runs only when the cheap one fires).
void CheckFinite(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

class Runtime {
 public:
  explicit Runtime(Schedule schedule);

  const Schedule& schedule() const { return schedule_; }

  // Forgets every cache (token cache, masks, ARM picks, reuse state); call between generations.
  void reset();

  // Attention for (step, layer). k, v: [B, H, N, D]; q: [B, H, N, D], or [B, H, k, D] holding the
  // selected tokens' queries when `selection` is partial. Returns [B, H, Nq, D] in q's order.
  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          int64_t step, int64_t layer, const TokenSelection* selection = nullptr);

  // Astraea: the tokens to compute at (step, layer) for a batch of `batch` sequences.
  TokenSelection select_tokens(int64_t step, int64_t layer, int64_t batch);

  // Astraea: merges the block's residual update of the selected tokens ([B, k, C], or [B, N, C]
  // when all are selected) with the cached updates of the others; returns [B, N, C] and refreshes
  // the cache and token scores. Memory: one cached activation per token per layer.
  torch::Tensor complete_update(int64_t step, int64_t layer, const TokenSelection& selection,
                                const torch::Tensor& update);

  // Work since the last reset().
  const AttentionStats& stats() const { return stats_; }
  // Work of the most recent attention() call.
  const AttentionStats& last_call() const { return last_call_; }
  // Bytes held by the token cache, the mask cache and the cached sparse plans right now.
  int64_t cache_bytes() const;
  // ARM's most recent pick per head for `layer` (kDense where ARM has not run).
  std::vector<PatternKind> arm_picks(int64_t layer) const;
  // The cached block_sparse mask [B, nb, nb] (bool, layout blocks) of (layer, head); undefined
  // when that head has not run block_sparse since reset(). ShapeError out of range.
  torch::Tensor block_mask(int64_t layer, int64_t head) const;

 private:
  struct State;
  Schedule schedule_;
  AttentionStats stats_;
  AttentionStats last_call_;
  std::shared_ptr<State> state_;
};

}  // namespace sparsetune
