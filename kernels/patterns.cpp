#include "kernels/patterns.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace sparsetune {

namespace {

using Mask = std::vector<std::vector<char>>;

// Text rows/columns dense; first-frame (sink) columns; the diagonal.
void ForceCommon(const Layout& l, Mask& m) {
  const int64_t nb = l.blocks();
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = 0; j < nb; ++j)
      if (l.is_text_block(i) || l.is_text_block(j) || l.has_first_frame(j) || i == j) m[i][j] = 1;
}

torch::Tensor ToTensor(const Mask& m) {
  const int64_t nb = static_cast<int64_t>(m.size());
  torch::Tensor t = torch::zeros({nb, nb}, torch::kBool);
  auto a = t.accessor<bool, 2>();
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = 0; j < nb; ++j) a[i][j] = m[i][j] != 0;
  return t;
}

// Chebyshev gap between two blocks' (h, w) extents; 0 when they overlap.
int64_t SpatialGap(const BlockExtent& a, const BlockExtent& b) {
  const int64_t gh = std::max<int64_t>({0, a.h0 - b.h1, b.h0 - a.h1});
  const int64_t gw = std::max<int64_t>({0, a.w0 - b.w1, b.w0 - a.w1});
  return std::max(gh, gw);
}

Mask TemporalAt(const Layout& l, int64_t rho) {
  const int64_t nb = l.blocks();
  Mask m(nb, std::vector<char>(nb, 0));
  for (int64_t i = 0; i < l.video_blocks; ++i)
    for (int64_t j = 0; j < l.video_blocks; ++j)
      if (SpatialGap(l.extent[i], l.extent[j]) <= rho) m[i][j] = 1;
  ForceCommon(l, m);
  return m;
}

// Fraction of (video query block, video key block) pairs allowed.
double VideoDensity(const Layout& l, const Mask& m) {
  if (l.video_blocks == 0) return 1.0;
  int64_t on = 0;
  for (int64_t i = 0; i < l.video_blocks; ++i)
    for (int64_t j = 0; j < l.video_blocks; ++j) on += m[i][j];
  return static_cast<double>(on) / static_cast<double>(l.video_blocks * l.video_blocks);
}

}  // namespace

int64_t SpatialRadius(int64_t frames, double density) {
  int64_t r = 0;
  while (static_cast<double>(2 * (r + 1) + 1) <= density * static_cast<double>(frames) + 1e-9 &&
         r + 1 < frames)
    ++r;
  return r;
}

torch::Tensor StaticPatternMask(const Layout& l, PatternKind kind, double density) {
  if (!(density > 0.0 && density <= 1.0))
    throw InputError("pattern: density must be in (0, 1]");
  const int64_t nb = l.blocks();
  Mask m(nb, std::vector<char>(nb, 0));
  switch (kind) {
    case PatternKind::kSpatial: {
      const int64_t r = SpatialRadius(l.grid[0], density);
      for (int64_t i = 0; i < l.video_blocks; ++i)
        for (int64_t j = 0; j < l.video_blocks; ++j) {
          const BlockExtent& a = l.extent[i];
          const BlockExtent& b = l.extent[j];
          if (b.f1 >= a.f0 - r && b.f0 <= a.f1 + r) m[i][j] = 1;
        }
      break;
    }
    case PatternKind::kTemporal: {
      // Smallest radius whose realized density reaches the target; deterministic on the layout.
      const int64_t max_rho = std::max(l.grid[1], l.grid[2]);
      for (int64_t rho = 0; rho <= max_rho; ++rho) {
        m = TemporalAt(l, rho);
        if (VideoDensity(l, m) >= density - 1e-12) break;
      }
      break;
    }
    case PatternKind::kTextural: {
      const int64_t stride = std::max<int64_t>(1, std::llround(1.0 / density));
      for (int64_t i = 0; i < l.video_blocks; ++i)
        for (int64_t j = 0; j < l.video_blocks; j += stride) m[i][j] = 1;
      break;
    }
    default:
      throw InputError(std::string("pattern: ") + ToString(kind) + " has no static block mask");
  }
  ForceCommon(l, m);
  return ToTensor(m).to(l.order.device());
}

torch::Tensor BlockSparseMask(const Layout& l, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& q_block, double keep, bool first_frame_sink) {
  return BuildBlockSparseMask(l, q, k, q_block, keep, first_frame_sink).mask;
}

