// The auxiliary CUDA kernels (kernels/cuda/aux_ops.h) against the CPU reference: RainFusion2.0
// mask prediction vs BlockSparseMask, the layout permutation vs PermuteTokens, Astraea's token ops
// vs TokenCache, TimeRipple vs RippleAttention/RippleReuse. [cuda] cases skip with a visible WARN
// without a device; the op-boundary checks that come before any launch run everywhere.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/aux_ops.h"
#include "kernels/layout.h"
#include "kernels/patterns.h"
#include "kernels/timeripple.h"
#include "kernels/token_cache.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

namespace st = sparsetune;
namespace stc = sparsetune::cuda;

namespace {

bool HaveCuda() {
  if (torch::cuda::is_available()) return true;
  WARN("skipped: libtorch sees no CUDA device");
  return false;
}

struct MaskCase {
  std::array<int64_t, 3> grid;
  int64_t text;
  st::TextPosition pos;
  int64_t block;
  st::TokenOrder order;
  double keep;
  bool sink;
  int64_t head_dim;
  torch::ScalarType dtype;
};

st::TokenOrder Tiles(int64_t f, int64_t h, int64_t w) {
  st::TokenOrder o;
  o.kind = st::TokenOrderKind::kTiles;
  o.tile = {f, h, w};
  return o;
}

st::TokenOrder Raster() {
  st::TokenOrder o;
  o.kind = st::TokenOrderKind::kRaster;
  return o;
}

std::string Describe(const MaskCase& c) {
  return "grid " + std::to_string(c.grid[0]) + "x" + std::to_string(c.grid[1]) + "x" +
         std::to_string(c.grid[2]) + " text " + std::to_string(c.text) + " block " +
         std::to_string(c.block) + " keep " + std::to_string(c.keep) + " D " +
         std::to_string(c.head_dim);
}

// Float64 block scores of one head (layout order inputs [N, D]) for explaining near-ties.
torch::Tensor ScoresF64(const st::Layout& l, const torch::Tensor& ql, const torch::Tensor& kl) {
  const int64_t nb = l.blocks(), d = ql.size(1);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor len = torch::tensor(l.block_len, f64).unsqueeze(1);
  const torch::Tensor qp = torch::zeros({nb, d}, f64).index_add_(0, l.block_of, ql.to(torch::kFloat64)) / len;
  const torch::Tensor kp = torch::zeros({nb, d}, f64).index_add_(0, l.block_of, kl.to(torch::kFloat64)) / len;
  return torch::matmul(qp, kp.t()) / std::sqrt(static_cast<double>(d));
}

}  // namespace

