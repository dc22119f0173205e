#include "kernels/block_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <unordered_set>

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include "core/error.h"

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
  return static_cast<int64_t>(items.size() * sizeof(Item) + q_rows.size() * sizeof(int64_t) +
                              parts.size() * sizeof(Part) + pieces.size() * sizeof(Piece));
}

namespace {

// Appends the key pieces of the blocks `keep` marks to `pieces` and returns their key count.
// Runs of kept blocks whose layout ranges touch are one span (blocks are laid out in order, so a
// run of adjacent kept blocks is contiguous; text blocks follow the video), cut at kKeyChunk.
int64_t AppendPieces(const Layout& l, const std::vector<char>& keep,
                     std::vector<SparsePlan::Piece>& pieces) {
  const int64_t nb = static_cast<int64_t>(keep.size());
  int64_t keys = 0, c = 0;
  while (c < nb) {
    if (!keep[static_cast<size_t>(c)]) {
      ++c;
      continue;
    }
    const int64_t begin = l.block_begin[static_cast<size_t>(c)];
    int64_t end = begin;
    while (c < nb && keep[static_cast<size_t>(c)] && l.block_begin[static_cast<size_t>(c)] == end)
      end += l.block_len[static_cast<size_t>(c)], ++c;
    for (int64_t s = begin; s < end; s += SparsePlan::kKeyChunk)
      pieces.push_back({s, std::min(SparsePlan::kKeyChunk, end - s)});
    keys += end - begin;
  }
  return keys;
}

}  // namespace

SparsePlan BuildSparsePlan(const Layout& l, const torch::Tensor& mask, const torch::Tensor& q_block,
                           int64_t heads, int64_t head_dim) {
  const torch::Tensor mc = mask.to(torch::kCPU, torch::kBool).contiguous();
  const torch::Tensor qbc = q_block.to(torch::kCPU, torch::kInt64).contiguous();
  const bool* mp = mc.data_ptr<bool>();
  const int64_t* qbp = qbc.data_ptr<int64_t>();
  const int64_t g_count = mc.size(0), nb = l.blocks(), batch = qbc.size(0), nq = qbc.size(1);
  SparsePlan p;
  p.g_count = g_count, p.nq = nq, p.n = l.tokens, p.d = head_dim;

  // Query rows of each (batch row, block), ascending.
  std::vector<std::vector<int64_t>> rows_of(static_cast<size_t>(batch * nb));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < nq; ++i)
      rows_of[static_cast<size_t>(b * nb + qbp[b * nq + i])].push_back(i);
  std::vector<char> shared(static_cast<size_t>(nb)), rest(static_cast<size_t>(nb));
  for (int64_t g = 0; g < g_count; ++g) {
    const std::vector<int64_t>* rows = &rows_of[static_cast<size_t>((g / heads) * nb)];
    const bool* mg = mp + g * nb * nb;
    auto full = [&](int64_t r) {
      return std::all_of(mg + r * nb, mg + (r + 1) * nb, [](bool x) { return x; });
    };
    int64_t r = 0;
    while (r < nb) {
      if (rows[r].empty()) {
        ++r;
        continue;
      }
      // A group: consecutive query blocks up to kGroupQueries rows (at least one block) while
      // the key blocks all of them keep hold at least kMinSharedKeys tokens; rows that keep every
      // block (sink, text) are not mixed with sparse rows, so a sink group's shared span is every
      // key. Below that, splitting a block's keys into shared and own spans costs more matmul
      // calls than the larger shared matmul saves (measured at the tiny model's block 32).
      const bool group_full = full(r);
      std::vector<int64_t> members = {r};
      int64_t count = static_cast<int64_t>(rows[r].size());
      for (int64_t c = 0; c < nb; ++c) shared[static_cast<size_t>(c)] = mg[r * nb + c];
      int64_t e = r + 1;
      for (; e < nb; ++e) {
        const int64_t c = static_cast<int64_t>(rows[e].size());
        if (c == 0) continue;
        if (count + c > SparsePlan::kGroupQueries || full(e) != group_full) break;
        int64_t keys = 0;
        for (int64_t x = 0; x < nb; ++x)
          if (shared[static_cast<size_t>(x)] && mg[e * nb + x])
            keys += l.block_len[static_cast<size_t>(x)];
        if (keys < SparsePlan::kMinSharedKeys) break;
        for (int64_t x = 0; x < nb; ++x)
          shared[static_cast<size_t>(x)] = shared[static_cast<size_t>(x)] && mg[e * nb + x];
        members.push_back(e);
        count += c;
      }
      SparsePlan::Item it;
      it.g = g;
      it.q_begin = static_cast<int64_t>(p.q_rows.size());
      it.q_count = count;
      it.piece_begin = static_cast<int64_t>(p.pieces.size());
      it.keys = AppendPieces(l, shared, p.pieces);
      it.piece_count = static_cast<int64_t>(p.pieces.size()) - it.piece_begin;
      it.part_begin = static_cast<int64_t>(p.parts.size());
      it.pairs = it.keys * count;
      int64_t offset = 0;
      for (int64_t x : members) {
        const std::vector<int64_t>& xr = rows[x];
        p.q_rows.insert(p.q_rows.end(), xr.begin(), xr.end());
        for (int64_t c = 0; c < nb; ++c)
          rest[static_cast<size_t>(c)] = mg[x * nb + c] && !shared[static_cast<size_t>(c)];
        SparsePlan::Part part;
        part.q_offset = offset;
        part.q_count = static_cast<int64_t>(xr.size());
        part.piece_begin = static_cast<int64_t>(p.pieces.size());
        part.keys = AppendPieces(l, rest, p.pieces);
        part.piece_count = static_cast<int64_t>(p.pieces.size()) - part.piece_begin;
        offset += part.q_count;
        if (part.piece_count == 0) continue;
        it.pairs += part.keys * part.q_count;
        p.parts.push_back(part);
      }
      it.part_count = static_cast<int64_t>(p.parts.size()) - it.part_begin;
      p.pairs += it.pairs;
      p.max_queries = std::max(p.max_queries, it.q_count);
      p.items.push_back(it);
      r = e;
    }
  }
  std::stable_sort(p.items.begin(), p.items.end(),
                   [](const SparsePlan::Item& a, const SparsePlan::Item& b) {
                     return a.pairs > b.pairs;
                   });
  return p;
}

