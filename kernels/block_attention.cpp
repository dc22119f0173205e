#include "kernels/block_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
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

int64_t SparsePlan::bytes() const {
  int64_t total = 0;
  auto add = [&](const torch::Tensor& t) {
    if (t.defined()) total += t.numel() * static_cast<int64_t>(t.element_size());
  };
  add(full_rows);
  for (const torch::Tensor& t : full_rows_per_g) add(t);
  for (const Chunk* c : {&dense}) add(c->k_rows), add(c->q_read), add(c->q_write);
  for (const Chunk& c : chunks) add(c.k_rows), add(c.q_read), add(c.q_write);
  return total;
}

namespace {

torch::Tensor ToIndex(const std::vector<int64_t>& v) {
  return torch::tensor(v, torch::kInt64);
}

// Fills a chunk's query rows: each group's rows padded to `queries` with reads of row 0 and
// writes to the dump row.
void AddQueries(const std::vector<int64_t>& rows, int64_t queries, int64_t dump,
                std::vector<int64_t>& read, std::vector<int64_t>& write) {
  for (int64_t r : rows) read.push_back(r), write.push_back(r);
  for (int64_t i = static_cast<int64_t>(rows.size()); i < queries; ++i)
    read.push_back(0), write.push_back(dump);
}

}  // namespace