namespace {

// Video key blocks each row keeps by score: ceil(keep * nv), at most nv.
int64_t KeptVideoBlocks(int64_t nv, double keep) {
  return std::min<int64_t>(nv, static_cast<int64_t>(std::ceil(keep * static_cast<double>(nv) - 1e-9)));
}

std::string ShapeOf(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// The checks both builds share: what the torch ops would otherwise reject deep inside libtorch
// (or, for the loops, read out of bounds).
void CheckMaskInputs(const Layout& l, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& q_block, double keep) {
  if (!(keep > 0.0 && keep <= 1.0)) throw InputError("block_sparse mask: keep must be in (0, 1]");
  if (!q.defined() || !k.defined() || q.dim() != 3 || k.dim() != 3)
    throw ShapeError("block_sparse mask: q and k must be 3-D [B, N, D]");
  if (k.size(1) != l.tokens)
    throw ShapeError("block_sparse mask: k must hold all " + std::to_string(l.tokens) +
                     " tokens in layout order; got " + ShapeOf(k));
  if (q.size(0) != k.size(0) || q.size(2) != k.size(2))
    throw ShapeError("block_sparse mask: q " + ShapeOf(q) + " does not match k " + ShapeOf(k) +
                     " in batch or head_dim");
  if (!q_block.defined()) {
    if (q.size(1) != l.tokens)
      throw ShapeError("block_sparse mask: without q_block q must hold all " +
                       std::to_string(l.tokens) + " tokens; got " + ShapeOf(q));
  } else if (q_block.dim() != 2 || q_block.size(0) != q.size(0) ||
             q_block.size(1) != q.size(1) || q_block.scalar_type() != torch::kInt64) {
    throw ShapeError("block_sparse mask: q_block must be int64 [" + std::to_string(q.size(0)) +
                     ", " + std::to_string(q.size(1)) + "]; got " + ShapeOf(q_block));
  }
}

// The libtorch build: any device and dtype.
BlockSparseMaskResult BuildWithTorch(const Layout& l, const torch::Tensor& q,
                                     const torch::Tensor& k, const torch::Tensor& q_block,
                                     double keep, bool first_frame_sink,
                                     const torch::Tensor& previous) {
  const int64_t nb = l.blocks();
  const int64_t batch = k.size(0);
  const int64_t d = k.size(2);
  const auto f32 = k.options().dtype(torch::kFloat32);
  const torch::Tensor len = torch::tensor(l.block_len, torch::kFloat32).to(k.device()).unsqueeze(-1);
  // Block-mean pooling (a partial last block is the mean of its tail).
  const torch::Tensor kp =
      torch::zeros({batch, nb, d}, f32).index_add_(1, l.block_of, k.to(torch::kFloat32)) / len;
  torch::Tensor qp;
  if (!q_block.defined()) {
    qp = torch::zeros({batch, nb, d}, f32).index_add_(1, l.block_of, q.to(torch::kFloat32)) / len;
  } else {
    // Mean of the available queries per block; blocks without any use their key representative.
    torch::Tensor sum = torch::zeros({batch, nb, d}, f32);
    torch::Tensor cnt = torch::zeros({batch, nb}, f32);
    for (int64_t b = 0; b < batch; ++b) {
      sum[b].index_add_(0, q_block[b], q[b].to(torch::kFloat32));
      cnt[b].index_add_(0, q_block[b], torch::ones({q_block.size(1)}, f32));
    }
    if (previous.defined() && previous.sizes() == sum.sizes()) {
      // Left-out tokens count at the previous representative (a full selection ignores it).
      const torch::Tensor missing = (len.squeeze(-1).unsqueeze(0) - cnt).clamp_min(0.0);
      qp = (sum + missing.unsqueeze(-1) * previous.to(f32)) / len;
    } else {
      const torch::Tensor has = (cnt > 0).unsqueeze(-1);
      qp = torch::where(has, sum / cnt.clamp_min(1.0).unsqueeze(-1), kp);
    }
  }
  // Softmax over key blocks is monotone in the logits, so the ranking uses the logits directly.
  const torch::Tensor scores =
      torch::matmul(qp, kp.transpose(1, 2)) / std::sqrt(static_cast<double>(d));
  torch::Tensor mask = torch::zeros({batch, nb, nb}, k.options().dtype(torch::kBool));
  const int64_t nv = l.video_blocks;
  if (nv > 0) {
    const int64_t keep_n = KeptVideoBlocks(nv, keep);
    // Stable descending sort: equal scores keep ascending block order (deterministic ties).
    const torch::Tensor video = scores.narrow(2, 0, nv);
    const torch::Tensor idx =
        std::get<1>(video.sort(/*stable=*/true, /*dim=*/2, /*descending=*/true)).narrow(2, 0, keep_n);
    mask.narrow(2, 0, nv).scatter_(2, idx, true);
  }
  if (l.text_blocks > 0) {
    mask.narrow(1, nv, l.text_blocks).fill_(true);
    mask.narrow(2, nv, l.text_blocks).fill_(true);
  }
  if (first_frame_sink) {
    for (int64_t b = 0; b < nv; ++b) {
      if (!l.has_first_frame(b)) continue;
      mask.select(1, b).fill_(true);
      mask.select(2, b).fill_(true);
    }
  }
  return {mask, qp};
}

// The plain-loop build (float32 CPU): BuildWithTorch's pooling, scores and top-k with no libtorch
// op but the output allocations. Inputs are read in place through their strides; only the head
// dimension must be unit-stride (the inner loops run over it).
BlockSparseMaskResult BuildWithLoops(const Layout& l, const torch::Tensor& q_in,
                                     const torch::Tensor& k_in, const torch::Tensor& q_block_in,
                                     double keep, bool first_frame_sink,
                                     const torch::Tensor& previous) {
  auto unit_rows = [](const torch::Tensor& x) {
    return x.size(2) <= 1 || x.stride(2) == 1 ? x : x.contiguous();
  };
  const torch::Tensor q = unit_rows(q_in), k = unit_rows(k_in);
  const int64_t nb = l.blocks();
  const int64_t nv = l.video_blocks;
  const int64_t batch = k.size(0);
  const int64_t d = k.size(2);
  const int64_t nq = q.size(1);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  torch::Tensor kp_t = torch::empty({batch, nb, d}, f32);
  torch::Tensor qp_t = torch::empty({batch, nb, d}, f32);
  torch::Tensor mask_t = torch::zeros({batch, nb, nb}, torch::TensorOptions().dtype(torch::kBool));
  float* kp_all = kp_t.data_ptr<float>();
  float* qp_all = qp_t.data_ptr<float>();
  bool* mask_all = mask_t.data_ptr<bool>();
  const torch::Tensor q_block = q_block_in.defined() ? q_block_in.contiguous() : q_block_in;
  // The previous representatives count only when they have this build's shape (as in the torch
  // build); anything else is ignored.
  torch::Tensor prev;
  if (q_block.defined() && previous.defined() && previous.sizes() == kp_t.sizes())
    prev = previous.to(torch::kCPU, torch::kFloat32).contiguous();

  // Block means of x's rows in layout order (batch row b) into out [nb, d].
  auto pool_layout = [&](const torch::Tensor& x, int64_t b, float* out) {
    const float* base = x.data_ptr<float>() + b * x.stride(0);
    for (int64_t blk = 0; blk < nb; ++blk) {
      float* o = out + blk * d;
      std::fill(o, o + d, 0.0f);
      const int64_t begin = l.block_begin[static_cast<size_t>(blk)];
      const int64_t len = l.block_len[static_cast<size_t>(blk)];
      for (int64_t p = begin; p < begin + len; ++p) {
        const float* row = base + p * x.stride(1);
        for (int64_t c = 0; c < d; ++c) o[c] += row[c];
      }
      const float fl = static_cast<float>(len);
      for (int64_t c = 0; c < d; ++c) o[c] /= fl;
    }
  };

  const int64_t keep_n = nv > 0 ? KeptVideoBlocks(nv, keep) : 0;
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(d)));
  std::vector<float> sum, cnt;
  std::vector<float> kt(static_cast<size_t>(d * nv));  // video key means transposed, [d, nv]
  std::vector<float> score(static_cast<size_t>(nv));
  std::vector<int64_t> rank(static_cast<size_t>(nv));
  // Descending by score, equal scores in ascending block order (the torch build's stable sort);
  // NaN ranks first as in torch's descending sort, so this stays a strict weak order.
  auto before = [&](int64_t a, int64_t b) {
    const float x = score[static_cast<size_t>(a)], y = score[static_cast<size_t>(b)];
    const bool nx = std::isnan(x), ny = std::isnan(y);
    if (nx != ny) return nx;
    if (!nx && x != y) return x > y;
    return a < b;
  };
  for (int64_t b = 0; b < batch; ++b) {
    float* kp = kp_all + b * nb * d;
    float* qp = qp_all + b * nb * d;
    bool* mask = mask_all + b * nb * nb;
    pool_layout(k, b, kp);
    if (!q_block.defined()) {
      pool_layout(q, b, qp);
    } else {
      // Mean of the available queries per block, summed in row order as index_add_ does.
      sum.assign(static_cast<size_t>(nb * d), 0.0f);
      cnt.assign(static_cast<size_t>(nb), 0.0f);
      const int64_t* qb = q_block.data_ptr<int64_t>() + b * nq;
      const float* qbase = q.data_ptr<float>() + b * q.stride(0);
      for (int64_t r = 0; r < nq; ++r) {
        const int64_t blk = qb[r];
        if (blk < 0 || blk >= nb)
          throw ShapeError("block_sparse mask: q_block holds block " + std::to_string(blk) +
                           " outside [0, " + std::to_string(nb) + ")");
        const float* row = qbase + r * q.stride(1);
        float* o = sum.data() + blk * d;
        for (int64_t c = 0; c < d; ++c) o[c] += row[c];
        cnt[static_cast<size_t>(blk)] += 1.0f;
      }
      const float* pv = prev.defined() ? prev.data_ptr<float>() + b * nb * d : nullptr;
      for (int64_t blk = 0; blk < nb; ++blk) {
        const float* s = sum.data() + blk * d;
        const float n_in = cnt[static_cast<size_t>(blk)];
        float* o = qp + blk * d;
        if (pv != nullptr) {
          // Left-out tokens count at the previous representative.
          const float len = static_cast<float>(l.block_len[static_cast<size_t>(blk)]);
          const float missing = std::max(len - n_in, 0.0f);
          const float* p = pv + blk * d;
          for (int64_t c = 0; c < d; ++c) o[c] = (s[c] + missing * p[c]) / len;
        } else if (n_in > 0.0f) {
          for (int64_t c = 0; c < d; ++c) o[c] = s[c] / n_in;
        } else {
          std::copy(kp + blk * d, kp + (blk + 1) * d, o);
        }
      }
    }
    if (nv > 0) {
      for (int64_t j = 0; j < nv; ++j)
        for (int64_t c = 0; c < d; ++c) kt[static_cast<size_t>(c * nv + j)] = kp[j * d + c];
      for (int64_t i = 0; i < nv; ++i) {
        // Sink rows end up all true; text rows are past nv.
        if (first_frame_sink && l.has_first_frame(i)) continue;
        // Row i's scores over the video key blocks, accumulated along d for all key blocks at
        // once (the inner loop runs over blocks, so it vectorizes without reassociating sums).
        std::fill(score.begin(), score.end(), 0.0f);
        const float* qi = qp + i * d;
        for (int64_t c = 0; c < d; ++c) {
          const float a = qi[c];
          const float* kc = kt.data() + c * nv;
          for (int64_t j = 0; j < nv; ++j) score[static_cast<size_t>(j)] += a * kc[j];
        }
        for (float& s : score) s /= scale;
        for (int64_t j = 0; j < nv; ++j) rank[static_cast<size_t>(j)] = j;
        if (keep_n < nv) std::nth_element(rank.begin(), rank.begin() + keep_n, rank.end(), before);
        for (int64_t t = 0; t < keep_n; ++t) mask[i * nb + rank[static_cast<size_t>(t)]] = true;
      }
    }
    // Text rows and columns; with the sink, first-frame rows and columns.
    for (int64_t i = 0; i < nb; ++i) {
      const bool full_row = l.is_text_block(i) || (first_frame_sink && l.has_first_frame(i));
      for (int64_t j = 0; j < nb; ++j)
        if (full_row || l.is_text_block(j) || (first_frame_sink && l.has_first_frame(j)))
          mask[i * nb + j] = true;
    }
  }
  return {mask_t, qp_t};
}

}  // namespace

