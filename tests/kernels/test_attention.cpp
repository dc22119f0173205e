// Layout, block masks and the block-sparse attention paths against a float64 reference with the
// equivalent explicit token mask; density accounting; TimeRipple; input checks.
#include <set>

#include "core/error.h"
#include "kernels/block_attention.h"
#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "kernels/runtime.h"
#include "kernels/timeripple.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

constexpr double kTol = 2e-4;

// The block mask the runtime uses for head h (static patterns or block_sparse from q/k).
torch::Tensor ExpectedMask(const Layout& lay, const HeadPattern& p, const torch::Tensor& q,
                           const torch::Tensor& k, int64_t h) {
  const int64_t batch = q.size(0);
  if (p.pattern == PatternKind::kBlockSparse) {
    const torch::Tensor q_block = lay.block_of.index_select(0, lay.position)
                                      .unsqueeze(0).expand({batch, lay.tokens}).contiguous();
    return BlockSparseMask(lay, q.select(1, h), k.select(1, h).index_select(1, lay.order), q_block,
                           p.keep, p.first_frame_sink);
  }
  return StaticPatternMask(lay, p.pattern, p.density).unsqueeze(0).expand({batch, -1, -1});
}

}  // namespace

TEST_CASE("layout orders video tokens by tile and appends text", "[kernels]") {
  // Grid 2x3x5 with tile [1,2,2]: edge tiles are smaller.
  const ModelGeometry m = SmallModel({2, 3, 5}, 3, TextPosition::kFront);
  TokenOrder order;
  order.kind = TokenOrderKind::kTiles;
  order.tile = {1, 2, 2};
  const Layout l = BuildLayout(m, order, 4);
  REQUIRE(l.tokens == 33);
  // First tile of frame 0: rows 0-1, cols 0-1 (model index = 3 text + raster).
  std::vector<int64_t> first(l.order.data_ptr<int64_t>(), l.order.data_ptr<int64_t>() + 6);
  CHECK(first == std::vector<int64_t>{3, 4, 8, 9, 5, 6});
  // Text at the end of the layout; a permutation overall; position is its inverse.
  CHECK(l.order[30].item<int64_t>() == 0);
  CHECK(l.order[32].item<int64_t>() == 2);
  CHECK(std::get<0>(l.order.sort()).equal(torch::arange(33)));
  CHECK(l.order.index_select(0, l.position).equal(torch::arange(33)));
  // Blocks are cut separately: 30 video tokens -> 8 blocks (last holds 2), 3 text -> 1 block.
  CHECK(l.video_blocks == 8);
  CHECK(l.text_blocks == 1);
  CHECK(l.block_len[7] == 2);
  CHECK(l.block_len[8] == 3);
  CHECK(l.block_begin[8] == 30);
  CHECK(l.extent[0].f0 == 0);
  CHECK(l.extent[0].h1 == 1);
  CHECK(l.extent[0].w1 == 1);

  const ModelGeometry back = SmallModel({2, 3, 5}, 3, TextPosition::kBack);
  const Layout lb = BuildLayout(back, TokenOrder{TokenOrderKind::kRaster, {1, 1, 1}}, 7);
  CHECK(lb.order.narrow(0, 0, 30).equal(torch::arange(30)));
  CHECK(lb.order[30].item<int64_t>() == 30);
  CHECK(lb.video_blocks == 5);
  CHECK(lb.block_len[4] == 2);
  REQUIRE_THROWS_AS(BuildLayout(m, order, 0), InputError);
}