namespace {

// One mask case on B=2, H=2 against BlockSparseMask per head; poisoned outputs.
void CheckMaskCase(const MaskCase& c, int64_t seed) {
  const int64_t batch = 2, heads = 2;
  INFO(Describe(c));
  const st::ModelGeometry m = st::test::SmallModel(c.grid, c.text, c.pos, heads, c.head_dim);
  const st::Layout l = st::BuildLayout(m, c.order, c.block);
  const int64_t n = l.tokens, nb = l.blocks();
  // The CPU sees exactly the half-precision values the GPU reads.
  const torch::Tensor q = st::test::Rand(seed, {batch, heads, n, c.head_dim}).to(c.dtype);
  const torch::Tensor k = st::test::Rand(seed + 1, {batch, heads, n, c.head_dim}).to(c.dtype);
  const torch::Tensor qd = q.cuda(), kd = k.cuda();
  stc::MaskPrediction out = stc::EmptyMaskPrediction(l, qd, /*layout_copies=*/true);
  out.q_layout.fill_(-5.0);
  out.k_layout.fill_(-5.0);
  out.pooled.fill_(std::numeric_limits<float>::quiet_NaN());
  out.row_ptr.fill_(-7);
  out.col_idx.fill_(-7);
  out.workspace.fill_(0xAB);
  stc::PredictBlockMaskInto(l, qd, kd, c.keep, c.sink, out);
  REQUIRE(out.blocks == nb);
  // The pooling pass's layout-order copies are the permutation, bit for bit.
  CHECK(out.q_layout.cpu().equal(st::PermuteTokens(q, l.order)));
  CHECK(out.k_layout.cpu().equal(st::PermuteTokens(k, l.order)));

  // CSR well-formed: starts at 0, non-decreasing, ascending columns in [0, nb).
  const torch::Tensor rp = out.row_ptr.cpu().to(torch::kInt64);
  const int64_t nnz = rp[-1].item<int64_t>();
  REQUIRE(rp[0].item<int64_t>() == 0);
  REQUIRE((rp.narrow(0, 1, rp.numel() - 1) >= rp.narrow(0, 0, rp.numel() - 1)).all().item<bool>());
  const torch::Tensor cols = out.col_idx.narrow(0, 0, nnz).cpu().to(torch::kInt64);
  REQUIRE((cols >= 0).all().item<bool>());
  REQUIRE((cols < nb).all().item<bool>());
  if (nnz > 1) {
    // Strictly ascending inside each row: a non-increasing step only where a new row starts.
    torch::Tensor starts = torch::zeros({nnz}, torch::kBool);
    starts.index_put_({rp.masked_select(rp < nnz)}, true);
    const torch::Tensor step_up = cols.narrow(0, 1, nnz - 1) > cols.narrow(0, 0, nnz - 1);
    REQUIRE((step_up | starts.narrow(0, 1, nnz - 1)).all().item<bool>());
  }
  const torch::Tensor dense = stc::CsrToDense(out, batch, heads);
  REQUIRE(dense.sum().item<int64_t>() == nnz);  // no duplicate columns

  const torch::Tensor ql = st::PermuteTokens(q.to(torch::kFloat32), l.order);
  const torch::Tensor kl = st::PermuteTokens(k.to(torch::kFloat32), l.order);
  const torch::Tensor pooled = out.pooled.cpu();
  int64_t near_ties = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const torch::Tensor ref = st::BlockSparseMask(l, ql.select(1, h), kl.select(1, h),
                                                  torch::Tensor(), c.keep, c.sink);
    // Pooled means against the CPU's float64 block means.
    for (int64_t b = 0; b < batch; ++b) {
      const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
      const torch::Tensor len = torch::tensor(l.block_len, f64).unsqueeze(1);
      const torch::Tensor qp = torch::zeros({nb, c.head_dim}, f64)
                                   .index_add_(0, l.block_of, ql[b][h].to(torch::kFloat64)) / len;
      const torch::Tensor kp = torch::zeros({nb, c.head_dim}, f64)
                                   .index_add_(0, l.block_of, kl[b][h].to(torch::kFloat64)) / len;
      CHECK((pooled[0][b][h].to(torch::kFloat64) - qp).abs().max().item<double>() < 1e-5);
      CHECK((pooled[1][b][h].to(torch::kFloat64) - kp).abs().max().item<double>() < 1e-5);
      const torch::Tensor got = dense[b][h];
      const torch::Tensor want = ref[b];
      if (got.equal(want)) continue;
      // A differing row must be a near-tie at the top-k boundary (float rounding of the scores).
      const torch::Tensor s = ScoresF64(l, ql[b][h], kl[b][h]);
      const torch::Tensor diff_rows = (got != want).any(1).nonzero().squeeze(1);
      for (int64_t i = 0; i < diff_rows.numel(); ++i) {
        const int64_t r = diff_rows[i].item<int64_t>();
        const torch::Tensor d_cols = (got[r] != want[r]).nonzero().squeeze(1);
        const torch::Tensor sr = s[r].index_select(0, d_cols);
        const double spread = (sr.max() - sr.min()).item<double>();
        INFO("row " << r << " differs in " << d_cols.numel() << " columns, score spread " << spread);
        CHECK(d_cols.numel() == 2);
        CHECK(spread < 1e-5);
        ++near_ties;
      }
    }
  }
  CHECK(near_ties <= 1);
}

}  // namespace

