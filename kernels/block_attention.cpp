#include "kernels/block_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

namespace sparsetune {

namespace {

// Elements (floats) one chunk may materialise for its scores or gathered keys: big enough for
// large batched matmuls, small enough to stay in the last-level cache's neighbourhood.
constexpr int64_t kChunkElements = int64_t{8} << 20;

}  // namespace

AttentionOutput BlockSparseAttention(const Layout& l, const torch::Tensor& q,
                                     const torch::Tensor& q_block, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& mask,
                                     int64_t heads, int64_t masked_dense_below) {
  const int64_t g_count = q.size(0);
  const int64_t nq = q.size(1);
  const int64_t d = q.size(2);
  const int64_t nb = l.blocks();
  const int64_t bs = l.block_size;
  const int64_t batch = q_block.size(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);

  if (l.tokens <= masked_dense_below) {
    // Token bias [G, Nq, N] in layout key order: row = the query's block row of the mask.
    const torch::Tensor rows =
        mask.reshape({batch, heads, nb, nb})
            .gather(2, q_block.view({batch, 1, nq, 1}).expand({batch, heads, nq, nb}));
    const torch::Tensor allowed = rows.index_select(3, l.block_of);
    const torch::Tensor bias = torch::zeros(allowed.sizes(), q.options())
                                   .masked_fill_(allowed.logical_not(),
                                                 -std::numeric_limits<float>::infinity());
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(
        q.view({batch, heads, nq, d}), k.view({batch, heads, k.size(1), d}),
        v.view({batch, heads, k.size(1), d}), 0.0, false, bias, scale);
    return {std::get<0>(res).reshape({g_count, nq, d}),
            std::get<1>(res).reshape({g_count, nq}).to(torch::kFloat32)};
  }

  // Keys and values in padded block slots: [G*nb, bs, D]; pad slots read a zero row.
  // One row gather over the flattened [G*N, D] tensor (row copies; a gather along a middle
  // dimension measured several times slower).
  const int64_t n_keys = k.size(1);
  const torch::Tensor slot_row =
      torch::where(l.slot_valid.unsqueeze(0),
                   torch::arange(g_count, i64).unsqueeze(1) * n_keys + l.padded.unsqueeze(0),
                   torch::full({1, 1}, g_count * n_keys, i64))
          .reshape({-1});
  auto pad = [&](const torch::Tensor& x) {
    const torch::Tensor ext =
        torch::cat({x.reshape({g_count * n_keys, d}), torch::zeros({1, d}, x.options())});
    return ext.index_select(0, slot_row).reshape({g_count * nb, bs, d});
  };
  const torch::Tensor kp = pad(k);
  const torch::Tensor vp = pad(v);
  const torch::Tensor slot_valid = l.slot_valid.view({nb, bs});

  // Queries of each (batch, block), in q order, sorted by block.
  const torch::Tensor q_sorted = std::get<1>(q_block.sort(/*stable=*/true, 1, false));  // [B, Nq]
  const torch::Tensor q_count = torch::zeros({batch, nb}, i64).scatter_add_(
      1, q_block, torch::ones_like(q_block));
  const torch::Tensor q_off = q_count.cumsum(1) - q_count;
  const torch::Tensor k_count = mask.sum(-1).to(torch::kInt64).reshape({g_count * nb});

  // Groups (g, block) that hold queries, sorted by key-block count.
  const torch::Tensor gq_count =
      q_count.repeat_interleave(heads, 0).reshape({g_count * nb});
  const torch::Tensor active = (gq_count > 0).nonzero().squeeze(1);
  const torch::Tensor key_of = k_count.index_select(0, active) * (bs + 1) +
                               gq_count.index_select(0, active);
  const torch::Tensor groups = active.index_select(
      0, std::get<1>(key_of.sort(/*stable=*/true, 0, false)));
  const int64_t n_groups = groups.size(0);
  const torch::Tensor gk = k_count.index_select(0, groups).contiguous();
  const torch::Tensor gqn = gq_count.index_select(0, groups).contiguous();
  const int64_t* gk_p = gk.data_ptr<int64_t>();
  const int64_t* gq_p = gqn.data_ptr<int64_t>();

  const torch::Tensor q_ext = torch::cat({q.reshape({g_count * nq, d}), torch::zeros({1, d}, q.options())});
  torch::Tensor out = torch::zeros({g_count * nq + 1, d}, q.options());
  torch::Tensor lse = torch::zeros({g_count * nq + 1}, q.options().dtype(torch::kFloat32));
  const torch::Tensor mask_rows = mask.reshape({g_count * nb, nb}).to(torch::kUInt8);
  const torch::Tensor q_sorted_flat = q_sorted.reshape({batch * nq});
  const torch::Tensor q_off_flat = q_off.reshape({batch * nb});

  int64_t begin = 0;
  while (begin < n_groups && gk_p[begin] < nb) {
    // Grow the chunk while its key padding stays small (groups are sorted by key count) and its
    // gathered keys stay within budget.
    int64_t end = begin + 1, max_k = gk_p[begin], max_q = gq_p[begin];
    while (end < n_groups) {
      const int64_t mk = std::max(max_k, gk_p[end]);
      const int64_t mq = std::max(max_q, gq_p[end]);
      const int64_t rows = end - begin + 1;
      if (mk * 8 > gk_p[begin] * 9 || rows * mk * bs * std::max(mq, d) > kChunkElements) break;
      max_k = mk, max_q = mq, ++end;
    }
    const int64_t r = end - begin;
    const torch::Tensor gid = groups.narrow(0, begin, r);
    const torch::Tensor g = gid.div(nb, "floor");
    const torch::Tensor blk = gid.remainder(nb);
    const torch::Tensor b = g.div(heads, "floor");

    // Kept key blocks of each group, ascending, padded to max_k.
    const torch::Tensor rows_mask = mask_rows.index_select(0, gid);
    const torch::Tensor kblk =
        std::get<1>(rows_mask.sort(/*stable=*/true, 1, true)).narrow(1, 0, max_k);  // [r, K]
    const torch::Tensor kvalid =
        torch::arange(max_k, i64).unsqueeze(0) < gk.narrow(0, begin, r).unsqueeze(1);
    const torch::Tensor kflat = (g.unsqueeze(1) * nb + kblk).reshape({r * max_k});
    const torch::Tensor kc = kp.index_select(0, kflat).reshape({r, 1, max_k * bs, d});
    const torch::Tensor vc = vp.index_select(0, kflat).reshape({r, 1, max_k * bs, d});
    const torch::Tensor key_ok =
        (kvalid.unsqueeze(2) &
         slot_valid.index_select(0, kblk.reshape({r * max_k})).reshape({r, max_k, bs}))
            .reshape({r, 1, 1, max_k * bs});

    // Queries of each group, padded to max_q; pad rows read the zero row and write a dump row.
    const torch::Tensor t = torch::arange(max_q, i64).unsqueeze(0);
    const torch::Tensor qvalid = t < gq_count.index_select(0, gid).unsqueeze(1);
    const torch::Tensor off = q_off_flat.index_select(0, b * nb + blk).unsqueeze(1);
    const torch::Tensor src =
        q_sorted_flat
            .index_select(0, (b.unsqueeze(1) * nq + (off + t).clamp_max(nq - 1)).reshape({-1}))
            .reshape({r, max_q});
    const torch::Tensor qrow = torch::where(qvalid, g.unsqueeze(1) * nq + src,
                                            torch::full({1, 1}, g_count * nq, i64));
    const torch::Tensor qc = q_ext.index_select(0, qrow.reshape({-1})).reshape({r, 1, max_q, d});

    // libtorch's fused CPU flash kernel on the gathered tiles; padded key slots are masked with an
    // additive -inf (skipped when every slot of the chunk holds a kept key).
    std::optional<torch::Tensor> bias;
    if (!key_ok.all().item<bool>())
      bias = torch::zeros(key_ok.sizes(), q.options())
                 .masked_fill_(key_ok.logical_not(), -std::numeric_limits<float>::infinity())
                 .expand({r, 1, max_q, max_k * bs});
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(qc, kc, vc, 0.0, false, bias, scale);
    out.index_copy_(0, qrow.reshape({-1}), std::get<0>(res).reshape({r * max_q, d}));
    lse.index_copy_(0, qrow.reshape({-1}), std::get<1>(res).reshape({-1}).to(torch::kFloat32));
    begin = end;
  }
  if (begin < n_groups) {
    // Groups that keep every key block (text rows, sink rows, dense rows) need no gathered keys:
    // per batch·head, all their queries attend the unpadded k and v in one flash call.
    const torch::Tensor gid = std::get<0>(groups.narrow(0, begin, n_groups - begin).sort());
    const torch::Tensor g = gid.div(nb, "floor");
    const torch::Tensor blk = gid.remainder(nb);
    const torch::Tensor b = g.div(heads, "floor");
    const int64_t max_q = gq_count.index_select(0, gid).max().item<int64_t>();
    const torch::Tensor t = torch::arange(max_q, i64).unsqueeze(0);
    const torch::Tensor qvalid = t < gq_count.index_select(0, gid).unsqueeze(1);
    const torch::Tensor off = q_off_flat.index_select(0, b * nb + blk).unsqueeze(1);
    const torch::Tensor src =
        q_sorted_flat
            .index_select(0, (b.unsqueeze(1) * nq + (off + t).clamp_max(nq - 1)).reshape({-1}))
            .reshape({gid.size(0), max_q});
    const torch::Tensor qrow = g.unsqueeze(1) * nq + src;
    const torch::Tensor g_cpu = g.contiguous();
    const int64_t* gp = g_cpu.data_ptr<int64_t>();
    int64_t i = 0;
    while (i < gid.size(0)) {
      int64_t j = i;
      while (j < gid.size(0) && gp[j] == gp[i]) ++j;
      const torch::Tensor rows =
          qrow.narrow(0, i, j - i).masked_select(qvalid.narrow(0, i, j - i));
      const torch::Tensor qc = q_ext.index_select(0, rows).reshape({1, 1, rows.size(0), d});
      auto res = at::_scaled_dot_product_flash_attention_for_cpu(
          qc, k[gp[i]].unsqueeze(0).unsqueeze(0), v[gp[i]].unsqueeze(0).unsqueeze(0), 0.0, false,
          std::nullopt, scale);
      out.index_copy_(0, rows, std::get<0>(res).reshape({rows.size(0), d}));
      lse.index_copy_(0, rows, std::get<1>(res).reshape({-1}).to(torch::kFloat32));
      i = j;
    }
  }
  return {out.narrow(0, 0, g_count * nq).reshape({g_count, nq, d}),
          lse.narrow(0, 0, g_count * nq).reshape({g_count, nq})};
}

AttentionOutput DenseAttention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
  auto res = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v);
  return {std::get<0>(res), std::get<1>(res)};
}

}  // namespace sparsetune
