// The plain-loop block_sparse mask build (MaskBuild::kLoops, the CPU float32 default) against the
// libtorch build (kTorch): same masks where a row's top-k boundary is not a near-tie, the same
// score mass kept in every row, the same pooled query representatives, the same tie rule, and
// the same input checks.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

// A top-k boundary closer than this (float64 scores) may fall either way under float rounding.
constexpr double kTieMargin = 1e-4;

struct MaskCase {
  std::array<int64_t, 3> grid;
  int64_t text;
  TextPosition position;
  int64_t block;
  int64_t head_dim;
  int64_t batch;
  std::array<int64_t, 3> tile;
};

// Float64 block scores [nb, nv] of representatives qp [nb, D] against keys kl [N, D] (layout).
torch::Tensor ScoresF64(const Layout& l, const torch::Tensor& qp, const torch::Tensor& kl) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor len = torch::tensor(l.block_len, f64).unsqueeze(1);
  const torch::Tensor kp =
      torch::zeros({l.blocks(), kl.size(1)}, f64).index_add_(0, l.block_of, kl.to(torch::kFloat64)) / len;
  return torch::matmul(qp.to(torch::kFloat64), kp.narrow(0, 0, l.video_blocks).t()) /
         std::sqrt(static_cast<double>(kl.size(1)));
}

// Builds the mask both ways and checks that they agree; returns the rows that differed (near-ties
// only).
int64_t CompareBuilds(const Layout& l, const torch::Tensor& q, const torch::Tensor& kl,
                      const torch::Tensor& q_block, double keep, bool sink,
                      const torch::Tensor& previous = torch::Tensor()) {
  const BlockSparseMaskResult fast =
      BuildBlockSparseMask(l, q, kl, q_block, keep, sink, previous, MaskBuild::kLoops);
  const BlockSparseMaskResult ref =
      BuildBlockSparseMask(l, q, kl, q_block, keep, sink, previous, MaskBuild::kTorch);
  REQUIRE(fast.mask.sizes() == ref.mask.sizes());
  REQUIRE(fast.mask.scalar_type() == torch::kBool);
  REQUIRE(fast.pooled_q.sizes() == ref.pooled_q.sizes());
  REQUIRE(fast.pooled_q.scalar_type() == torch::kFloat32);
  CHECK(MaxDiff(fast.pooled_q, ref.pooled_q) < 1e-5);
  const int64_t nv = l.video_blocks, nb = l.blocks();
  const int64_t keep_n = std::min<int64_t>(nv, static_cast<int64_t>(std::ceil(keep * nv - 1e-9)));
  int64_t differing = 0;
  for (int64_t b = 0; b < q.size(0); ++b) {
    // Forced rows and columns are not a matter of ranking: they must agree exactly.
    for (int64_t j = 0; j < nb; ++j) {
      const bool forced = l.is_text_block(j) || (sink && l.has_first_frame(j));
      if (!forced) continue;
      CHECK(fast.mask[b][j].all().item<bool>());
      CHECK(fast.mask[b].select(1, j).all().item<bool>());
    }
    const torch::Tensor s = ScoresF64(l, ref.pooled_q[b], kl[b]);
    for (int64_t i = 0; i < nv; ++i) {
      if (sink && l.has_first_frame(i)) continue;
      const torch::Tensor got = fast.mask[b][i].narrow(0, 0, nv);
      const torch::Tensor want = ref.mask[b][i].narrow(0, 0, nv);
      const torch::Tensor row = s[i];
      // Score mass of the kept video columns: equal up to rounding even across a near-tie.
      const double kept_got = row.masked_select(got).sum().item<double>();
      const double kept_want = row.masked_select(want).sum().item<double>();
      INFO("batch " << b << ", row " << i);
      CHECK(std::abs(kept_got - kept_want) < kTieMargin * static_cast<double>(keep_n));
      if (got.equal(want)) continue;
      ++differing;
      const torch::Tensor sorted = std::get<0>(row.sort(/*stable=*/true, 0, /*descending=*/true));
      REQUIRE(keep_n < nv);
      const double gap =
          sorted[keep_n - 1].item<double>() - sorted[keep_n].item<double>();
      CHECK(gap < kTieMargin);
    }
  }
  return differing;
}

Layout LayoutOf(const MaskCase& c) {
  const ModelGeometry m = SmallModel(c.grid, c.text, c.position, 1, c.head_dim);
  TokenOrder order;
  order.kind = TokenOrderKind::kTiles;
  order.tile = c.tile;
  return BuildLayout(m, order, c.block);
}

}  // namespace