SparsePlan BuildSparsePlan(const Layout& l, const torch::Tensor& mask, const torch::Tensor& q_block,
                           int64_t heads, int64_t head_dim) {
  const torch::Tensor mc = mask.to(torch::kCPU, torch::kBool).contiguous();
  const torch::Tensor qbc = q_block.to(torch::kCPU, torch::kInt64).contiguous();
  const bool* mp = mc.data_ptr<bool>();
  const int64_t* qbp = qbc.data_ptr<int64_t>();
  const int64_t g_count = mc.size(0), nb = l.blocks(), batch = qbc.size(0), nq = qbc.size(1);
  const int64_t n = l.tokens, dump = g_count * nq;
  SparsePlan p;
  p.g_count = g_count, p.nq = nq, p.n = n;

  // Query rows of each (batch row, block), ascending.
  std::vector<std::vector<int64_t>> rows_of(static_cast<size_t>(batch * nb));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < nq; ++i) rows_of[static_cast<size_t>(b * nb + qbp[b * nq + i])].push_back(i);
  auto kept = [&](int64_t g, int64_t r, int64_t c) { return mp[(g * nb + r) * nb + c]; };
  auto queries = [&](int64_t g, int64_t r) -> const std::vector<int64_t>& {
    return rows_of[static_cast<size_t>((g / heads) * nb + r)];
  };
  std::vector<char> full(static_cast<size_t>(g_count * nb), 0);
  std::vector<char> dense(static_cast<size_t>(nb), 1);  // kept by every non-full row with queries
  bool any_partial = false;
  for (int64_t g = 0; g < g_count; ++g)
    for (int64_t r = 0; r < nb; ++r) {
      if (queries(g, r).empty()) continue;
      int64_t key_tokens = 0;
      bool all = true;
      for (int64_t c = 0; c < nb; ++c) {
        if (kept(g, r, c)) key_tokens += l.block_len[static_cast<size_t>(c)];
        else all = false;
      }
      p.pairs += key_tokens * static_cast<int64_t>(queries(g, r).size());
      full[static_cast<size_t>(g * nb + r)] = all;
      if (all) continue;
      any_partial = true;
      for (int64_t c = 0; c < nb; ++c)
        if (!kept(g, r, c)) dense[static_cast<size_t>(c)] = 0;
    }
  if (!any_partial) std::fill(dense.begin(), dense.end(), 0);

  // Full rows per g.
  std::vector<std::vector<int64_t>> full_rows(static_cast<size_t>(g_count));
  for (int64_t g = 0; g < g_count; ++g)
    for (int64_t r = 0; r < nb; ++r)
      if (full[static_cast<size_t>(g * nb + r)])
        for (int64_t i : queries(g, r)) full_rows[static_cast<size_t>(g)].push_back(g * nq + i);
  bool uniform = true;
  for (const auto& f : full_rows) uniform = uniform && f.size() == full_rows[0].size();
  if (uniform) {
    p.full_count = static_cast<int64_t>(full_rows[0].size());
    std::vector<int64_t> all;
    for (const auto& f : full_rows) all.insert(all.end(), f.begin(), f.end());
    if (p.full_count > 0) p.full_rows = ToIndex(all);
  } else {
    p.full_count = -1;
    for (const auto& f : full_rows) p.full_rows_per_g.push_back(f.empty() ? torch::Tensor() : ToIndex(f));
  }

  // Dense columns: one call over all non-full rows of every g.
  std::vector<int64_t> dense_pos;
  for (int64_t c = 0; c < nb; ++c)
    if (dense[static_cast<size_t>(c)])
      for (int64_t t = 0; t < l.block_len[static_cast<size_t>(c)]; ++t)
        dense_pos.push_back(l.block_begin[static_cast<size_t>(c)] + t);
  if (!dense_pos.empty()) {
    std::vector<std::vector<int64_t>> rows(static_cast<size_t>(g_count));
    size_t max_q = 0;
    for (int64_t g = 0; g < g_count; ++g) {
      for (int64_t r = 0; r < nb; ++r)
        if (!full[static_cast<size_t>(g * nb + r)])
          for (int64_t i : queries(g, r)) rows[static_cast<size_t>(g)].push_back(g * nq + i);
      max_q = std::max(max_q, rows[static_cast<size_t>(g)].size());
    }
    SparsePlan::Chunk& c = p.dense;
    c.groups = g_count;
    c.keys = static_cast<int64_t>(dense_pos.size());
    c.queries = static_cast<int64_t>(max_q);
    std::vector<int64_t> k_rows, read, write;
    for (int64_t g = 0; g < g_count; ++g) {
      for (int64_t pos : dense_pos) k_rows.push_back(g * n + pos);
      AddQueries(rows[static_cast<size_t>(g)], c.queries, dump, read, write);
    }
    c.k_rows = ToIndex(k_rows), c.q_read = ToIndex(read), c.q_write = ToIndex(write);
  }

  // Sparse part: groups bucketed by their remaining key-token count.
  struct Group {
    int64_t g, r, keys;
  };
  std::map<int64_t, std::vector<Group>> buckets;
  for (int64_t g = 0; g < g_count; ++g)
    for (int64_t r = 0; r < nb; ++r) {
      if (queries(g, r).empty() || full[static_cast<size_t>(g * nb + r)]) continue;
      int64_t keys = 0;
      for (int64_t c = 0; c < nb; ++c)
        if (kept(g, r, c) && !dense[static_cast<size_t>(c)]) keys += l.block_len[static_cast<size_t>(c)];
      if (keys > 0) buckets[keys].push_back({g, r, keys});
    }
  for (const auto& [keys, groups] : buckets) {
    const int64_t per_chunk = std::max<int64_t>(
        1, kChunkElements / (keys * std::max<int64_t>(head_dim, l.block_size)));
    for (size_t begin = 0; begin < groups.size(); begin += static_cast<size_t>(per_chunk)) {
      const size_t end = std::min(groups.size(), begin + static_cast<size_t>(per_chunk));
      SparsePlan::Chunk c;
      c.groups = static_cast<int64_t>(end - begin);
      c.keys = keys;
      for (size_t i = begin; i < end; ++i)
        c.queries = std::max<int64_t>(c.queries, static_cast<int64_t>(queries(groups[i].g, groups[i].r).size()));
      std::vector<int64_t> k_rows, read, write;
      for (size_t i = begin; i < end; ++i) {
        const Group& gr = groups[i];
        for (int64_t cb = 0; cb < nb; ++cb)
          if (kept(gr.g, gr.r, cb) && !dense[static_cast<size_t>(cb)])
            for (int64_t t = 0; t < l.block_len[static_cast<size_t>(cb)]; ++t)
              k_rows.push_back(gr.g * n + l.block_begin[static_cast<size_t>(cb)] + t);
        std::vector<int64_t> rows;
        for (int64_t qi : queries(gr.g, gr.r)) rows.push_back(gr.g * nq + qi);
        AddQueries(rows, c.queries, dump, read, write);
      }
      c.k_rows = ToIndex(k_rows), c.q_read = ToIndex(read), c.q_write = ToIndex(write);
      p.chunks.push_back(std::move(c));
    }
  }
  return p;
}

