// The sparse plan's query groups: consecutive query blocks of one g share one work item, the key
// spans all of them keep run once for the whole group, and each block's other spans run for its
// rows only. Checks that every (query, key) pair the mask keeps is computed exactly once and no
// other, and that the result equals float64 attention with the explicit token mask, with each
// matmul routine this build has (brgemm and sgemm).
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>

#include "core/error.h"
#include "kernels/block_attention.h"
#include "kernels/layout.h"
#include "tests/catch.h"
#include "tests/kernels/kernel_test_util.h"

using namespace sparsetune;
using namespace sparsetune::test;

namespace {

constexpr double kTol = 2e-4;

// Restores the process-wide CPU matmul routine when a test changed it.
struct MatmulGuard {
  CpuMatmul saved = GetCpuMatmul();
  ~MatmulGuard() { SetCpuMatmul(saved); }
};

// Key tokens (layout positions) the pieces [begin, begin + count) cover, each at most once.
std::vector<int64_t> KeysOf(const SparsePlan& p, int64_t begin, int64_t count) {
  std::vector<int64_t> keys;
  for (int64_t x = 0; x < count; ++x) {
    const SparsePlan::Piece& pc = p.pieces[static_cast<size_t>(begin + x)];
    for (int64_t t = pc.begin; t < pc.begin + pc.len; ++t) keys.push_back(t);
  }
  return keys;
}

// Checks the plan's structure against the mask and its result against NaiveAttention. Returns the
// number of items holding more than one query block.
int64_t CheckPlan(const Layout& lay, const torch::Tensor& mask, const torch::Tensor& q_block,
                  int64_t heads, const torch::Tensor& q, const torch::Tensor& k,
                  const torch::Tensor& v) {
  const int64_t g_count = mask.size(0), nb = lay.blocks(), nq = q.size(1), d = q.size(2);
  const SparsePlan plan = BuildSparsePlan(lay, mask, q_block, heads, d);
  const torch::Tensor mc = mask.contiguous();
  const torch::Tensor block_of = lay.block_of.contiguous();
  const int64_t* bo = block_of.data_ptr<int64_t>();
  std::set<std::pair<int64_t, int64_t>> seen;
  int64_t pairs = 0, grouped = 0;
  for (const SparsePlan::Item& it : plan.items) {
    CHECK(it.q_count <= SparsePlan::kGroupQueries);
    const torch::Tensor qb = q_block[it.g / heads];
    auto block_of_row = [&](int64_t offset) {
      return qb[plan.q_rows[static_cast<size_t>(it.q_begin + offset)]].item<int64_t>();
    };
    auto full_row = [&](int64_t block) { return mc[it.g][block].all().item<bool>(); };
    const std::vector<int64_t> shared = KeysOf(plan, it.piece_begin, it.piece_count);
    CHECK(static_cast<int64_t>(shared.size()) == it.keys);
    // Rows of one block are contiguous in the item: collect the item's blocks in order.
    std::vector<int64_t> starts = {0};
    for (int64_t i = 1; i < it.q_count; ++i)
      if (block_of_row(i) != block_of_row(i - 1)) starts.push_back(i);
    if (starts.size() > 1) ++grouped;
    const bool first_full = full_row(block_of_row(0));
    int64_t item_pairs = 0;
    for (size_t s = 0; s < starts.size(); ++s) {
      const int64_t offset = starts[s];
      const int64_t rows =
          (s + 1 < starts.size() ? starts[s + 1] : it.q_count) - offset;
      const int64_t block = block_of_row(offset);
      CHECK(full_row(block) == first_full);  // full and sparse rows are never mixed
      std::vector<int64_t> keys = shared;
      for (int64_t x = 0; x < it.part_count; ++x) {
        const SparsePlan::Part& part = plan.parts[static_cast<size_t>(it.part_begin + x)];
        if (part.q_offset != offset) continue;
        CHECK(part.q_count == rows);
        const std::vector<int64_t> own = KeysOf(plan, part.piece_begin, part.piece_count);
        CHECK(static_cast<int64_t>(own.size()) == part.keys);
        keys.insert(keys.end(), own.begin(), own.end());
      }
      // The block's keys: shared and own spans, disjoint, exactly the mask row's key tokens.
      const std::set<int64_t> unique(keys.begin(), keys.end());
      CHECK(unique.size() == keys.size());
      std::set<int64_t> want;
      for (int64_t t = 0; t < lay.tokens; ++t)
        if (mc[it.g][block][bo[t]].item<bool>()) want.insert(t);
      CHECK(unique == want);
      item_pairs += rows * static_cast<int64_t>(keys.size());
      for (int64_t i = 0; i < rows; ++i)
        CHECK(seen.insert({it.g, plan.q_rows[static_cast<size_t>(it.q_begin + offset + i)]}).second);
    }
    CHECK(it.pairs == item_pairs);
    pairs += item_pairs;
  }
  CHECK(static_cast<int64_t>(seen.size()) == g_count * nq);
  CHECK(plan.pairs == pairs);
  for (size_t i = 1; i < plan.items.size(); ++i)
    CHECK(plan.items[i - 1].pairs >= plan.items[i].pairs);

  std::vector<CpuMatmul> routines = {CpuMatmul::kSgemm};
  if (CpuBrgemmAvailable()) routines.push_back(CpuMatmul::kBrgemm);
  const MatmulGuard restore;
  for (CpuMatmul how : routines) {
    INFO("CPU matmul " << CpuMatmulName(how));
    SetCpuMatmul(how);
    const AttentionOutput got = RunSparsePlan(plan, q, k, v);
    for (int64_t g = 0; g < g_count; ++g) {
      const torch::Tensor tm =
          mask[g].index_select(0, q_block[g / heads]).index_select(1, lay.block_of);
      CHECK(MaxDiff(got.out[g], NaiveAttention(q[g], k[g], v[g], tm)) < kTol);
      torch::Tensor s = torch::matmul(q[g].to(torch::kFloat64), k[g].to(torch::kFloat64).t()) /
                        std::sqrt(static_cast<double>(d));
      s.masked_fill_(tm.logical_not(), -std::numeric_limits<double>::infinity());
      CHECK(MaxDiff(got.lse[g], s.logsumexp(1)) < 1e-4);
    }
  }
  return grouped;
}

}  // namespace