TEST_CASE("block_sparse loop build equals the torch build in every variant", "[kernels]") {
  const std::vector<MaskCase> cases = {
      // Blocks of 32 that divide the video; 8 text tokens in front; batch 2.
      {{4, 8, 8}, 8, TextPosition::kFront, 32, 32, 2, {1, 4, 8}},
      // 105 video tokens in blocks of 16 (a 9-token last block), 5 text tokens at the back (one
      // partial text block), head_dim 24, batch 2.
      {{3, 5, 7}, 5, TextPosition::kBack, 16, 24, 2, {1, 2, 4}},
      // No text, 180 video tokens in blocks of 32 (a 20-token last block), raster-like tiles.
      {{5, 6, 6}, 0, TextPosition::kNone, 32, 16, 1, {1, 1, 1}},
  };
  int64_t differing = 0, rows = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const MaskCase& c = cases[ci];
    const Layout l = LayoutOf(c);
    const int64_t n = l.tokens, d = c.head_dim, batch = c.batch;
    // q in model order, k in layout order, as the runtime hands them over.
    const torch::Tensor q = Rand(100 + static_cast<int64_t>(ci), {batch, n, d});
    const torch::Tensor kl = Rand(200 + static_cast<int64_t>(ci), {batch, n, d});
    const torch::Tensor ql = q.index_select(1, l.order);
    const torch::Tensor block = l.block_of.index_select(0, l.position);  // model index -> block
    const torch::Tensor q_block = block.unsqueeze(0).expand({batch, n}).contiguous();
    // A partial selection: about half of the tokens, none of video block 1.
    torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(300 + ci);
    const torch::Tensor pick = ((torch::rand({n}, gen) < 0.5) & (block != 1)).nonzero().squeeze(1);
    const torch::Tensor qs = q.index_select(1, pick);
    const torch::Tensor qs_block = block.index_select(0, pick).unsqueeze(0).expand({batch, -1}).contiguous();
    for (const bool sink : {false, true}) {
      for (const double keep : {0.25, 0.5, 1.0}) {
        INFO("case " << ci << ", sink " << sink << ", keep " << keep);
        {
          INFO("all queries in layout order, no q_block");
          differing += CompareBuilds(l, ql, kl, torch::Tensor(), keep, sink);
        }
        {
          INFO("all queries in model order with q_block (the runtime's full selection)");
          differing += CompareBuilds(l, q, kl, q_block, keep, sink);
        }
        const BlockSparseMaskResult first =
            BuildBlockSparseMask(l, qs, kl, qs_block, keep, sink, torch::Tensor(), MaskBuild::kTorch);
        {
          INFO("partial selection, first build (block 1 ranks by its pooled key)");
          differing += CompareBuilds(l, qs, kl, qs_block, keep, sink);
        }
        {
          INFO("partial selection after an earlier build (previous representatives)");
          const torch::Tensor prev = first.pooled_q + 0.3 * Rand(400, {batch, l.blocks(), d});
          differing += CompareBuilds(l, qs, kl, qs_block, keep, sink, prev);
        }
        rows += 4 * batch * l.video_blocks;
      }
    }
  }
  // Gaussian inputs leave essentially no near-ties: the builds agree on (almost) every row.
  INFO(differing << " of " << rows << " rows differed");
  CHECK(differing * 100 <= rows);
}

TEST_CASE("block_sparse loop build breaks exact ties by ascending block index", "[kernels]") {
  const MaskCase c{{4, 8, 8}, 4, TextPosition::kFront, 32, 32, 1, {1, 4, 8}};
  const Layout l = LayoutOf(c);
  const int64_t n = l.tokens, nv = l.video_blocks;  // 8 video blocks
  // Every video block holds the same key rows in the same order: all video scores tie exactly.
  const torch::Tensor one_block = Rand(11, {1, c.block, c.head_dim});
  torch::Tensor kl = Rand(12, {1, n, c.head_dim});
  for (int64_t b = 0; b < nv; ++b) kl.narrow(1, b * c.block, c.block).copy_(one_block);
  const torch::Tensor ql = Rand(13, {1, n, c.head_dim});
  for (const bool sink : {false, true}) {
    INFO("sink " << sink);
    const torch::Tensor fast = BuildBlockSparseMask(l, ql, kl, torch::Tensor(), 0.3, sink,
                                                    torch::Tensor(), MaskBuild::kLoops).mask;
    const torch::Tensor ref = BuildBlockSparseMask(l, ql, kl, torch::Tensor(), 0.3, sink,
                                                   torch::Tensor(), MaskBuild::kTorch).mask;
    CHECK(fast.equal(ref));
    // keep 0.3 of 8 = 3 blocks: 0, 1, 2 in every ranked row (the sink columns, frame 0 = blocks
    // 0 and 1, are among them).
    for (int64_t i = 0; i < nv; ++i) {
      if (sink && l.has_first_frame(i)) continue;
      INFO("row " << i);
      CHECK(fast[0][i].narrow(0, 0, 3).all().item<bool>());
      CHECK_FALSE(fast[0][i].narrow(0, 3, nv - 3).any().item<bool>());
    }
  }
}