AttentionOutput RunSparsePlan(const SparsePlan& p, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v) {
  const int64_t d = q.size(2), g_count = p.g_count, nq = p.nq, n = p.n;
  const torch::Tensor qf = q.reshape({g_count * nq, d});
  const torch::Tensor kf = k.reshape({g_count * n, d});
  const torch::Tensor vf = v.reshape({g_count * n, d});
  const auto f32 = q.options().dtype(torch::kFloat32);
  auto run = [&](const SparsePlan::Chunk& c, torch::Tensor& out, torch::Tensor& lse) {
    const torch::Tensor kc = kf.index_select(0, c.k_rows).view({c.groups, 1, c.keys, d});
    const torch::Tensor vc = vf.index_select(0, c.k_rows).view({c.groups, 1, c.keys, d});
    const torch::Tensor qc = qf.index_select(0, c.q_read).view({c.groups, 1, c.queries, d});
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(qc, kc, vc);
    out.index_copy_(0, c.q_write, std::get<0>(res).view({c.groups * c.queries, d}));
    lse.index_copy_(0, c.q_write, std::get<1>(res).reshape({-1}).to(torch::kFloat32));
  };
  torch::Tensor out = torch::empty({g_count * nq + 1, d}, q.options());
  torch::Tensor lse = torch::empty({g_count * nq + 1}, f32);
  if (p.dense.keys > 0 && p.dense.queries > 0) {
    run(p.dense, out, lse);
    torch::Tensor out2 = torch::zeros_like(out);
    torch::Tensor lse2 = torch::full({g_count * nq + 1}, -std::numeric_limits<float>::infinity(), f32);
    for (const SparsePlan::Chunk& c : p.chunks) run(c, out2, lse2);
    if (!p.chunks.empty()) {
      // Merge the two softmax parts of each row: weights exp(lse_i - lse), lse = logaddexp.
      const torch::Tensor both = torch::logaddexp(lse, lse2);
      out.mul_((lse - both).exp_().unsqueeze(1)).add_(out2.mul_((lse2 - both).exp_().unsqueeze(1)));
      lse = both;
    }
  } else {
    for (const SparsePlan::Chunk& c : p.chunks) run(c, out, lse);
  }
  const torch::Tensor k4 = k.view({g_count, 1, n, d});
  const torch::Tensor v4 = v.view({g_count, 1, n, d});
  if (p.full_count > 0) {
    const torch::Tensor qc = qf.index_select(0, p.full_rows).view({g_count, 1, p.full_count, d});
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(qc, k4, v4);
    out.index_copy_(0, p.full_rows, std::get<0>(res).view({g_count * p.full_count, d}));
    lse.index_copy_(0, p.full_rows, std::get<1>(res).reshape({-1}).to(torch::kFloat32));
  } else if (p.full_count < 0) {
    for (int64_t g = 0; g < g_count; ++g) {
      const torch::Tensor& rows = p.full_rows_per_g[static_cast<size_t>(g)];
      if (!rows.defined()) continue;
      const torch::Tensor qc = qf.index_select(0, rows).view({1, 1, rows.size(0), d});
      auto res = at::_scaled_dot_product_flash_attention_for_cpu(qc, k4[g].unsqueeze(0),
                                                                 v4[g].unsqueeze(0));
      out.index_copy_(0, rows, std::get<0>(res).view({rows.size(0), d}));
      lse.index_copy_(0, rows, std::get<1>(res).reshape({-1}).to(torch::kFloat32));
    }
  }
  return {out.narrow(0, 0, g_count * nq).view({g_count, nq, d}),
          lse.narrow(0, 0, g_count * nq).view({g_count, nq})};
}

