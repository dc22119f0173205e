// ARM recognition, partial query selection and Astraea token selection / update cache.
#include <algorithm>
#include <string>

#include "core/error.h"
#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "kernels/runtime.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

// q = k for one head with structure: `kind` selects which tokens look alike.
torch::Tensor Structured(PatternKind kind, const ModelGeometry& m, int64_t seed) {
  const int64_t f = m.grid[0], h = m.grid[1], w = m.grid[2];
  torch::Tensor x = Rand(seed, {m.tokens(), m.head_dim}) * 0.1;
  const double alpha = 8.0;
  for (int64_t fi = 0; fi < f; ++fi)
    for (int64_t hi = 0; hi < h; ++hi)
      for (int64_t wi = 0; wi < w; ++wi) {
        const int64_t t = (fi * h + hi) * w + wi;
        if (kind == PatternKind::kSpatial) x[t][fi] += alpha;  // same frame looks alike
        if (kind == PatternKind::kTemporal) x[t][hi] += alpha;  // same row in every frame
        if (kind == PatternKind::kTextural) {
          // Every query points at u = channel 31; only the stripe keys (rows 0-1) carry it.
          x[t][31] += hi < 2 ? alpha : 0.0;
        }
      }
  return x;
}

// Pattern names, so Catch can print a failing comparison.
std::vector<std::string> Names(const std::vector<PatternKind>& kinds) {
  std::vector<std::string> out;
  for (PatternKind k : kinds) out.push_back(ToString(k));
  return out;
}

}  // namespace

TEST_CASE("ARM picks the pattern matching the head's structure", "[kernels]") {
  const ModelGeometry m = SmallModel({4, 8, 8}, 0, TextPosition::kNone, 3, 32, 1, 4);
  HeadPattern p = Pattern(PatternKind::kAuto, 0.25);
  p.arm_refresh = 2;
  Runtime rt(Uniform(m, p, 16, TokenOrder{TokenOrderKind::kRaster, {1, 1, 1}}));
  CHECK(Names(rt.arm_picks(0)) == Names(std::vector<PatternKind>(3, PatternKind::kDense)));
  torch::Tensor k = torch::stack({Structured(PatternKind::kSpatial, m, 1),
                                  Structured(PatternKind::kTemporal, m, 2),
                                  Structured(PatternKind::kTextural, m, 3)}).unsqueeze(0);
  torch::Tensor q = k.clone();
  // Textural: every query carries u so all attend the stripe keys.
  q.select(1, 2).select(2, 31).fill_(8.0);
  const torch::Tensor v = Rand(4, {1, 3, m.tokens(), 32});
  rt.attention(q, k, v, 0, 0);
  CHECK(rt.last_call().arm_runs == 3);
  CHECK(Names(rt.arm_picks(0)) == Names({PatternKind::kSpatial, PatternKind::kTemporal,
                                          PatternKind::kTextural}));
  // Reused between refreshes: step 1 runs no recognition, step 2 does.
  rt.attention(q, k, v, 1, 0);
  CHECK(rt.last_call().arm_runs == 0);
  rt.attention(q, k, v, 2, 0);
  CHECK(rt.last_call().arm_runs == 3);
  CHECK(rt.last_call().density() < 0.6);
  rt.reset();
  CHECK(Names(rt.arm_picks(0)) == Names(std::vector<PatternKind>(3, PatternKind::kDense)));
}

TEST_CASE("partial query selection computes exactly the selected rows", "[kernels]") {
  const ModelGeometry m = SmallModel({3, 4, 5}, 4, TextPosition::kBack, 2, 64, 1, 6);
  HeadPattern p = Pattern(PatternKind::kBlockSparse, 0.4);
  p.mask_refresh = 4;
  Runtime rt(Uniform(m, p, 8));
  const int64_t n = m.tokens();
  const torch::Tensor q = Rand(40, {2, 2, n, 64}), k = Rand(41, {2, 2, n, 64}), v = Rand(42, {2, 2, n, 64});
  const torch::Tensor full = rt.attention(q, k, v, 0, 0);
  const AttentionStats full_stats = rt.last_call();
  // Step 1 serves the cached mask, so the selected rows see the same keys as in the full call.
  TokenSelection sel;
  sel.tokens = n;
  sel.index = torch::tensor({{0, 5, 6, 17, 40, 61, 63}, {2, 3, 30, 31, 50, 62, 63}}, torch::kInt64);
  const torch::Tensor qs = torch::stack({q[0].index_select(1, sel.index[0]), q[1].index_select(1, sel.index[1])});
  const torch::Tensor part = rt.attention(qs, k, v, 1, 0, &sel);
  REQUIRE(part.sizes() == std::vector<int64_t>{2, 2, 7, 64});
  CHECK(rt.last_call().mask_builds == 0);
  for (int64_t b = 0; b < 2; ++b)
    CHECK(MaxDiff(part[b], full[b].index_select(1, sel.index[b])) < 1e-5);
  CHECK(rt.last_call().tokens_computed == 14);
  CHECK(rt.last_call().token_density() == Approx(14.0 / (2.0 * n)));
  CHECK(rt.last_call().pairs_computed < full_stats.pairs_computed);
}