namespace {

// MKL's thread count for the calling thread (C interface; weak: absent with another BLAS). The
// item threads run their matmuls single-threaded: left alone, MKL opened its own threads inside
// libtorch's parallel region and 2-thread calls ran 10-30x slower than 1-thread ones (measured).
// Still needed with the brgemm path: it falls back to MKL's sgemm on CPUs without AVX2.
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

// The BLAS libtorch's CPU build links (MKL on x86-64, OpenBLAS elsewhere) exports the Fortran
// sgemm; libtorch's own CPU flash kernel reaches the same routine through at::native::cpublas.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

// Row-major C[m x n] = alpha * A[m x k] · B[k x n] + beta * C (column-major: Cᵀ = Bᵀ · Aᵀ).
void GemmAB(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  sgemm_("N", "N", &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
}

// 8 floats / int32s as GCC/Clang vector extensions: the AVX2 clone below keeps one in a ymm
// register, the baseline clone in two xmm registers (the compilers did not vectorise the scalar
// loops on their own).
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

// The helpers pass vectors by value; they are inlined into SoftmaxStep's clones, so the ABI
// difference GCC warns about (a ymm value without AVX enabled) never crosses a real call. GCC
// reports it at the end of the file, hence no matching pop.
#pragma GCC diagnostic ignored "-Wpsabi"

inline V8 Splat(float x) { return V8{x, x, x, x, x, x, x, x}; }
inline I8 Bits(V8 x) {
  I8 r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline V8 FromBits(I8 x) {
  V8 r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline V8 Load(const float* p) {
  V8 r;
  std::memcpy(&r, p, sizeof r);
  return r;
}

// exp(x) for x <= 0, 8 lanes at a time: x = n·ln2 + f with |f| <= ln2/2, exp(f) by its degree-6
// Taylor polynomial (relative error < 2e-7), 2^n added to the exponent bits. Inputs below -80
// give exp(-80) ~ 2e-35 instead of less: negligible next to the row maximum's exp(0) = 1 that
// every softmax sum holds.
inline V8 ExpNonPositive(V8 x) {
  const V8 lo = Splat(-80.0f);
  x = x < lo ? lo : x;
  const V8 shifter = Splat(12582912.0f);  // 1.5·2^23: adding it rounds to an integer in the mantissa
  const V8 t = x * Splat(1.44269504088896341f) + shifter;
  const V8 fn = t - shifter;
  const I8 n = Bits(t) - 0x4B400000;
  const V8 f = (x - fn * Splat(0.693145751953125f)) - fn * Splat(1.428606765330187e-06f);
  V8 e = Splat(1.0f / 720.0f);
  e = e * f + Splat(1.0f / 120.0f);
  e = e * f + Splat(1.0f / 24.0f);
  e = e * f + Splat(1.0f / 6.0f);
  e = e * f + Splat(0.5f);
  e = e * f + Splat(1.0f);
  e = e * f + Splat(1.0f);
  return FromBits(Bits(e) + (n << 23));
}

#if defined(__x86_64__) && defined(__GNUC__)
// AVX2/FMA and a baseline clone, picked at load time: the exp of every score is a large share of
// attention's time, 8 lanes wide with AVX2.
#define SPARSETUNE_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SPARSETUNE_VECTOR_CLONES
#endif

// Online-softmax step over one score tile s [rows x cols] (leading dimension ld, scaled logits):
// per row, the new running max m, the tile's exp(s - m) written over s, the running sum l and the
// accumulator row acc[i, 0:d] rescaled by exp(m_old - m_new).
SPARSETUNE_VECTOR_CLONES
void SoftmaxStep(float* s, int64_t ld, int64_t rows, int64_t cols, float* m, float* l, float* acc,
                 int64_t d) {
  const int64_t vec_cols = cols / 8 * 8;
  for (int64_t i = 0; i < rows; ++i) {
    float* r = s + i * ld;
    V8 vmax = Splat(-std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < vec_cols; j += 8) {
      const V8 x = Load(r + j);
      vmax = vmax > x ? vmax : x;
    }
    float mx = m[i];
    for (int t = 0; t < 8; ++t) mx = mx > vmax[t] ? mx : vmax[t];
    for (int64_t j = vec_cols; j < cols; ++j) mx = mx > r[j] ? mx : r[j];
    const V8 vmx = Splat(mx);
    V8 vsum = Splat(0.0f);
    for (int64_t j = 0; j < vec_cols; j += 8) {
      const V8 e = ExpNonPositive(Load(r + j) - vmx);
      std::memcpy(r + j, &e, sizeof e);
      vsum += e;
    }
    float sum = 0.0f;
    for (int t = 0; t < 8; ++t) sum += vsum[t];
    for (int64_t j = vec_cols; j < cols; ++j) {
      const float e = std::exp(r[j] - mx);
      r[j] = e;
      sum += e;
    }
    if (mx != m[i]) {
      const float alpha = std::exp(m[i] - mx);  // 0 on the first tile (m = -inf)
      float* a = acc + i * d;
      for (int64_t c = 0; c < d; ++c) a[c] *= alpha;
      l[i] *= alpha;
      m[i] = mx;
    }
    l[i] += sum;
  }
}

#if defined(CPUBLAS_BRGEMM_F32F32F32)
constexpr bool kHaveBrgemm = true;
#else
constexpr bool kHaveBrgemm = false;
#endif
std::atomic<CpuMatmul> g_cpu_matmul{kHaveBrgemm ? CpuMatmul::kBrgemm : CpuMatmul::kSgemm};

// One row-major matmul C[m x n] (ldc) = A[m x k] (lda) · B[k x n] (ldb), added to C when
// `accumulate`. With libtorch's oneDNN batch-reduce GEMM micro-kernel (at::native::cpublas::brgemm,
// libtorch >= 2.6; JIT-generated per shape and cached per thread) the operands are read in place:
// no per-call packing of A or B, which cost MKL's sgemm 19 % of the sparse items' time (perf,
// docs/runtime.md) and made 64-row products ~17 % dearer per pair than this kernel (measured
// standalone, 64 x 512 x 64 score and value products). Where oneDNN's f32 kernel does not run (no
// AVX2) libtorch's brgemm itself falls back to sgemm.
//
// libtorch keeps every brgemm shape it generated (JIT code plus a scratchpad, ~21 KB measured) in a
// thread-local cache it never evicts, and partial query selections give parts of any row count:
// the default job grew its peak memory from 557 to 724 MB that way. So each thread sends at most
// kMaxBrgemmShapes distinct shapes to brgemm (the first ones it meets: a full selection's few
// block shapes) and runs any further shape on sgemm.
struct GemmShape {
  int64_t m, n, k, lda, ldb, ldc;
  bool accumulate;
  bool operator==(const GemmShape& o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           accumulate == o.accumulate;
  }
};
struct GemmShapeHash {
  size_t operator()(const GemmShape& s) const {
    size_t h = static_cast<size_t>(s.accumulate);
    for (int64_t x : {s.m, s.n, s.k, s.lda, s.ldb, s.ldc})
      h = h * 1000003u ^ std::hash<int64_t>()(x);
    return h;
  }
};
std::unordered_set<GemmShape, GemmShapeHash>& BrgemmShapes() {
  thread_local std::unordered_set<GemmShape, GemmShapeHash> shapes;
  return shapes;
}

inline void MatMul(CpuMatmul how, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
#if defined(CPUBLAS_BRGEMM_F32F32F32)
  if (how == CpuMatmul::kBrgemm) {
    auto& shapes = BrgemmShapes();
    const GemmShape shape{m, n, k, lda, ldb, ldc, accumulate};
    bool known = shapes.count(shape) > 0;
    if (!known && static_cast<int64_t>(shapes.size()) < kMaxBrgemmShapes) {
      shapes.insert(shape);
      known = true;
    }
    if (known) {
      at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, a, b, c, /*is_vnni=*/false);
      return;
    }
  }
#endif
  GemmAB(m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
}

// Pieces shorter than this are copied into a contiguous key/value tile and share one matmul pair:
// a matmul on a 32x32 block costs about as much in call overhead as in arithmetic (measured at
// the tiny model's block 32), while a 64-key piece is cheaper in place than copied.
constexpr int64_t kInPlaceKeys = 64;

// One work item: its queries gathered (and pre-scaled by 1/sqrt(d)) into a tile, then the shared
// pieces for all its rows and each part's pieces for the part's rows. Per score tile of at most
// kKeyChunk keys: S = Q·Kᵀ, the online softmax step and acc += P·V. Score columns hold first the
// short pieces (copied side by side into kv tiles, one matmul pair for all of them), then each long
// piece (one matmul pair each, straight on the transposed keys and on v).
struct ItemScratch {
  CpuMatmul how;
  std::vector<float> q, s, acc, m, l, kt, v;
  ItemScratch(CpuMatmul how_, int64_t max_q, int64_t d)
      : how(how_),
        q(static_cast<size_t>(max_q * d)),
        s(static_cast<size_t>(max_q * SparsePlan::kKeyChunk)),
        acc(static_cast<size_t>(max_q * d)), m(static_cast<size_t>(max_q)),
        l(static_cast<size_t>(max_q)), kt(static_cast<size_t>(SparsePlan::kKeyChunk * d)),
        v(static_cast<size_t>(SparsePlan::kKeyChunk * d)) {}
};

// Attends rows [r0, r0 + mq) of the item's query tile to `count` pieces of the g's layout-ordered
// keys and values (ktg: the keys transposed, [d, n]; vg: [n, d]), updating those rows' running
// max, sum and accumulator.
void RunPieces(const SparsePlan::Piece* pc, int64_t count, int64_t r0, int64_t mq, int64_t d,
               int64_t n, const float* ktg, const float* vg, ItemScratch& w) {
  const int64_t ld = SparsePlan::kKeyChunk;
  const float* qt = w.q.data() + r0 * d;
  float* acc = w.acc.data() + r0 * d;
  int64_t a = 0;
  while (a < count) {
    int64_t b = a, cols = 0, copied = 0;
    while (b < count && cols + pc[b].len <= ld) {
      if (pc[b].len < kInPlaceKeys) {
        for (int64_t c = 0; c < d; ++c)
          std::memcpy(&w.kt[c * ld + copied], ktg + c * n + pc[b].begin,
                      sizeof(float) * pc[b].len);
        std::memcpy(&w.v[copied * d], vg + pc[b].begin * d, sizeof(float) * pc[b].len * d);
        copied += pc[b].len;
      }
      cols += pc[b].len, ++b;
    }
    if (copied > 0) MatMul(w.how, mq, copied, d, qt, d, w.kt.data(), ld, w.s.data(), ld, false);
    for (int64_t x = a, c0 = copied; x < b; ++x) {
      if (pc[x].len < kInPlaceKeys) continue;
      MatMul(w.how, mq, pc[x].len, d, qt, d, ktg + pc[x].begin, n, w.s.data() + c0, ld, false);
      c0 += pc[x].len;
    }
    SoftmaxStep(w.s.data(), ld, mq, cols, w.m.data() + r0, w.l.data() + r0, acc, d);
    if (copied > 0) MatMul(w.how, mq, d, copied, w.s.data(), ld, w.v.data(), d, acc, d, true);
    for (int64_t x = a, c0 = copied; x < b; ++x) {
      if (pc[x].len < kInPlaceKeys) continue;
      MatMul(w.how, mq, d, pc[x].len, w.s.data() + c0, ld, vg + pc[x].begin * d, d, acc, d, true);
      c0 += pc[x].len;
    }
    a = b;
  }
}

void RunItem(const SparsePlan& p, const SparsePlan::Item& it, const float* q, const float* kt,
             const float* v, float scale, ItemScratch& w, float* out, float* lse) {
  const int64_t d = p.d, mq = it.q_count;
  const float* qg = q + it.g * p.nq * d;
  const float* ktg = kt + it.g * p.n * d;
  const float* vg = v + it.g * p.n * d;
  const int64_t* rows = p.q_rows.data() + it.q_begin;
  for (int64_t i = 0; i < mq; ++i) {
    const float* src = qg + rows[i] * d;
    float* dst = &w.q[i * d];
    for (int64_t c = 0; c < d; ++c) dst[c] = src[c] * scale;
  }
  std::fill(w.acc.begin(), w.acc.begin() + mq * d, 0.0f);
  std::fill(w.m.begin(), w.m.begin() + mq, -std::numeric_limits<float>::infinity());
  std::fill(w.l.begin(), w.l.begin() + mq, 0.0f);
  RunPieces(p.pieces.data() + it.piece_begin, it.piece_count, 0, mq, d, p.n, ktg, vg, w);
  for (int64_t x = 0; x < it.part_count; ++x) {
    const SparsePlan::Part& part = p.parts[static_cast<size_t>(it.part_begin + x)];
    RunPieces(p.pieces.data() + part.piece_begin, part.piece_count, part.q_offset, part.q_count,
              d, p.n, ktg, vg, w);
  }
  float* og = out + it.g * p.nq * d;
  float* lg = lse + it.g * p.nq;
  for (int64_t i = 0; i < mq; ++i) {
    const float inv = 1.0f / w.l[i];
    float* o = og + rows[i] * d;
    const float* s = &w.acc[i * d];
    for (int64_t c = 0; c < d; ++c) o[c] = s[c] * inv;
    lg[rows[i]] = w.m[i] + std::log(w.l[i]);
  }
}

}  // namespace

bool CpuBrgemmAvailable() { return kHaveBrgemm; }

int64_t CpuBrgemmShapesOfThisThread() { return static_cast<int64_t>(BrgemmShapes().size()); }

CpuMatmul GetCpuMatmul() { return g_cpu_matmul.load(std::memory_order_relaxed); }

void SetCpuMatmul(CpuMatmul matmul) {
  if (matmul == CpuMatmul::kBrgemm && !kHaveBrgemm)
    throw InputError(
        "CPU matmul 'brgemm': this libtorch has no float32 brgemm API (libtorch >= 2.6 has it); "
        "use 'sgemm'");
  g_cpu_matmul.store(matmul, std::memory_order_relaxed);
}

const char* CpuMatmulName(CpuMatmul matmul) {
  return matmul == CpuMatmul::kBrgemm ? "brgemm" : "sgemm";
}

AttentionOutput RunSparsePlan(const SparsePlan& p, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v) {
  const int64_t d = q.size(2);
  if (q.scalar_type() != torch::kFloat32 || !q.device().is_cpu() || d != p.d ||
      q.size(0) != p.g_count || q.size(1) != p.nq || k.size(1) != p.n)
    throw ShapeError("RunSparsePlan: q/k/v do not match the plan (CPU float32 [" +
                     std::to_string(p.g_count) + ", " + std::to_string(p.nq) + "/" +
                     std::to_string(p.n) + ", " + std::to_string(p.d) + "])");
  // Keys transposed once per call ([G, d, n]): every score product then reads a key piece as
  // columns of a row-major matrix, the layout the micro-kernel takes without packing.
  const torch::Tensor qc = q.contiguous(), vc = v.contiguous();
  const torch::Tensor kt = k.transpose(1, 2).contiguous();
  torch::Tensor out = torch::empty({p.g_count, p.nq, d}, q.options());
  torch::Tensor lse = torch::empty({p.g_count, p.nq}, q.options());
  const float* qp = qc.data_ptr<float>();
  const float* kp = kt.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t n_items = static_cast<int64_t>(p.items.size());
  const CpuMatmul how = g_cpu_matmul.load(std::memory_order_relaxed);
  // Items differ in cost (sink rows attend every key), so each thread pulls the next item rather
  // than taking a fixed share.
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_items));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    const int previous = MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0;
    ItemScratch w(how, p.max_queries, d);
    for (int64_t t = begin; t < end; ++t)
      for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1))
        RunItem(p, p.items[static_cast<size_t>(i)], qp, kp, vp, scale, w, op, lp);
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous);
  });
  return {out, lse};
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
    // cuDNN's and the flash backend's kernels return the log-sum-exp they compute anyway, so
    // Astraea's token scores cost nothing extra (the explicit path below is ~6x slower than dense
    // attention at gpu-small's size, measured on an H200). cuDNN first: it is the backend plain
    // SDPA picks on Hopper, and flash ran at ~0.6x its rate there. A build or card whose cuDNN
    // rejects the call throws c10::Error once; every later call goes straight to flash.
    static std::atomic<bool> cudnn_failed{false};
    const torch::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    if (!cudnn_failed.load(std::memory_order_relaxed)) {
      try {
        auto r = at::_scaled_dot_product_cudnn_attention(qc, kc, vc, std::nullopt,
                                                         /*compute_log_sumexp=*/true, 0.0,
                                                         /*is_causal=*/false,
                                                         /*return_debug_mask=*/false, scale);
        res.out = std::get<0>(r);
        // cuDNN's statistics are [B, H, Nq, 1]: drop the trailing 1.
        res.lse = std::get<1>(r).to(torch::kFloat32).reshape({q.size(0), q.size(1), q.size(2)});
        return res;
      } catch (const c10::Error&) {
        cudnn_failed.store(true, std::memory_order_relaxed);
      }
    }
    auto flash = at::_scaled_dot_product_flash_attention(qc, kc, vc, 0.0, false, false, scale);
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