namespace {

// Rows of queries per explicit chunk so that one [rows, N] float32 score tile stays within
// kChunkElements.
int64_t RowsPerChunk(int64_t n_keys) {
  return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, n_keys));
}

}  // namespace

AttentionOutput MaskedAttention(const Layout& l, const torch::Tensor& q,
                                const torch::Tensor& q_block, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& mask,
                                int64_t heads) {
  const int64_t g_count = q.size(0), nq = q.size(1), d = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const torch::Tensor block_of = l.block_of.to(q.device());  // layout position -> block
  torch::Tensor out = torch::empty_like(q);
  torch::Tensor lse = torch::empty({g_count, nq}, q.options().dtype(torch::kFloat32));
  const int64_t step = RowsPerChunk(k.size(1));
  for (int64_t g = 0; g < g_count; ++g) {
    const int64_t b = g / heads;
    const torch::Tensor kf = k[g].to(torch::kFloat32);
    const torch::Tensor vf = v[g].to(torch::kFloat32);
    for (int64_t r0 = 0; r0 < nq; r0 += step) {
      const int64_t rows = std::min(step, nq - r0);
      const torch::Tensor qb = q_block[b].narrow(0, r0, rows);
      // Allowed keys of each query: its block's mask row, expanded to key tokens.
      const torch::Tensor allowed = mask[g].index_select(0, qb).index_select(1, block_of);
      torch::Tensor s = torch::matmul(q[g].narrow(0, r0, rows).to(torch::kFloat32), kf.t())
                            .mul_(scale)
                            .masked_fill_(allowed.logical_not(),
                                          -std::numeric_limits<float>::infinity());
      const torch::Tensor m = s.logsumexp(1, true);
      out[g].narrow(0, r0, rows).copy_(torch::matmul(s.sub_(m).exp_(), vf));
      lse[g].narrow(0, r0, rows).copy_(m.squeeze(1));
    }
  }
  return {out, lse};
}

AttentionOutput DenseAttention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, bool need_lse) {
  if (q.device().is_cpu()) {
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v);
    return {std::get<0>(res), std::get<1>(res).to(torch::kFloat32)};
  }
  AttentionOutput res;
  const bool half = q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf;
  if (need_lse && half && q.size(3) <= 256 && q.size(3) % 8 == 0) {
    // The flash backend returns the log-sum-exp it computes anyway (float32 [B, H, N]), so
    // Astraea's token scores cost nothing extra; the explicit path below is ~6x slower than
    // dense attention at gpu-small's size (measured on an H200).
    auto flash = at::_scaled_dot_product_flash_attention(q.contiguous(), k.contiguous(),
                                                         v.contiguous());
    res.out = std::get<0>(flash);
    res.lse = std::get<1>(flash).to(torch::kFloat32);
    return res;
  }
  res.out = torch::scaled_dot_product_attention(q, k, v);
  if (need_lse) {
    const int64_t nq = q.size(2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    res.lse = torch::empty({q.size(0), q.size(1), nq}, q.options().dtype(torch::kFloat32));
    const torch::Tensor kt = k.to(torch::kFloat32).transpose(2, 3);
    const int64_t step = std::max<int64_t>(1, RowsPerChunk(k.size(2)) / (q.size(0) * q.size(1)));
    for (int64_t r0 = 0; r0 < nq; r0 += step) {
      const int64_t rows = std::min(step, nq - r0);
      res.lse.narrow(2, r0, rows)
          .copy_(torch::matmul(q.narrow(2, r0, rows).to(torch::kFloat32), kt)
                     .mul_(scale)
                     .logsumexp(3));
    }
  }
  return res;
}

}  // namespace sparsetune