BlockSparseMaskResult BuildBlockSparseMask(const Layout& l, const torch::Tensor& q,
                                           const torch::Tensor& k, const torch::Tensor& q_block,
                                           double keep, bool first_frame_sink,
                                           const torch::Tensor& previous, MaskBuild build) {
  CheckMaskInputs(l, q, k, q_block, keep);
  const bool loops_fit = q.device().is_cpu() && k.device().is_cpu() &&
                         q.scalar_type() == torch::kFloat32 &&
                         k.scalar_type() == torch::kFloat32 &&
                         (!q_block.defined() || q_block.device().is_cpu());
  if (build == MaskBuild::kLoops && !loops_fit)
    throw ShapeError("block_sparse mask: the loop build takes float32 CPU tensors; got q " +
                     std::string(c10::toString(q.scalar_type())) + " on " + q.device().str() +
                     ", k " + std::string(c10::toString(k.scalar_type())) + " on " +
                     k.device().str());
  if (build == MaskBuild::kTorch || !loops_fit)
    return BuildWithTorch(l, q, k, q_block, keep, first_frame_sink, previous);
  return BuildWithLoops(l, q, k, q_block, keep, first_frame_sink, previous);
}

std::array<double, 3> ArmRecall(const Layout& l, const torch::Tensor& q,
                                const torch::Tensor& q_index, const torch::Tensor& k,
                                const std::array<torch::Tensor, 3>& masks) {
  const int64_t f = l.grid[0];
  const int64_t s = l.grid[1] * l.grid[2];
  const int64_t batch = k.size(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(k.size(2)));
  // Evenly strided samples of a list of length n; the (i mod stride) jitter keeps the samples from
  // all sharing one column of the frame.
  auto sample = [&](int64_t n) {
    const int64_t count = std::min(s, n);
    std::vector<int64_t> idx;
    const int64_t stride = std::max<int64_t>(1, n / std::max<int64_t>(1, count));
    for (int64_t i = 0; i < count; ++i) {
      const int64_t base = static_cast<int64_t>(static_cast<double>(i) * static_cast<double>(n) /
                                                static_cast<double>(count));
      idx.push_back(std::min(n - 1, base + (i % std::min(stride, f))));
    }
    return torch::tensor(idx, torch::kInt64).to(k.device());
  };
  const torch::Tensor key_model = sample(l.video_tokens) + l.video_offset;
  const torch::Tensor key_block = l.block_of.index_select(0, l.position.index_select(0, key_model));
  std::array<double, 3> recall = {0.0, 0.0, 0.0};
  int64_t rows = 0;
  for (int64_t b = 0; b < batch; ++b) {
    // Video queries available in this batch row.
    const torch::Tensor qi = q_index[b];
    const torch::Tensor is_video = (qi >= l.video_offset) & (qi < l.video_offset + l.video_tokens);
    const torch::Tensor avail = is_video.nonzero().squeeze(1);
    if (avail.numel() == 0) continue;
    const torch::Tensor pick = avail.index_select(0, sample(avail.size(0)));
    const torch::Tensor qs = q[b].index_select(0, pick).to(torch::kFloat32);
    const torch::Tensor ks = k[b].index_select(0, key_model).to(torch::kFloat32);
    const torch::Tensor p = torch::softmax(torch::matmul(qs, ks.t()) * scale, -1);
    const torch::Tensor q_block =
        l.block_of.index_select(0, l.position.index_select(0, qi.index_select(0, pick)));
    for (int c = 0; c < 3; ++c) {
      const torch::Tensor allowed =
          masks[c].index_select(0, q_block).index_select(1, key_block).to(torch::kFloat32);
      recall[c] += (p * allowed).sum().item<double>();
    }
    rows += pick.size(0);
  }
  if (rows > 0)
    for (double& r : recall) r /= static_cast<double>(rows);
  return recall;
}

PatternKind ArmPick(const std::array<double, 3>& recall) {
  const PatternKind kinds[3] = {PatternKind::kSpatial, PatternKind::kTemporal,
                                PatternKind::kTextural};
  int best = 0;
  for (int c = 1; c < 3; ++c)
    if (recall[c] > recall[best]) best = c;
  return kinds[best];
}

}  // namespace sparsetune