TEST_CASE("GPU mask prediction equals BlockSparseMask", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  const std::vector<MaskCase> cases = {
      {{3, 5, 7}, 0, st::TextPosition::kNone, 16, Tiles(1, 2, 4), 0.3, true, 64, torch::kBFloat16},
      {{4, 6, 6}, 10, st::TextPosition::kFront, 32, Tiles(2, 3, 3), 0.05, true, 64, torch::kBFloat16},
      {{5, 4, 9}, 7, st::TextPosition::kBack, 16, Raster(), 0.5, true, 32, torch::kFloat16},
      {{2, 8, 8}, 0, st::TextPosition::kNone, 64, Tiles(1, 4, 4), 1.0, true, 64, torch::kBFloat16},
      {{6, 10, 12}, 20, st::TextPosition::kFront, 32, Tiles(1, 4, 4), 0.2, false, 128, torch::kBFloat16},
      {{8, 16, 18}, 0, st::TextPosition::kNone, 64, Tiles(2, 4, 8), 0.1, true, 128, torch::kFloat16},
      {{8, 32, 32}, 3, st::TextPosition::kBack, 16, Tiles(1, 4, 4), 0.15, true, 64, torch::kBFloat16},
      {{4, 32, 33}, 0, st::TextPosition::kNone, 4, Raster(), 0.07, true, 32, torch::kBFloat16},
  };
  int64_t seed = 100;
  for (const MaskCase& c : cases) {
    CheckMaskCase(c, seed);
    seed += 2;
  }
}

// Small enough for compute-sanitizer's racecheck (scripts/gpu-aux.sh).
TEST_CASE("GPU mask prediction on a small case", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  CheckMaskCase({{3, 4, 5}, 4, st::TextPosition::kFront, 8, Tiles(1, 2, 2), 0.4, true, 32,
                 torch::kBFloat16}, 7);
}

TEST_CASE("GPU permutation to layout order and back equals PermuteTokens", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  const st::ModelGeometry m = st::test::SmallModel({3, 7, 9}, 5, st::TextPosition::kFront);
  const st::Layout l = st::BuildLayout(m, Tiles(2, 4, 4), 16);
  for (int64_t d : {64, 40, 128}) {
    INFO("head_dim " << d);
    const torch::Tensor x = st::test::Rand(7 + d, {2, 3, l.tokens, d}).to(torch::kBFloat16);
    const st::Layout ld = st::LayoutOn(l, torch::kCUDA);
    torch::Tensor fwd = torch::full({2, 3, l.tokens, d}, -3.0, x.options().device(torch::kCUDA));
    stc::PermuteRowsInto(x.cuda(), ld.order, fwd);
    CHECK(fwd.cpu().equal(st::PermuteTokens(x, l.order)));
    const torch::Tensor back = stc::FromLayoutOrder(ld, fwd);
    CHECK(back.cpu().equal(x));
    CHECK(stc::ToLayoutOrder(l, x.cuda()).cpu().equal(fwd.cpu()));
  }
}