TEST_CASE("static patterns keep text, diagonal and sink blocks and reach their density",
          "[kernels]") {
  const ModelGeometry m = SmallModel({6, 4, 4}, 4, TextPosition::kBack);
  const Layout l = BuildLayout(m, TokenOrder{TokenOrderKind::kRaster, {1, 1, 1}}, 8);
  REQUIRE(l.video_blocks == 12);  // two blocks per frame
  for (PatternKind kind : {PatternKind::kSpatial, PatternKind::kTemporal, PatternKind::kTextural}) {
    const torch::Tensor mk = StaticPatternMask(l, kind, 0.1);
    CHECK(mk.diagonal().all().item<bool>());
    CHECK(mk.select(0, 12).all().item<bool>());  // text row
    CHECK(mk.select(1, 12).all().item<bool>());  // text column
    CHECK(mk.narrow(1, 0, 2).all().item<bool>());  // first-frame columns
  }
  // spatial at low density: own frame + first frame only.
  CHECK(SpatialRadius(6, 0.1) == 0);
  CHECK(SpatialRadius(6, 0.5) == 1);
  CHECK(SpatialRadius(6, 1.0) == 2);
  const torch::Tensor sp = StaticPatternMask(l, PatternKind::kSpatial, 0.1);
  CHECK(sp.select(0, 6).narrow(0, 0, 12).sum().item<int64_t>() == 4);  // frame 3: own 2 + sink 2
  const torch::Tensor sp1 = StaticPatternMask(l, PatternKind::kSpatial, 0.5);
  CHECK(sp1.select(0, 6).narrow(0, 0, 12).sum().item<int64_t>() == 8);  // frames 2..4 + sink
  // textural: the same stripe columns in every row.
  const torch::Tensor tx = StaticPatternMask(l, PatternKind::kTextural, 0.25);
  for (int64_t j = 2; j < 12; ++j)
    if (j % 4 == 0) CHECK(tx.select(1, j).all().item<bool>());
  CHECK(tx[5][7].item<bool>() == false);
  // temporal: realized video density reaches the target.
  for (double d : {0.3, 0.6, 0.9}) {
    const torch::Tensor tp = StaticPatternMask(l, PatternKind::kTemporal, d);
    const double got = tp.narrow(0, 0, 12).narrow(1, 0, 12).to(torch::kFloat64).mean().item<double>();
    CHECK(got >= d - 1e-9);
  }
  REQUIRE_THROWS_AS(StaticPatternMask(l, PatternKind::kSpatial, 0.0), InputError);
}

TEST_CASE("sparse patterns equal masked float64 attention; density matches the mask",
          "[kernels]") {
  struct Case {
    TextPosition text_pos;
    int64_t text;
    int64_t head_dim;
    PatternKind kind;
    double density;
    TokenOrderKind order;
  };
  const std::vector<Case> cases = {
      {TextPosition::kFront, 5, 32, PatternKind::kSpatial, 0.3, TokenOrderKind::kTiles},
      {TextPosition::kBack, 5, 64, PatternKind::kTemporal, 0.4, TokenOrderKind::kTiles},
      {TextPosition::kNone, 0, 128, PatternKind::kTextural, 0.25, TokenOrderKind::kRaster},
      {TextPosition::kFront, 5, 64, PatternKind::kBlockSparse, 0.3, TokenOrderKind::kTiles},
      {TextPosition::kBack, 3, 32, PatternKind::kBlockSparse, 0.5, TokenOrderKind::kRaster},
      {TextPosition::kNone, 0, 32, PatternKind::kBlockSparse, 0.2, TokenOrderKind::kTiles},
  };
  int seed = 10;
  for (const Case& c : cases) {
    const ModelGeometry m = SmallModel({3, 8, 9}, c.text, c.text_pos, 2, c.head_dim);
    TokenOrder order;
    order.kind = c.order;
    order.tile = {1, 4, 4};  // grid not divisible by the tile
    const HeadPattern p = Pattern(c.kind, c.density);
    const Schedule s = Uniform(m, p, 16, order);  // 216 video tokens: partial last block
    Runtime rt(s);
    const int64_t n = m.tokens();
    const torch::Tensor q = Rand(seed++, {2, 2, n, c.head_dim});
    const torch::Tensor k = Rand(seed++, {2, 2, n, c.head_dim});
    const torch::Tensor v = Rand(seed++, {2, 2, n, c.head_dim});
    const torch::Tensor out = rt.attention(q, k, v, 1, 0);
    REQUIRE(out.sizes() == q.sizes());
    const Layout lay = BuildLayout(m, order, 16);
    int64_t allowed = 0;
    for (int64_t h = 0; h < 2; ++h) {
      const torch::Tensor bm = ExpectedMask(lay, p, q, k, h);
      for (int64_t b = 0; b < 2; ++b) {
        const torch::Tensor tm = ExpandBlockMask(lay, bm[b]);
        allowed += tm.sum().item<int64_t>();
        CHECK(MaxDiff(out[b][h], NaiveAttention(q[b][h], k[b][h], v[b][h], tm)) < kTol);
      }
    }
    const AttentionStats& st = rt.last_call();
    CHECK(st.pairs_computed == allowed);
    CHECK(st.pairs_total == 2 * 2 * n * n);
    CHECK(st.density() == Approx(static_cast<double>(allowed) / (4.0 * n * n)));
    CHECK(st.density() < 1.0);
    CHECK(st.qk_macs_total == allowed * c.head_dim);
  }
}

