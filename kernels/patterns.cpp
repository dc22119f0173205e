#include "kernels/patterns.h"

#include <algorithm>
#include <cmath>

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

BlockSparseMaskResult BuildBlockSparseMask(const Layout& l, const torch::Tensor& q,
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
    const int64_t keep_n =
        std::min<int64_t>(nv, static_cast<int64_t>(std::ceil(keep * static_cast<double>(nv) - 1e-9)));
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