TEST_CASE("GPU token ops follow TokenCache over two steps", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  const int64_t batch = 2, heads = 3, text = 6, video = 90, ch = 40;
  for (st::TextPosition pos : {st::TextPosition::kFront, st::TextPosition::kBack, st::TextPosition::kNone}) {
    const int64_t t = pos == st::TextPosition::kNone ? 0 : text;
    const int64_t tokens = video + t;
    const int64_t offset = pos == st::TextPosition::kFront ? t : 0;
    INFO("text " << t << " offset " << offset);
    st::TokenCache cpu(1, tokens, offset, video);
    const auto cuda = torch::TensorOptions().device(torch::kCUDA);
    // Step 1: every token computed.
    const torch::Tensor u1 = st::test::Rand(1, {batch, tokens, ch});
    const torch::Tensor lse1 = st::test::Rand(2, {batch, heads, tokens}) + 5.0;
    const torch::Tensor all = torch::arange(tokens, torch::kInt64).unsqueeze(0).expand({batch, tokens}).contiguous();
    st::TokenSelection every;
    every.tokens = tokens;
    cpu.complete(0, every, u1);
    cpu.record_lse(0, all, lse1.mean(1));
    torch::Tensor cache = u1.cuda();
    torch::Tensor delta = torch::ones({batch, tokens}, cuda.dtype(torch::kFloat32));
    torch::Tensor skipped = torch::zeros({batch, tokens}, cuda.dtype(torch::kInt64));
    torch::Tensor lse_tok = torch::zeros({batch, tokens}, cuda.dtype(torch::kFloat32));
    stc::RecordLse(lse_tok, lse1.cuda(), all.cuda());
    // The two steps differ in the skip counters and Δ, so the scores are checked after each.
    for (int step = 0; step < 2; ++step) {
      INFO("step " << step);
      torch::Tensor scores = torch::full({batch, tokens}, -1.0, cuda.dtype(torch::kFloat64));
      stc::TokenScoresInto(lse_tok, delta, skipped, offset, video, scores);
      const torch::Tensor want = cpu.scores(0);
      const torch::Tensor got = scores.cpu();
      REQUIRE(got.isinf().equal(want.isinf()));
      const torch::Tensor fin = want.isfinite();
      CHECK((got.masked_select(fin) - want.masked_select(fin)).abs().max().item<double>() < 1e-5);

      const st::TokenSelection sel = cpu.select(0, 0.3);
      const torch::Tensor idx = sel.index.cuda();
      const int64_t k = sel.index.size(1);
      const torch::Tensor x = st::test::Rand(10 + step, {batch, tokens, ch}).to(torch::kBFloat16);
      torch::Tensor gathered = torch::full({batch, k, ch}, 7.0, cuda.dtype(torch::kBFloat16));
      stc::GatherTokensInto(x.cuda(), idx, gathered);
      CHECK(gathered.cpu().equal(x.gather(1, sel.index.unsqueeze(2).expand({batch, k, ch}))));

      const torch::Tensor upd = st::test::Rand(20 + step, {batch, k, ch});
      const torch::Tensor merged = cpu.complete(0, sel, upd);
      stc::ScatterTokens(cache, upd.cuda(), idx, delta);
      stc::UpdateSkipped(skipped, idx);
      CHECK(cache.cpu().equal(merged));
      const torch::Tensor lse2 = st::test::Rand(30 + step, {batch, heads, k}) + 5.0;
      cpu.record_lse(0, sel.index, lse2.mean(1));
      stc::RecordLse(lse_tok, lse2.cuda(), idx);
    }
    const torch::Tensor want = cpu.scores(0);
    const torch::Tensor got = stc::TokenScores(lse_tok, delta, skipped, offset, video).cpu();
    const torch::Tensor fin = want.isfinite();
    CHECK((got.masked_select(fin) - want.masked_select(fin)).abs().max().item<double>() < 1e-5);
  }
}