TEST_CASE("dense schedule equals torch SDPA and counts every pair", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 4, 4}, 4, TextPosition::kFront, 3, 64);
  Runtime rt(Schedule::Dense(m));
  const int64_t n = m.tokens();
  const torch::Tensor q = Rand(1, {2, 3, n, 64}), k = Rand(2, {2, 3, n, 64}), v = Rand(3, {2, 3, n, 64});
  const torch::Tensor out = rt.attention(q, k, v, 0, 1);
  CHECK(MaxDiff(out, torch::scaled_dot_product_attention(q, k, v)) < 1e-5);
  CHECK(rt.last_call().density() == 1.0);
  CHECK(rt.last_call().pairs_computed == 2 * 3 * n * n);
  CHECK(rt.stats().calls == 1);
}

TEST_CASE("block-sparse kernel returns the log-sum-exp of its rows", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 4, 4}, 0, TextPosition::kNone, 1, 32);
  const Layout lay = BuildLayout(m, TokenOrder{TokenOrderKind::kRaster, {1, 1, 1}}, 8);
  const torch::Tensor q = Rand(4, {1, 32, 32}), k = Rand(5, {1, 32, 32}), v = Rand(6, {1, 32, 32});
  const torch::Tensor mask = StaticPatternMask(lay, PatternKind::kTextural, 0.5).unsqueeze(0);
  const torch::Tensor q_block = lay.block_of.unsqueeze(0);
  const AttentionOutput o = BlockSparseAttention(lay, q[0].index_select(0, lay.order).unsqueeze(0),
                                                 q_block, k.index_select(1, lay.order),
                                                 v.index_select(1, lay.order), mask, 1, 0);
  torch::Tensor s = torch::matmul(q[0].index_select(0, lay.order).to(torch::kFloat64),
                                  k[0].index_select(0, lay.order).to(torch::kFloat64).t()) /
                    std::sqrt(32.0);
  const torch::Tensor tm = mask[0].index_select(0, lay.block_of).index_select(1, lay.block_of);
  s.masked_fill_(tm.logical_not(), -std::numeric_limits<double>::infinity());
  CHECK(MaxDiff(o.lse[0], s.logsumexp(1)) < 1e-4);
  const AttentionOutput d = DenseAttention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0));
  const torch::Tensor sd = torch::matmul(q[0].to(torch::kFloat64), k[0].to(torch::kFloat64).t()) /
                           std::sqrt(32.0);
  CHECK(MaxDiff(d.lse[0][0], sd.logsumexp(1)) < 1e-4);
}

TEST_CASE("chunked and masked-dense block-sparse paths agree with the reference", "[kernels]") {
  // Random block mask (text columns kept) with partial query sets per batch row, two heads.
  const ModelGeometry m = SmallModel({3, 6, 7}, 5, TextPosition::kFront, 2, 64);
  const Layout lay = BuildLayout(m, TokenOrder{}, 16);
  const int64_t n = m.tokens(), nb = lay.blocks(), batch = 2, heads = 2, nq = 40;
  torch::manual_seed(50);
  torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.3;
  mask.narrow(2, lay.video_blocks, lay.text_blocks).fill_(true);
  mask.narrow(1, 3, 1).fill_(true);  // one dense row: served without gathered keys
  const torch::Tensor index = std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort()).unsqueeze(0)
                                  .repeat({batch, 1});
  index[1].copy_(std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort()));
  const torch::Tensor q_block =
      lay.block_of.index_select(0, lay.position.index_select(0, index.reshape({-1}))).reshape({batch, nq});
  const torch::Tensor q = Rand(51, {batch * heads, nq, 64});
  const torch::Tensor k = Rand(52, {batch * heads, n, 64}), v = Rand(53, {batch * heads, n, 64});
  const AttentionOutput chunked = BlockSparseAttention(lay, q, q_block, k, v, mask, heads, 0);
  const AttentionOutput masked = BlockSparseAttention(lay, q, q_block, k, v, mask, heads, n);
  CHECK(MaxDiff(chunked.out, masked.out) < 1e-4);
  CHECK(MaxDiff(chunked.lse, masked.lse) < 1e-4);
  // The explicit path (what sparse heads run off the CPU), run here on the CPU.
  const AttentionOutput expl = MaskedAttention(lay, q, q_block, k, v, mask, heads);
  CHECK(MaxDiff(chunked.out, expl.out) < 1e-4);
  CHECK(MaxDiff(chunked.lse, expl.lse) < 1e-4);
  for (int64_t g = 0; g < batch * heads; ++g) {
    const torch::Tensor tm = mask[g].index_select(0, q_block[g / heads]).index_select(1, lay.block_of);
    CHECK(MaxDiff(chunked.out[g], NaiveAttention(q[g], k[g], v[g], tm)) < kTol);
  }
}