TEST_CASE("sparse plan groups query blocks: shared spans once, per-block spans apart",
          "[kernels]") {
  // Tiles [1, 4, 4], block 16: a 4x8x16 video frame is 8 blocks (128 keys); text at the back;
  // 2 heads. Groups need kMinSharedKeys (256) common keys.
  const ModelGeometry m = SmallModel({4, 8, 16}, 6, TextPosition::kBack, 2, 32);
  const Layout lay = BuildLayout(m, TokenOrder{TokenOrderKind::kTiles, {1, 4, 4}}, 16);
  const int64_t n = m.tokens(), nb = lay.blocks(), heads = 2, d = 32;
  REQUIRE(nb == 33);

  SECTION("sink mask: first-frame rows dense, sink and text columns, random top blocks") {
    const int64_t batch = 2;
    torch::manual_seed(501);
    torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.3;
    mask.narrow(2, 0, 8).fill_(true);                           // first-frame columns
    mask.narrow(2, lay.video_blocks, lay.text_blocks).fill_(true);  // text columns
    mask.narrow(1, 0, 8).fill_(true);                           // first-frame rows
    mask.narrow(1, lay.video_blocks, lay.text_blocks).fill_(true);  // text rows
    const torch::Tensor q_block = lay.block_of.unsqueeze(0).expand({batch, n}).contiguous();
    const torch::Tensor q = Rand(502, {batch * heads, n, d}) * 2.0;
    const torch::Tensor k = Rand(503, {batch * heads, n, d}), v = Rand(504, {batch * heads, n, d});
    CHECK(CheckPlan(lay, mask, q_block, heads, q, k, v) > 0);
  }
  SECTION("few shared keys: no groups, one item per query block") {
    const int64_t batch = 1;
    torch::manual_seed(531);
    torch::Tensor mask = torch::rand({heads, nb, nb}) < 0.3;
    mask.narrow(2, 0, 2).fill_(true);  // 32 shared keys: below kMinSharedKeys
    const torch::Tensor q_block = lay.block_of.unsqueeze(0).contiguous();
    const torch::Tensor q = Rand(532, {heads, n, d});
    const torch::Tensor k = Rand(533, {heads, n, d}), v = Rand(534, {heads, n, d});
    CHECK(CheckPlan(lay, mask, q_block, heads, q, k, v) == 0);
  }
  SECTION("partial query selection: blocks of uneven size, some without queries") {
    const int64_t batch = 2, nq = 150;
    torch::manual_seed(511);
    const torch::Tensor index = torch::stack(
        {std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort()),
         std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort())});
    const torch::Tensor q_block =
        lay.block_of.index_select(0, lay.position.index_select(0, index.reshape({-1})))
            .reshape({batch, nq});
    torch::Tensor mask = torch::rand({batch * heads, nb, nb}) < 0.4;
    for (int64_t r = 0; r < nb; ++r) mask.select(1, r).select(1, r).fill_(true);
    mask[1].narrow(0, 5, 2).fill_(true);  // two full rows in one g only
    const torch::Tensor q = Rand(512, {batch * heads, nq, d});
    const torch::Tensor k = Rand(513, {batch * heads, n, d}), v = Rand(514, {batch * heads, n, d});
    CHECK(CheckPlan(lay, mask, q_block, heads, q, k, v) > 0);
  }
  SECTION("identical rows: one shared span set, no parts") {
    const int64_t batch = 1;
    torch::manual_seed(521);
    torch::Tensor row = torch::rand({nb}) < 0.5;
    row.narrow(0, 0, 16).fill_(true);  // 256 keys at least: enough to group
    torch::Tensor mask = row.view({1, 1, nb}).expand({heads, nb, nb}).clone();
    const torch::Tensor q_block = lay.block_of.unsqueeze(0).contiguous();
    const torch::Tensor q = Rand(522, {heads, n, d});
    const torch::Tensor k = Rand(523, {heads, n, d}), v = Rand(524, {heads, n, d});
    CHECK(CheckPlan(lay, mask, q_block, heads, q, k, v) > 0);
    const SparsePlan plan = BuildSparsePlan(lay, mask, q_block, heads, d);
    for (const SparsePlan::Item& it : plan.items) CHECK(it.part_count == 0);
  }
}