TEST_CASE("GPU TimeRipple equals RippleAttention when reuse is tile-uniform", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  struct RippleCase {
    std::array<int64_t, 3> grid;
    int64_t text;
    st::TextPosition pos;
    int64_t d;
    torch::ScalarType dtype;
  };
  const std::vector<RippleCase> cases = {
      {{3, 5, 8}, 0, st::TextPosition::kNone, 64, torch::kBFloat16},
      {{4, 6, 9}, 7, st::TextPosition::kFront, 128, torch::kBFloat16},
      {{3, 4, 11}, 5, st::TextPosition::kBack, 32, torch::kFloat16},
  };
  const int64_t batch = 2, heads = 2;
  const double threshold = 0.9;  // near-copies ~0.99, near-negations ~-0.99
  int64_t seed = 500;
  for (const RippleCase& c : cases) {
    INFO("grid " << c.grid[0] << "x" << c.grid[1] << "x" << c.grid[2] << " text " << c.text << " D " << c.d);
    const st::ModelGeometry m = st::test::SmallModel(c.grid, c.text, c.pos, heads, c.d);
    const st::Layout l = st::BuildLayout(m, Raster(), 16);
    const std::array<int64_t, 3> split = st::RopeSplitFor(c.d);
    const torch::Tensor k = st::test::RippleKeys(l, batch, heads, c.d, split, seed++).to(c.dtype);
    const torch::Tensor v = st::test::Rand(seed++, {batch, heads, l.tokens, c.d}).to(c.dtype);
    // Queries: every other token (q rows need not be all tokens).
    const torch::Tensor q_index = torch::arange(0, l.tokens, 2, torch::kInt64).unsqueeze(0).expand({batch, -1}).contiguous();
    const torch::Tensor q = st::test::Rand(seed++, {batch, heads, q_index.size(1), c.d}).to(c.dtype);
    const st::RippleOutput ref = st::RippleAttention(l, q, q_index, k, v,
                                                     std::vector<torch::Tensor>(heads), split, threshold);
    const int64_t hw = l.grid[1] * l.grid[2], runs = (hw + 31) / 32;
    stc::RippleResult out;
    out.out = torch::full(q.sizes(), 99.0, q.options().device(torch::kCUDA));
    out.lse = torch::full({batch, heads, q.size(2)}, 99.0, torch::TensorOptions().device(torch::kCUDA));
    out.reuse = torch::full({batch, heads, 3, l.grid[0], runs}, 7,
                            torch::TensorOptions().device(torch::kCUDA).dtype(torch::kUInt8));
    stc::RippleAttentionInto(l, q.cuda(), k.cuda(), v.cuda(), split, threshold, out);
    CHECK(out.macs_skipped == ref.macs_skipped);
    CHECK(ref.macs_skipped > 0);
    const torch::Tensor o = out.out.cpu().to(torch::kFloat32), o_ref = ref.out.to(torch::kFloat32);
    CHECK((o - o_ref).abs().max().item<double>() < 2e-2);
    const double lse_err = (out.lse.cpu() - ref.lse).abs().max().item<double>();
    CHECK(lse_err < 2e-4);
    // Reuse matters: without it (threshold above any cosine) the LSE moves far beyond that.
    const st::RippleOutput exact = st::RippleAttention(l, q, q_index, k, v,
                                                       std::vector<torch::Tensor>(heads), split, 2.0);
    CHECK((exact.lse - ref.lse).abs().max().item<double>() > 20 * lse_err);
    CHECK((exact.lse - ref.lse).abs().max().item<double>() > 5e-3);
    // Tile flags == per-token RippleReuse AND-ed over each tile.
    const torch::Tensor flags = out.reuse.cpu();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        const torch::Tensor tok = st::RippleReuse(l, k[b][h], split, threshold)
                                      .narrow(1, l.video_offset, l.video_tokens)
                                      .view({3, l.grid[0], hw});
        for (int64_t c2 = 0; c2 < runs; ++c2) {
          const int64_t len = std::min<int64_t>(32, hw - c2 * 32);
          const torch::Tensor tile = tok.narrow(2, c2 * 32, len).all(2).to(torch::kUInt8);
          CHECK(flags[b][h].select(2, c2).equal(tile));
        }
      }
  }
}