TEST_CASE("block_sparse keeps top-k per row plus forced rows and columns", "[kernels]") {
  const ModelGeometry m = SmallModel({4, 4, 4}, 6, TextPosition::kFront, 1, 32);
  const Layout lay = BuildLayout(m, TokenOrder{TokenOrderKind::kRaster, {1, 1, 1}}, 8);
  const int64_t n = m.tokens();
  const torch::Tensor q = Rand(7, {2, n, 32}), k = Rand(8, {2, n, 32});
  const torch::Tensor qb = lay.block_of.index_select(0, lay.position).unsqueeze(0).expand({2, n}).contiguous();
  const int64_t nv = lay.video_blocks;  // 8
  const torch::Tensor no_sink = BlockSparseMask(lay, q, k.index_select(1, lay.order), qb, 0.3, false);
  const int64_t keep_n = 3;  // ceil(0.3 * 8)
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t r = 0; r < nv; ++r) {
      CHECK(no_sink[b][r].narrow(0, 0, nv).sum().item<int64_t>() == keep_n);
      CHECK(no_sink[b][r].narrow(0, nv, 1).all().item<bool>());
    }
  CHECK(no_sink.select(1, nv).all().item<bool>());  // text row
  const torch::Tensor sink = BlockSparseMask(lay, q, k.index_select(1, lay.order), qb, 0.3, true);
  CHECK(sink.narrow(1, 0, 2).all().item<bool>());  // frame-0 rows (2 blocks)
  CHECK(sink.narrow(2, 0, 2).all().item<bool>());  // frame-0 columns
  CHECK((sink.logical_or(no_sink)).equal(sink));
  // Ties: equal scores keep the lowest block indices.
  const torch::Tensor flat_k = torch::ones({1, n, 32});
  const torch::Tensor tie = BlockSparseMask(lay, q.narrow(0, 0, 1), flat_k, qb.narrow(0, 0, 1), 0.3, false);
  CHECK(tie[0][4].narrow(0, 0, 3).all().item<bool>());
  CHECK(tie[0][4].narrow(0, 3, 5).any().item<bool>() == false);
}

TEST_CASE("block_sparse masks are cached and rebuilt every mask_refresh steps", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 4, 4}, 0, TextPosition::kNone, 2, 32, 2, 8);
  HeadPattern p = Pattern(PatternKind::kBlockSparse, 0.5);
  p.mask_refresh = 3;
  Schedule s = Uniform(m, p, 8);
  s.dense_warmup_steps = 1;
  Runtime rt(s);
  const int64_t n = m.tokens();
  std::vector<int64_t> builds;
  for (int64_t step = 0; step < 8; ++step) {
    const torch::Tensor q = Rand(100 + step, {1, 2, n, 32});
    rt.attention(q, q, q, step, 0);
    builds.push_back(rt.last_call().mask_builds);
  }
  // Warm-up step 0 is dense; first sparse step 1, then every 3 steps: 1, 4, 7; two heads each.
  CHECK(builds == std::vector<int64_t>{0, 2, 0, 0, 2, 0, 0, 2});
  CHECK(rt.stats().mask_builds == 6);
  CHECK(rt.cache_bytes() > 0);
  rt.reset();
  CHECK(rt.cache_bytes() == 0);
  CHECK(rt.stats().calls == 0);
}

