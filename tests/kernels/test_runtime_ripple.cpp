// TimeRipple as attention on substituted keys (RippleSubstituteKeys, RippleSkippedMacs: the
// runtime's CUDA path) against the oracle RippleAttention on the CPU: same reuse decisions, same
// logits (so the same output and LSE), same skipped multiply-adds, with dense and masked heads,
// a query subset and per-token reuse that is not uniform over tiles.
#include <array>
#include <vector>

#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "kernels/schedule.h"
#include "kernels/timeripple.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

// Keys whose frames >= 1 copy a random half of the previous frame's tokens per group (cosine
// ~0.99), so reuse differs token by token and chains over several frames.
torch::Tensor PartlyCopiedKeys(const Layout& l, int64_t batch, int64_t heads, int64_t d,
                               const std::array<int64_t, 3>& split, int64_t seed) {
  torch::Tensor k = Rand(seed, {batch, heads, l.tokens, d});
  const int64_t hw = l.grid[1] * l.grid[2];
  for (int64_t f = 1; f < l.grid[0]; ++f) {
    int64_t c0 = 0;
    for (int g = 0; g < 3; ++g) {
      const int64_t w = split[static_cast<size_t>(g)];
      const int64_t cur = l.video_offset + f * hw;
      torch::Tensor dst = k.narrow(2, cur, hw).narrow(3, c0, w);
      const torch::Tensor src = k.narrow(2, cur - hw, hw).narrow(3, c0, w);
      const torch::Tensor pick = (torch::rand({batch, heads, hw, 1}) < 0.5).to(torch::kFloat32);
      dst.copy_(pick * (src + 0.05 * torch::randn(src.sizes())) + (1 - pick) * dst);
      c0 += w;
    }
  }
  return k;
}

}  // namespace

TEST_CASE("TimeRipple on substituted keys equals the oracle", "[kernels]") {
  struct Case {
    std::array<int64_t, 3> grid;
    int64_t text;
    TextPosition pos;
    int64_t d;
  };
  const std::vector<Case> cases = {
      {{4, 4, 6}, 5, TextPosition::kFront, 32},
      {{3, 5, 4}, 3, TextPosition::kBack, 48},
      {{5, 3, 3}, 0, TextPosition::kNone, 16},
  };
  int64_t seed = 800;
  for (const Case& c : cases) {
    INFO("grid " << c.grid[0] << "x" << c.grid[1] << "x" << c.grid[2] << " D " << c.d);
    const int64_t batch = 2, heads = 2;
    const ModelGeometry m = SmallModel(c.grid, c.text, c.pos, heads, c.d);
    TokenOrder order;
    order.kind = TokenOrderKind::kTiles;
    order.tile = {1, 2, 2};
    const Layout l = BuildLayout(m, order, 8);
    const std::array<int64_t, 3> split = RopeSplitFor(c.d);
    const torch::Tensor k = PartlyCopiedKeys(l, batch, heads, c.d, split, seed++);
    const torch::Tensor v = Rand(seed++, {batch, heads, l.tokens, c.d});
    // Queries: every other token from the second one.
    const torch::Tensor q_index =
        torch::arange(1, l.tokens, 2, torch::kInt64).unsqueeze(0).expand({batch, -1}).contiguous();
    const int64_t nq = q_index.size(1);
    const torch::Tensor q = Rand(seed++, {batch, heads, nq, c.d});
    const torch::Tensor q_block = l.block_of.index_select(0, l.position)
                                      .index_select(0, q_index.reshape({-1}))
                                      .view({batch, nq});
    // Head 0 dense, head 1 spatial at 0.5.
    const torch::Tensor spatial =
        StaticPatternMask(l, PatternKind::kSpatial, 0.5).unsqueeze(0).expand({batch, -1, -1});
    const std::vector<torch::Tensor> masks = {torch::Tensor(), spatial};
    for (const double threshold : {0.9, 0.5}) {
      INFO("threshold " << threshold);
      const RippleOutput ref = RippleAttention(l, q, q_index, k, v, masks, split, threshold);
      const RippleSubstitution rk = RippleSubstituteKeys(l, k, split, threshold);
      REQUIRE(rk.keys.sizes() == k.sizes());
      int64_t reused = 0;
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          const torch::Tensor want = RippleReuse(l, k[b][h], split, threshold);
          CHECK(rk.reuse[b][h].equal(want));
          reused += want.sum().item<int64_t>();
          torch::Tensor allowed;
          if (masks[static_cast<size_t>(h)].defined())
            allowed = ExpandBlockMask(l, masks[static_cast<size_t>(h)][b]).index_select(0, q_index[b]);
          const torch::Tensor out = NaiveAttention(q[b][h], rk.keys[b][h], v[b][h], allowed);
          CHECK(MaxDiff(out, ref.out[b][h]) < 1e-4);
        }
      }
      CHECK(reused > 0);
      CHECK(ref.macs_skipped > 0);
      CHECK(RippleSkippedMacs(l, rk.reuse, masks, q_block, split) == ref.macs_skipped);
    }
    // A threshold no cosine reaches leaves k as it was.
    const RippleSubstitution none = RippleSubstituteKeys(l, k, split, 1.5);
    CHECK(none.keys.equal(k));
    CHECK(none.reuse.sum().item<int64_t>() == 0);
  }
}

TEST_CASE("TimeRipple substitution chains reuse over frames", "[kernels]") {
  // One head, one group of every channel (split {D, 0, 0}): frame 2 copies frame 1, which copies
  // frame 0, so both take frame 0's key; frame 3 differs and keeps its own.
  const ModelGeometry m = SmallModel({4, 1, 2}, 0, TextPosition::kNone, 1, 8);
  const Layout l = BuildLayout(m, TokenOrder{}, 2);
  torch::Tensor k = Rand(850, {1, 1, 8, 8});
  k[0][0][2].copy_(k[0][0][0] * 1.5);
  k[0][0][3].copy_(k[0][0][1] * 0.5);
  k[0][0][4].copy_(k[0][0][2] * 2.0);
  k[0][0][5].copy_(k[0][0][3] * 3.0);
  const RippleSubstitution rk = RippleSubstituteKeys(l, k, {8, 0, 0}, 0.99);
  for (int64_t f = 1; f <= 2; ++f) {
    CHECK(rk.keys[0][0][2 * f].equal(k[0][0][0]));
    CHECK(rk.keys[0][0][2 * f + 1].equal(k[0][0][1]));
  }
  CHECK(rk.keys[0][0][6].equal(k[0][0][6]));
  CHECK(rk.keys[0][0][7].equal(k[0][0][7]));
  const torch::Tensor flags = rk.reuse[0][0][0];
  CHECK(flags.equal(torch::tensor({0, 0, 1, 1, 1, 1, 0, 0}).to(torch::kBool)));
}