TEST_CASE("GPU TimeRipple with block masks equals RippleAttention", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  const int64_t batch = 2, heads = 2, d = 64;
  const st::ModelGeometry m = st::test::SmallModel({4, 6, 16}, 6, st::TextPosition::kFront, heads, d);
  const st::Layout l = st::BuildLayout(m, Tiles(1, 3, 4), 16);
  const int64_t nb = l.blocks();
  const std::array<int64_t, 3> split = st::RopeSplitFor(d);
  const torch::Tensor k = st::test::RippleKeys(l, batch, heads, d, split, 620).to(torch::kBFloat16);
  const torch::Tensor v = st::test::Rand(621, {batch, heads, l.tokens, d}).to(torch::kBFloat16);
  // Queries: a third of the tokens.
  const torch::Tensor q_index =
      torch::arange(1, l.tokens, 3, torch::kInt64).unsqueeze(0).expand({batch, -1}).contiguous();
  const torch::Tensor q = st::test::Rand(622, {batch, heads, q_index.size(1), d}).to(torch::kBFloat16);
  // Head 0: random block masks (diagonal kept, so no row is empty); head 1: dense (all true).
  torch::manual_seed(623);
  torch::Tensor mask0 = torch::rand({batch, nb, nb}) < 0.4;
  mask0.logical_or_(torch::eye(nb, torch::kBool).unsqueeze(0));
  const std::vector<torch::Tensor> masks = {mask0, torch::Tensor()};
  const st::RippleOutput ref = st::RippleAttention(l, q, q_index, k, v, masks, split, 0.9);
  stc::RippleMask rm;
  rm.mask = torch::stack({mask0, torch::ones({batch, nb, nb}, torch::kBool)}, 1).cuda();
  const torch::Tensor block_of_token = l.block_of.index_select(0, l.position);
  rm.q_block = block_of_token.index_select(0, q_index.reshape({-1})).view({batch, -1})
                   .to(torch::kInt32).cuda();
  rm.key_block = block_of_token.to(torch::kInt32).cuda();
  const stc::RippleResult out = stc::RippleAttention(l, q.cuda(), k.cuda(), v.cuda(), split, 0.9, &rm);
  CHECK(ref.macs_skipped > 0);
  CHECK(out.macs_skipped == ref.macs_skipped);
  CHECK((out.out.cpu().to(torch::kFloat32) - ref.out.to(torch::kFloat32)).abs().max().item<double>() < 2e-2);
  CHECK((out.lse.cpu() - ref.lse).abs().max().item<double>() < 2e-4);
  // The mask matters: head 0 unmasked moves the LSE well beyond that.
  const st::RippleOutput unmasked = st::RippleAttention(l, q, q_index, k, v,
                                                        std::vector<torch::Tensor>(heads), split, 0.9);
  CHECK((unmasked.lse[0][0] - ref.lse[0][0]).abs().max().item<double>() > 1e-2);
  // Bad mask shapes and dtypes are rejected before any launch.
  stc::RippleMask bad = rm;
  bad.mask = rm.mask.narrow(3, 0, nb - 1).contiguous();
  REQUIRE_THROWS_AS(stc::RippleAttention(l, q.cuda(), k.cuda(), v.cuda(), split, 0.9, &bad),
                    st::ShapeError);
  bad = rm;
  bad.q_block = rm.q_block.to(torch::kInt64);
  REQUIRE_THROWS_AS(stc::RippleAttention(l, q.cuda(), k.cuda(), v.cuda(), split, 0.9, &bad),
                    st::ShapeError);
}

TEST_CASE("GPU TimeRipple tile flags AND the per-token reuse on random keys", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  const st::ModelGeometry m = st::test::SmallModel({4, 6, 10}, 3, st::TextPosition::kFront, 2, 64);
  const st::Layout l = st::BuildLayout(m, Raster(), 16);
  const std::array<int64_t, 3> split = st::RopeSplitFor(64);
  const int64_t hw = 60, runs = 2;
  // Half the keys of some tiles near-copies: per-token reuse holds inside tiles that do not reuse.
  torch::Tensor k = st::test::Rand(900, {1, 2, l.tokens, 64});
  for (int64_t f = 1; f < 4; ++f) {
    const int64_t cur = l.video_offset + f * hw;
    k.narrow(2, cur, 45).copy_(k.narrow(2, cur - hw, 45) + 0.05 * torch::randn({1, 2, 45, 64}));
  }
  k = k.to(torch::kBFloat16);
  const torch::Tensor q = st::test::Rand(901, {1, 2, l.tokens, 64}).to(torch::kBFloat16);
  const stc::RippleResult out = stc::RippleAttention(l, q.cuda(), k.cuda(), k.cuda(), split, 0.9);
  const torch::Tensor flags = out.reuse.cpu();
  int64_t reused_tiles = 0, expected_macs = 0;
  for (int64_t h = 0; h < 2; ++h) {
    const torch::Tensor tok = st::RippleReuse(l, k[0][h], split, 0.9)
                                  .narrow(1, l.video_offset, l.video_tokens).view({3, 4, hw});
    for (int64_t c = 0; c < runs; ++c) {
      const int64_t len = std::min<int64_t>(32, hw - c * 32);
      const torch::Tensor tile = tok.narrow(2, c * 32, len).all(2);
      CHECK(flags[0][h].select(2, c).equal(tile.to(torch::kUInt8)));
      reused_tiles += tile.sum().item<int64_t>();
      for (int g = 0; g < 3; ++g)
        expected_macs += tile[g].sum().item<int64_t>() * len * split[static_cast<size_t>(g)] * l.tokens;
    }
  }
  CHECK(reused_tiles > 0);
  CHECK(out.macs_skipped == expected_macs);
}