TEST_CASE("Astraea selects budget tokens, merges cached updates and rotates", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 4, 5}, 3, TextPosition::kFront, 2, 32, 2, 24);
  Schedule s = Schedule::Dense(m);
  s.dense_warmup_steps = 1;
  s.token_budget.assign(24, 0.3);
  Runtime rt(s);
  const int64_t n = m.tokens(), nv = m.video_tokens(), batch = 2, c = 6;
  const int64_t k_expected = 3 + 12;  // text + ceil(0.3 * 40)
  std::vector<std::vector<int64_t>> last_seen(2, std::vector<int64_t>(static_cast<size_t>(n), 0));
  int64_t worst_gap = 0;
  torch::Tensor prev;
  for (int64_t step = 0; step < 24; ++step) {
    const TokenSelection sel = rt.select_tokens(step, 0, batch);
    if (step == 0) {
      CHECK(sel.all());
    } else {
      REQUIRE(sel.index.sizes() == std::vector<int64_t>{batch, k_expected});
      for (int64_t b = 0; b < batch; ++b) {
        CHECK(sel.index[b].narrow(0, 0, 3).equal(torch::arange(3)));  // text always computed
        CHECK((sel.index[b].narrow(0, 1, k_expected - 1) > sel.index[b].narrow(0, 0, k_expected - 1)).all().item<bool>());
      }
    }
    // Attention feeds the LSE used by the scores.
    const torch::Tensor kk = Rand(200 + step, {batch, 2, n, 32});
    const torch::Tensor q = sel.all() ? kk : torch::stack({kk[0].index_select(1, sel.index[0]),
                                                           kk[1].index_select(1, sel.index[1])});
    rt.attention(q, kk, kk, step, 0, &sel);
    const torch::Tensor upd = Rand(300 + step, {batch, sel.count(), c});
    const torch::Tensor full = rt.complete_update(step, 0, sel, upd);
    REQUIRE(full.sizes() == std::vector<int64_t>{batch, n, c});
    for (int64_t b = 0; b < batch; ++b) {
      const torch::Tensor idx = sel.all() ? torch::arange(n) : sel.index[b];
      CHECK(full[b].index_select(0, idx).equal(upd[b]));
      if (!sel.all()) {
        torch::Tensor others = torch::ones({n}, torch::kBool);
        others.index_fill_(0, idx, false);
        CHECK(full[b].index({others}).equal(prev[b].index({others})));
      }
      for (int64_t i = 0; i < idx.size(0); ++i) {
        const int64_t t = idx[i].item<int64_t>();
        worst_gap = std::max(worst_gap, step - last_seen[b][t]);
        last_seen[b][t] = step;
      }
    }
    prev = full;
  }
  // Rotation: no token waits longer than 4 + ceil(1/budget) + 1 steps.
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < n; ++t) worst_gap = std::max(worst_gap, 23 - last_seen[b][t]);
  CHECK(worst_gap <= 9);
  CHECK(worst_gap >= 2);  // tokens really are skipped
  // Memory: one cached update per token of the layer plus three scalars per token.
  CHECK(rt.cache_bytes() >= batch * n * c * 4);
  CHECK(rt.cache_bytes() <= batch * n * c * 4 + batch * n * 16);
  CHECK(rt.stats().token_density() < 0.5);
  // Layer 1 has no cache yet: all tokens; a partial update there is rejected.
  CHECK(rt.select_tokens(5, 1, batch).all());
  const TokenSelection sel = rt.select_tokens(5, 0, batch);
  REQUIRE_THROWS_AS(rt.complete_update(5, 1, sel, Rand(1, {batch, sel.count(), c})), ShapeError);
  REQUIRE_THROWS_AS(rt.complete_update(5, 0, sel, Rand(1, {batch, sel.count() + 1, c})), ShapeError);
  REQUIRE_THROWS_AS(rt.complete_update(5, 0, sel, Rand(1, {batch, sel.count(), c + 1})), ShapeError);
  rt.reset();
  CHECK(rt.cache_bytes() == 0);
  CHECK(rt.select_tokens(5, 0, batch).all());
  (void)nv;
}

TEST_CASE("Astraea budget 1 and warm-up select every token", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 2, 2}, 0, TextPosition::kNone, 1, 32, 1, 4);
  Schedule s = Schedule::Dense(m);
  s.token_budget = {1.0, 1.0, 0.5, 0.5};
  s.dense_warmup_steps = 3;
  Runtime rt(s);
  rt.complete_update(0, 0, rt.select_tokens(0, 0, 1), Rand(1, {1, 8, 4}));
  CHECK(rt.select_tokens(1, 0, 1).all());
  CHECK(rt.select_tokens(2, 0, 1).all());  // warm-up
  const TokenSelection sel = rt.select_tokens(3, 0, 1);
  CHECK(sel.count() == 4);
  CHECK(rt.select_tokens(3, 0, 2).all());  // another batch size has no cache
}