TEST_CASE("TimeRipple: threshold > 1 is no reuse, -1 reuses all and counts skipped macs",
          "[kernels]") {
  const ModelGeometry m = SmallModel({3, 2, 3}, 2, TextPosition::kFront, 2, 32, 1, 3);
  Schedule s = Uniform(m, Pattern(PatternKind::kSpatial, 0.4), 4);
  s.reuse.enabled = true;
  s.reuse.threshold = {2.0, -1.0, 0.5};
  Runtime rt(s);
  Schedule plain = s;
  plain.reuse.enabled = false;
  Runtime ref(plain);
  const int64_t n = m.tokens();
  const torch::Tensor q = Rand(20, {2, 2, n, 32}), k = Rand(21, {2, 2, n, 32}), v = Rand(22, {2, 2, n, 32});

  const torch::Tensor off = rt.attention(q, k, v, 0, 0);
  CHECK(MaxDiff(off, ref.attention(q, k, v, 0, 0)) < 1e-5);
  CHECK(rt.last_call().qk_macs_skipped == 0);

  const Layout lay = BuildLayout(m, s.token_order, 4);
  const torch::Tensor bm = StaticPatternMask(lay, PatternKind::kSpatial, 0.4);
  const torch::Tensor tm = ExpandBlockMask(lay, bm);
  const std::array<int64_t, 3> split = RopeSplitFor(32);
  for (double thr : {-1.0, 0.5}) {
    const int64_t step = thr < 0 ? 1 : 2;
    const torch::Tensor out = rt.attention(q, k, v, step, 0);
    // Direct implementation: per group, every reused key column takes its reference column's
    // partial score, in frame order.
    int64_t skipped = 0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < 2; ++h) {
        const torch::Tensor qs = q[b][h].to(torch::kFloat64), ks = k[b][h].to(torch::kFloat64);
        torch::Tensor total = torch::zeros({n, n}, torch::kFloat64);
        int64_t c0 = 0;
        for (int g = 0; g < 3; ++g) {
          const torch::Tensor kg = ks.narrow(1, c0, split[g]);
          torch::Tensor part = torch::matmul(qs.narrow(1, c0, split[g]), kg.t());
          for (int64_t j = 2 + 6; j < n; ++j) {  // video keys of frames >= 1 (text front: 2)
            const int64_t r = j - 6;
            const double cos = (kg[j] * kg[r]).sum().item<double>() /
                               (kg[j].norm().item<double>() * kg[r].norm().item<double>());
            if (cos >= thr) {
              part.select(1, j).copy_(part.select(1, r));
              skipped += tm.select(1, j).sum().item<int64_t>() * split[g];
            }
          }
          total += part;
          c0 += split[g];
        }
        total /= std::sqrt(32.0);
        total.masked_fill_(tm.logical_not(), -std::numeric_limits<double>::infinity());
        const torch::Tensor expect = torch::matmul(torch::softmax(total, 1), v[b][h].to(torch::kFloat64));
        CHECK(MaxDiff(out[b][h], expect) < kTol);
      }
    CHECK(rt.last_call().qk_macs_skipped == skipped);
    if (thr < 0) {
      // Everything reusable is reused: all groups of all video keys in frames 1..2.
      int64_t all = 0;
      for (int64_t j = 8; j < n; ++j) all += tm.select(1, j).sum().item<int64_t>() * 32;
      CHECK(skipped == all * 4);
    }
    const AttentionStats& st = rt.last_call();
    CHECK(st.density() == Approx(static_cast<double>(st.qk_macs_total - st.qk_macs_skipped) /
                                 static_cast<double>(st.pairs_total * 32)));
  }
}