TEST_CASE("GPU ARM probes equal ArmRecall for every head", "[kernels][cuda]") {
  if (!HaveCuda()) return;
  struct ArmCase {
    std::array<int64_t, 3> grid;
    int64_t text;
    st::TextPosition pos;
    int64_t d;
    double density;
  };
  const std::vector<ArmCase> cases = {
      {{4, 6, 8}, 0, st::TextPosition::kNone, 64, 0.3},
      {{5, 7, 9}, 6, st::TextPosition::kFront, 128, 0.5},
      {{3, 10, 11}, 4, st::TextPosition::kBack, 32, 0.2},
  };
  const int64_t batch = 2, heads = 3;
  int64_t seed = 700;
  for (const ArmCase& c : cases) {
    INFO("grid " << c.grid[0] << "x" << c.grid[1] << "x" << c.grid[2] << " text " << c.text);
    const st::ModelGeometry m = st::test::SmallModel(c.grid, c.text, c.pos, heads, c.d);
    const st::Layout l = st::BuildLayout(m, Tiles(1, 4, 4), 16);
    const std::array<torch::Tensor, 3> masks = {
        st::StaticPatternMask(l, st::PatternKind::kSpatial, c.density),
        st::StaticPatternMask(l, st::PatternKind::kTemporal, c.density),
        st::StaticPatternMask(l, st::PatternKind::kTextural, c.density)};
    // Scaled so the softmax is peaked enough for the candidates to differ.
    const torch::Tensor q = (3.0 * st::test::Rand(seed++, {batch, heads, l.tokens, c.d})).to(torch::kBFloat16);
    const torch::Tensor k = st::test::Rand(seed++, {batch, heads, l.tokens, c.d}).to(torch::kBFloat16);
    const torch::Tensor q_index =
        torch::arange(l.tokens, torch::kInt64).unsqueeze(0).expand({batch, l.tokens}).contiguous();
    const torch::Tensor got = stc::ArmRecallHeads(l, q.cuda(), k.cuda(), masks);
    REQUIRE(got.sizes() == torch::IntArrayRef({heads, 3}));
    for (int64_t h = 0; h < heads; ++h) {
      const std::array<double, 3> want =
          st::ArmRecall(l, q.select(1, h), q_index, k.select(1, h), masks);
      for (int cand = 0; cand < 3; ++cand) {
        INFO("head " << h << " candidate " << cand);
        CHECK(got[h][cand].item<double>() == Approx(want[static_cast<size_t>(cand)]).margin(1e-5));
      }
    }
  }
}