TEST_CASE("block_sparse default build: loops for float32 CPU, libtorch for other dtypes",
          "[kernels]") {
  const MaskCase c{{3, 5, 7}, 5, TextPosition::kBack, 16, 24, 2, {1, 2, 4}};
  const Layout l = LayoutOf(c);
  const torch::Tensor ql = Rand(21, {2, l.tokens, 24}), kl = Rand(22, {2, l.tokens, 24});
  const torch::Tensor loops =
      BuildBlockSparseMask(l, ql, kl, torch::Tensor(), 0.4, true, torch::Tensor(), MaskBuild::kLoops).mask;
  CHECK(BuildBlockSparseMask(l, ql, kl, torch::Tensor(), 0.4, true).mask.equal(loops));
  CHECK(BlockSparseMask(l, ql, kl, torch::Tensor(), 0.4, true).equal(loops));
  // bfloat16 goes through the torch build; bf16 -> float32 is exact, so the loops on the widened
  // inputs rank the same representatives.
  const torch::Tensor qh = ql.to(torch::kBFloat16), kh = kl.to(torch::kBFloat16);
  const BlockSparseMaskResult half = BuildBlockSparseMask(l, qh, kh, torch::Tensor(), 0.4, true);
  const BlockSparseMaskResult wide = BuildBlockSparseMask(
      l, qh.to(torch::kFloat32), kh.to(torch::kFloat32), torch::Tensor(), 0.4, true,
      torch::Tensor(), MaskBuild::kLoops);
  CHECK(half.mask.equal(wide.mask));
  CHECK(MaxDiff(half.pooled_q, wide.pooled_q) < 1e-5);
  REQUIRE_THROWS_AS(BuildBlockSparseMask(l, qh, kh, torch::Tensor(), 0.4, true, torch::Tensor(),
                                         MaskBuild::kLoops),
                    ShapeError);
}

TEST_CASE("block_sparse mask builds reject bad inputs", "[kernels]") {
  const MaskCase c{{4, 8, 8}, 8, TextPosition::kFront, 32, 32, 2, {1, 4, 8}};
  const Layout l = LayoutOf(c);
  const int64_t n = l.tokens;
  const torch::Tensor q = Rand(31, {2, n, 32}), kl = Rand(32, {2, n, 32});
  const torch::Tensor qb = l.block_of.index_select(0, l.position).unsqueeze(0).expand({2, n}).contiguous();
  for (const MaskBuild build : {MaskBuild::kLoops, MaskBuild::kTorch}) {
    INFO("build " << static_cast<int>(build));
    auto build_with = [&](const torch::Tensor& qq, const torch::Tensor& kk, const torch::Tensor& bb,
                          double keep) {
      return BuildBlockSparseMask(l, qq, kk, bb, keep, true, torch::Tensor(), build);
    };
    REQUIRE_THROWS_AS(build_with(q, kl, qb, 0.0), InputError);
    REQUIRE_THROWS_AS(build_with(q, kl, qb, 1.5), InputError);
    REQUIRE_THROWS_AS(build_with(q, kl, qb, std::nan("")), InputError);
    REQUIRE_THROWS_WITH(build_with(q, kl, qb, -0.1), "block_sparse mask: keep must be in (0, 1]");
    REQUIRE_THROWS_AS(build_with(q, kl.narrow(1, 0, n - 1), qb, 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q, kl[0], qb, 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q.narrow(2, 0, 16), kl, qb, 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q.narrow(0, 0, 1), kl, qb, 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q.narrow(1, 0, n - 3), kl, torch::Tensor(), 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q, kl, qb.narrow(1, 0, n - 1), 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q, kl, qb.to(torch::kInt32), 0.5), ShapeError);
    REQUIRE_THROWS_AS(build_with(q, kl, qb[0], 0.5), ShapeError);
  }
  // A block index outside the layout: the loops name it; the torch ops fail inside libtorch.
  torch::Tensor bad = qb.clone();
  bad[1][7] = l.blocks();
  REQUIRE_THROWS_WITH(BuildBlockSparseMask(l, q, kl, bad, 0.5, true, torch::Tensor(),
                                           MaskBuild::kLoops),
                      "block_sparse mask: q_block holds block " + std::to_string(l.blocks()) +
                          " outside [0, " + std::to_string(l.blocks()) + ")");
  bad[1][7] = -1;
  REQUIRE_THROWS_AS(BuildBlockSparseMask(l, q, kl, bad, 0.5, true, torch::Tensor(),
                                         MaskBuild::kLoops),
                    ShapeError);
  REQUIRE_THROWS(BuildBlockSparseMask(l, q, kl, bad, 0.5, true, torch::Tensor(), MaskBuild::kTorch));
}