TEST_CASE("attention rejects bad inputs with ShapeError", "[kernels]") {
  const ModelGeometry m = SmallModel({2, 2, 2}, 2, TextPosition::kFront, 2, 32, 2, 4);
  Runtime rt(Schedule::Dense(m));
  const int64_t n = m.tokens();
  const torch::Tensor q = Rand(30, {1, 2, n, 32});
  REQUIRE_NOTHROW(rt.attention(q, q, q, 0, 0));
  REQUIRE_THROWS_AS(rt.attention(q[0], q[0], q[0], 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(Rand(1, {1, 3, n, 32}), Rand(1, {1, 3, n, 32}), Rand(1, {1, 3, n, 32}), 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(Rand(1, {1, 2, n + 1, 32}), Rand(1, {1, 2, n + 1, 32}), Rand(1, {1, 2, n + 1, 32}), 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(Rand(1, {1, 2, n, 16}), Rand(1, {1, 2, n, 16}), Rand(1, {1, 2, n, 16}), 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(Rand(1, {2, 2, n, 32}), q, q, 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(q.to(torch::kFloat64), q.to(torch::kFloat64), q.to(torch::kFloat64), 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(q, q.to(torch::kFloat64), q, 0, 0), ShapeError);
  REQUIRE_THROWS_WITH(
      rt.attention(q.to(torch::kBFloat16), q.to(torch::kBFloat16), q.to(torch::kBFloat16), 0, 0),
      "attention: CPU tensors must be float32; got BFloat16");
  torch::Tensor bad = q.clone();
  bad[0][1][3][4] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_AS(rt.attention(q, bad, q, 0, 0), ShapeError);
  torch::Tensor inf = q.clone();
  inf[0][0][0][0] = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(rt.attention(q, q, inf, 0, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(inf, q, q, 0, 0), ShapeError);
  // Huge but finite values are accepted.
  REQUIRE_NOTHROW(rt.attention(q, q, q * 1e37f, 0, 0));
  REQUIRE_THROWS_WITH(rt.attention(q, q, q, 4, 0), "attention: step 4 out of range [0, 4)");
  REQUIRE_THROWS_AS(rt.attention(q, q, q, -1, 0), ShapeError);
  REQUIRE_THROWS_AS(rt.attention(q, q, q, 0, 2), ShapeError);
  TokenSelection sel;
  sel.tokens = n;
  sel.index = torch::tensor({{3, 1}}, torch::kInt64);  // not ascending
  REQUIRE_THROWS_AS(rt.attention(q.narrow(2, 0, 2), q, q, 0, 0, &sel), ShapeError);
  sel.index = torch::tensor({{1, 3}}, torch::kInt64);
  REQUIRE_THROWS_AS(rt.attention(q.narrow(2, 0, 3), q, q, 0, 0, &sel), ShapeError);
  REQUIRE_NOTHROW(rt.attention(q.narrow(2, 0, 2), q, q, 0, 0, &sel));
  REQUIRE_THROWS_AS(rt.select_tokens(0, 5, 1), ShapeError);
  REQUIRE_THROWS_AS(rt.arm_picks(-1), ShapeError);
}

TEST_CASE("CheckFinite catches NaN, +inf and -inf anywhere and accepts huge finite values",
          "[kernels]") {
  const float bad[3] = {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  torch::manual_seed(70);
  for (int trial = 0; trial < 12; ++trial) {
    torch::Tensor t[3] = {Rand(71 + trial, {1, 2, 37, 8}), Rand(90 + trial, {1, 2, 37, 8}),
                          Rand(110 + trial, {1, 2, 37, 8})};
    REQUIRE_NOTHROW(CheckFinite(t[0], t[1], t[2]));
    const int which = trial % 3;
    const int64_t pos = torch::randint(t[which].numel(), {1}, torch::kInt64).item<int64_t>();
    t[which].view({-1})[pos] = bad[trial / 4 % 3];
    REQUIRE_THROWS_WITH(CheckFinite(t[0], t[1], t[2]), "attention: q, k or v holds NaN or Inf");
  }
  // The float32 sums of these overflow: the cheap check fires, the exact one clears them.
  const torch::Tensor huge = Rand(130, {1, 2, 64, 8}).abs().clamp_max(1.0) * 3e38f;
  REQUIRE_NOTHROW(CheckFinite(huge, huge, -huge));
}

TEST_CASE("sparse plan: every query row in exactly one item, shared keys merged into key spans",
          "[kernels]") {
  // Partial last video block, text at the back, partial query sets per batch row, two heads.
  const ModelGeometry m = SmallModel({3, 6, 7}, 5, TextPosition::kBack, 2, 32);
  const Layout lay = BuildLayout(m, TokenOrder{}, 16);
  const int64_t n = m.tokens(), nb = lay.blocks(), batch = 2, heads = 2, nq = 60;
  torch::manual_seed(80);
  const torch::Tensor index = torch::stack(
      {std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort()),
       std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort())});
  const torch::Tensor q_block =
      lay.block_of.index_select(0, lay.position.index_select(0, index.reshape({-1}))).reshape({batch, nq});
  const torch::Tensor q = Rand(81, {batch * heads, nq, 32});
  const torch::Tensor k = Rand(82, {batch * heads, n, 32}), v = Rand(83, {batch * heads, n, 32});
  auto check = [&](const torch::Tensor& mask) {
    const SparsePlan plan = BuildSparsePlan(lay, mask, q_block, heads, 32);
    const AttentionOutput got = RunSparsePlan(plan, q, k, v);
    const AttentionOutput ref = BlockSparseAttention(lay, q, q_block, k, v, mask, heads, 0);
    CHECK(MaxDiff(got.out, ref.out) < 1e-4);
    CHECK(MaxDiff(got.lse, ref.lse) < 1e-4);
    int64_t pairs = 0;
    for (int64_t g = 0; g < batch * heads; ++g) {
      const torch::Tensor tm =
          mask[g].index_select(0, q_block[g / heads]).index_select(1, lay.block_of);
      pairs += tm.sum().item<int64_t>();
      CHECK(MaxDiff(got.out[g], NaiveAttention(q[g], k[g], v[g], tm)) < kTol);
    }
    CHECK(plan.pairs == pairs);
    // Every query row of every g is in exactly one item; pieces are ascending, disjoint and at
    // most kKeyChunk long; an item's keys are its pieces' lengths.
    std::set<std::pair<int64_t, int64_t>> seen;
    for (const SparsePlan::Item& it : plan.items) {
      for (int64_t i = 0; i < it.q_count; ++i)
        CHECK(seen.insert({it.g, plan.q_rows[static_cast<size_t>(it.q_begin + i)]}).second);
      int64_t keys = 0, last_end = -1;
      for (int64_t x = 0; x < it.piece_count; ++x) {
        const SparsePlan::Piece& pc = plan.pieces[static_cast<size_t>(it.piece_begin + x)];
        CHECK(pc.len >= 1);
        CHECK(pc.len <= SparsePlan::kKeyChunk);
        CHECK(pc.begin >= last_end);
        last_end = pc.begin + pc.len;
        keys += pc.len;
      }
      CHECK(last_end <= n);
      CHECK(it.keys == keys);
    }
    CHECK(static_cast<int64_t>(seen.size()) == batch * heads * nq);
    return plan;
  };
  SECTION("sink and text columns, one dense row block, scattered blocks") {
    torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.3;
    mask.narrow(2, lay.video_blocks, lay.text_blocks).fill_(true);
    mask.narrow(2, 0, 2).fill_(true);  // sink columns
    for (int64_t r = 0; r < nb; ++r) mask.select(1, r).select(1, 3 + r % 5).fill_(true);
    mask.narrow(1, 2, 1).fill_(true);  // a dense row block for every g
    check(mask);
  }
  SECTION("a different dense row block per g") {
    torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.4;
    for (int64_t r = 0; r < nb; ++r) mask.select(1, r).select(1, r).fill_(true);
    mask[1].narrow(0, 4, 1).fill_(true);
    check(mask);
  }
  SECTION("every row full: one span of all n keys per item, cut into kKeyChunk pieces") {
    const SparsePlan plan = check(torch::ones({batch * heads, nb, nb}, torch::kBool));
    for (const SparsePlan::Item& it : plan.items) {
      CHECK(it.keys == n);
      CHECK(it.piece_count == (n + SparsePlan::kKeyChunk - 1) / SparsePlan::kKeyChunk);
    }
  }
  SECTION("plan and inputs that do not match are rejected") {
    const SparsePlan plan = BuildSparsePlan(lay, torch::ones({batch * heads, nb, nb}, torch::kBool),
                                            q_block, heads, 32);
    REQUIRE_THROWS_AS(RunSparsePlan(plan, q.narrow(1, 0, nq - 1), k, v), ShapeError);
    REQUIRE_THROWS_AS(RunSparsePlan(plan, q.to(torch::kFloat64), k, v), ShapeError);
  }
}

TEST_CASE("sparse plan: long key spans over several score tiles, peaked logits, batch 2",
          "[kernels]") {
  // 1200+ keys: full rows run three tiles, so the online softmax rescales across tiles; scaled-up
  // q makes each row's maximum move between tiles. Text front, block 48 (grid not divisible).
  for (const int64_t d : {32, 64, 128}) {
    const ModelGeometry m = SmallModel({4, 15, 20}, 7, TextPosition::kFront, 2, d);
    const Layout lay = BuildLayout(m, TokenOrder{TokenOrderKind::kTiles, {1, 8, 8}}, 48);
    const int64_t n = m.tokens(), nb = lay.blocks(), batch = 2, heads = 2;
    torch::manual_seed(300 + d);
    torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.25;
    mask.narrow(2, lay.video_blocks, lay.text_blocks).fill_(true);
    mask.narrow(1, 0, 6).fill_(true);  // full rows: spans of every key
    const torch::Tensor q_block = lay.block_of.unsqueeze(0).expand({batch, n}).contiguous();
    const torch::Tensor q = Rand(310 + d, {batch * heads, n, d}) * 3.0;
    const torch::Tensor k = Rand(320 + d, {batch * heads, n, d}), v = Rand(330 + d, {batch * heads, n, d});
    const SparsePlan plan = BuildSparsePlan(lay, mask, q_block, heads, d);
    const AttentionOutput got = RunSparsePlan(plan, q, k, v);
    for (int64_t g = 0; g < batch * heads; ++g) {
      const torch::Tensor tm = mask[g].index_select(0, lay.block_of).index_select(1, lay.block_of);
      CHECK(MaxDiff(got.out[g], NaiveAttention(q[g], k[g], v[g], tm)) < kTol);
      torch::Tensor s = torch::matmul(q[g].to(torch::kFloat64), k[g].to(torch::kFloat64).t()) /
                        std::sqrt(static_cast<double>(d));
      s.masked_fill_(tm.logical_not(), -std::numeric_limits<double>::infinity());
      CHECK(MaxDiff(got.lse[g], s.logsumexp(1)) < 1e-4);
    }
  }
}

TEST_CASE("cached sparse plans give the uncached result across steps and selections",
          "[kernels]") {
  const ModelGeometry m = SmallModel({4, 8, 8}, 4, TextPosition::kFront, 4, 32, 1, 6);
  Schedule s = Uniform(m, Pattern(PatternKind::kSpatial, 0.3), 32);
  s.heads[0][1] = Pattern(PatternKind::kTemporal, 0.2);
  s.heads[0][2] = Pattern(PatternKind::kDense, 1.0);
  s.heads[0][3] = Pattern(PatternKind::kBlockSparse, 0.25);
  const Layout lay = BuildLayout(m, s.token_order, 32);
  const int64_t n = m.tokens();
  Runtime cached(s);
  for (int64_t step = 0; step < 3; ++step) {
    const torch::Tensor q = Rand(200 + step, {1, 4, n, 32});
    const torch::Tensor k = Rand(210 + step, {1, 4, n, 32}), v = Rand(220 + step, {1, 4, n, 32});
    const torch::Tensor out = cached.attention(q, k, v, step, 0);
    Runtime fresh(s);  // builds every plan from scratch
    CHECK(MaxDiff(out, fresh.attention(q, k, v, step, 0)) < 1e-6);
    for (int64_t h = 0; h < 4; ++h) {
      const HeadPattern& p = s.heads[0][static_cast<size_t>(h)];
      const torch::Tensor tm = p.pattern == PatternKind::kDense
                                   ? torch::Tensor()
                                   : ExpandBlockMask(lay, ExpectedMask(lay, p, q, k, h)[0]);
      CHECK(MaxDiff(out[0][h], NaiveAttention(q[0][h], k[0][h], v[0][h], tm)) < kTol);
    }
  }
  // A partial selection after cached full calls: plans are built for it, not reused.
  TokenSelection sel;
  sel.tokens = n;
  sel.index = torch::arange(0, n, 3, torch::kInt64).unsqueeze(0);
  const torch::Tensor q = Rand(230, {1, 4, n, 32});
  const torch::Tensor k = Rand(231, {1, 4, n, 32}), v = Rand(232, {1, 4, n, 32});
  const torch::Tensor qs = q.index_select(2, sel.index[0]);
  const torch::Tensor out = cached.attention(qs, k, v, 3, 0, &sel);
  const torch::Tensor tm = ExpandBlockMask(lay, StaticPatternMask(lay, PatternKind::kSpatial, 0.3))
                               .index_select(0, sel.index[0]);
  CHECK(MaxDiff(out[0][0], NaiveAttention(qs[0][0], k[0][0], v[0][0], tm)) < kTol);
  CHECK(cached.cache_bytes() > 0);
}