TEST_CASE("CPU matmul routine: brgemm where libtorch has it, sgemm always", "[kernels]") {
  const MatmulGuard restore;
  // The default is brgemm exactly when this libtorch provides it.
  CHECK(GetCpuMatmul() == (CpuBrgemmAvailable() ? CpuMatmul::kBrgemm : CpuMatmul::kSgemm));
  SetCpuMatmul(CpuMatmul::kSgemm);
  CHECK(GetCpuMatmul() == CpuMatmul::kSgemm);
  CHECK(std::string(CpuMatmulName(CpuMatmul::kSgemm)) == "sgemm");
  CHECK(std::string(CpuMatmulName(CpuMatmul::kBrgemm)) == "brgemm");
  if (CpuBrgemmAvailable()) {
    SetCpuMatmul(CpuMatmul::kBrgemm);
    CHECK(GetCpuMatmul() == CpuMatmul::kBrgemm);
  } else {
    REQUIRE_THROWS_AS(SetCpuMatmul(CpuMatmul::kBrgemm), InputError);
    CHECK(GetCpuMatmul() == CpuMatmul::kSgemm);
  }
}

TEST_CASE("brgemm shapes per thread are bounded; further shapes run on sgemm with equal results",
          "[kernels]") {
  if (!CpuBrgemmAvailable()) {
    SUCCEED("this libtorch has no brgemm: every matmul runs on sgemm, nothing to bound");
    return;
  }
  const MatmulGuard restore;
  SetCpuMatmul(CpuMatmul::kBrgemm);
  // One intra-op thread: the items run on this thread, whose shape count the test can read.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const ModelGeometry m = SmallModel({4, 8, 16}, 6, TextPosition::kBack, 2, 32);
  const Layout lay = BuildLayout(m, TokenOrder{TokenOrderKind::kTiles, {1, 4, 4}}, 16);
  const int64_t n = m.tokens(), nb = lay.blocks(), heads = 2, d = 32;
  torch::manual_seed(541);
  // Random partial selections of random sizes: parts of many row counts, pieces of many lengths.
  for (int round = 0; round < 40; ++round) {
    const int64_t nq = 8 + torch::randint(n - 8, {1}).item<int64_t>();
    const torch::Tensor index = std::get<0>(torch::randperm(n).narrow(0, 0, nq).sort()).unsqueeze(0);
    const torch::Tensor q_block =
        lay.block_of.index_select(0, lay.position.index_select(0, index.reshape({-1})))
            .reshape({1, nq});
    torch::Tensor mask = torch::rand({heads, nb, nb}) < 0.2 + 0.02 * round;
    for (int64_t r = 0; r < nb; ++r) mask.select(1, r).select(1, r).fill_(true);
    const torch::Tensor q = Rand(542 + round, {heads, nq, d});
    const torch::Tensor k = Rand(600 + round, {heads, n, d}), v = Rand(700 + round, {heads, n, d});
    const SparsePlan plan = BuildSparsePlan(lay, mask, q_block, heads, d);
    const AttentionOutput got = RunSparsePlan(plan, q, k, v);
    for (int64_t g = 0; g < heads; ++g) {
      const torch::Tensor tm = mask[g].index_select(0, q_block[0]).index_select(1, lay.block_of);
      CHECK(MaxDiff(got.out[g], NaiveAttention(q[g], k[g], v[g], tm)) < kTol);
    }
    CHECK(CpuBrgemmShapesOfThisThread() <= kMaxBrgemmShapes);
  }
  // The bound was reached, so some of the products above ran on sgemm.
  CHECK(CpuBrgemmShapesOfThisThread() == kMaxBrgemmShapes);
  at::set_num_threads(threads);
}