TEST_CASE("GPU aux ops reject bad inputs before any launch", "[kernels][cuda]") {
  const st::ModelGeometry m = st::test::SmallModel({2, 4, 4}, 0, st::TextPosition::kNone);
  const st::Layout l = st::BuildLayout(m, Raster(), 8);
  const torch::Tensor cpu = torch::randn({1, 2, l.tokens, 32}).to(torch::kBFloat16);
  // Device checks come first, so these run without a GPU.
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, cpu, cpu, 0.5, true),
                      "cuda::PredictBlockMask: q must be a CUDA tensor; got cpu");
  REQUIRE_THROWS_AS(stc::PermuteRows(cpu, l.order), st::ShapeError);
  REQUIRE_THROWS_AS(stc::GatherTokens(torch::randn({1, 4, 3}), torch::zeros({1, 2}, torch::kInt64)),
                    st::ShapeError);
  REQUIRE_THROWS_AS(stc::RippleAttention(l, cpu, cpu, cpu, {12, 10, 10}, 0.9), st::ShapeError);
  REQUIRE_THROWS_WITH(stc::ArmRecallHeads(l, cpu, cpu, {}),
                      "cuda::ArmRecallHeads: q must be a CUDA tensor; got cpu");
  REQUIRE_THROWS_WITH(stc::TokenScores(torch::zeros({1, 4}), torch::zeros({1, 4}),
                                       torch::zeros({1, 4}, torch::kInt64), 0, 4),
                      "cuda::TokenScores: lse must be a CUDA tensor; got cpu");
  if (!HaveCuda()) return;
  const torch::Tensor q = cpu.cuda();
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q.to(torch::kFloat32), q, 0.5, true),
                      "cuda::PredictBlockMask: q must be bfloat16 or float16; got Float");
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q, q.to(torch::kFloat16), 0.5, true),
                      "cuda::PredictBlockMask: k must have q's dtype");
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q, q, 0.0, true),
                      "cuda::PredictBlockMask: keep must be in (0, 1]; got 0.000000");
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q.narrow(2, 0, 30).contiguous(), q, 0.5, true),
                      "cuda::PredictBlockMask: q has 30 tokens but the layout has 32");
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q.transpose(2, 3), q, 0.5, true),
                      "cuda::PredictBlockMask: q must be contiguous");
  REQUIRE_THROWS_WITH(stc::PredictBlockMask(l, q, q.narrow(3, 0, 16).contiguous(), 0.5, true),
                      "cuda::PredictBlockMask: k [1, 2, 32, 16] must match q [1, 2, 32, 32]");
  stc::MaskPrediction small = stc::EmptyMaskPrediction(l, q);
  small.col_idx = small.col_idx.narrow(0, 0, 3);
  REQUIRE_THROWS_WITH(stc::PredictBlockMaskInto(l, q, q, 0.5, true, small),
                      "cuda::PredictBlockMask: col_idx must be [32]; got [3]");
  REQUIRE_THROWS_WITH(stc::PermuteRows(q, l.order.to(torch::kInt32).cuda()),
                      "cuda::PermuteRows: index must be Long; got Int");
  REQUIRE_THROWS_WITH(stc::PermuteRows(q, l.order),
                      "cuda::PermuteRows: index must be a CUDA tensor; got cpu");
  const torch::Tensor x = torch::randn({2, 10, 8}, torch::kCUDA);
  REQUIRE_THROWS_WITH(stc::GatherTokens(x, torch::zeros({3, 4}, torch::TensorOptions().dtype(torch::kInt64).device(torch::kCUDA))),
                      "cuda::GatherTokens: index must be [B, k] with B = 2; got [3, 4]");
  torch::Tensor cache = torch::randn({2, 10, 8}, torch::kCUDA).to(torch::kFloat64);
  const torch::Tensor idx = torch::zeros({2, 3}, torch::TensorOptions().dtype(torch::kInt64).device(torch::kCUDA));
  REQUIRE_THROWS_WITH(stc::ScatterTokens(cache, torch::randn({2, 3, 8}, torch::kCUDA), idx),
                      "cuda::ScatterTokens: cache must be float32, bfloat16 or float16; got Double");
  torch::Tensor cache32 = cache.to(torch::kFloat32);
  REQUIRE_THROWS_WITH(stc::ScatterTokens(cache32, torch::randn({2, 4, 8}, torch::kCUDA), idx),
                      "cuda::ScatterTokens: update must be [B, k, C] = [2, 3, 8]; got [2, 4, 8]");
  REQUIRE_THROWS_WITH(stc::RippleAttention(l, q, q, q, {10, 10, 10}, 0.9),
                      "cuda::RippleAttention: rope split must be 3 non-negative channel counts summing to head_dim 32");
  const torch::Tensor q256 = torch::randn({1, 1, l.tokens, 256}, torch::kCUDA).to(torch::kBFloat16);
  REQUIRE_THROWS_WITH(stc::RippleAttention(l, q256, q256, q256, {128, 64, 64}, 0.9),
                      "cuda::RippleAttention: head_dim must be a multiple of 8 in [8, 128]; got 256");
}
