#include "kernels/timeripple.h"

#include <cmath>
#include <limits>

namespace sparsetune {

torch::Tensor RippleReuse(const Layout& l, const torch::Tensor& k,
                          const std::array<int64_t, 3>& split, double threshold) {
  const int64_t n = k.size(0);
  const int64_t hw = l.grid[1] * l.grid[2];
  torch::Tensor reuse = torch::zeros({3, n}, k.options().dtype(torch::kBool));
  if (l.grid[0] < 2) return reuse;
  const int64_t first = l.video_offset + hw;  // first key of frame 1
  const int64_t count = l.video_tokens - hw;
  int64_t c0 = 0;
  for (int g = 0; g < 3; ++g) {
    const int64_t width = split[g];
    if (width > 0) {
      const torch::Tensor cur = k.narrow(0, first, count).narrow(1, c0, width).to(torch::kFloat64);
      const torch::Tensor ref =
          k.narrow(0, first - hw, count).narrow(1, c0, width).to(torch::kFloat64);
      const torch::Tensor cos = (cur * ref).sum(1) /
                                (cur.norm(2, 1) * ref.norm(2, 1)).clamp_min(1e-30);
      reuse[g].narrow(0, first, count).copy_(cos >= threshold);
    }
    c0 += width;
  }
  return reuse;
}

RippleOutput RippleAttention(const Layout& l, const torch::Tensor& q, const torch::Tensor& q_index,
                             const torch::Tensor& k, const torch::Tensor& v,
                             const std::vector<torch::Tensor>& masks,
                             const std::array<int64_t, 3>& split, double threshold) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), d = q.size(3);
  const int64_t n = k.size(2);
  const int64_t hw = l.grid[1] * l.grid[2];
  const int64_t frames = l.grid[0];
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  RippleOutput res;
  res.out = torch::empty_like(q);
  res.lse = torch::empty({batch, heads, nq}, q.options().dtype(torch::kFloat32));
  const torch::Tensor q_block_all = l.block_of.index_select(0, l.position);  // model idx -> block
  for (int64_t b = 0; b < batch; ++b) {
    const torch::Tensor qb = q_block_all.index_select(0, q_index[b]);
    for (int64_t h = 0; h < heads; ++h) {
      // Scores, softmax and accumulation in float32 whatever the input dtype (bf16/fp16 on CUDA).
      const torch::Tensor qs = q[b][h].to(torch::kFloat32);
      const torch::Tensor ks = k[b][h].to(torch::kFloat32);
      torch::Tensor allowed;  // [Nq, N] or undefined (dense)
      if (masks[static_cast<size_t>(h)].defined())
        allowed = ExpandBlockMask(l, masks[static_cast<size_t>(h)][b]).index_select(0, q_index[b]);
      const torch::Tensor reuse = RippleReuse(l, ks, split, threshold);
      const torch::Tensor col_count =
          allowed.defined() ? allowed.sum(0).to(torch::kInt64) : torch::full({n}, nq, k.options().dtype(torch::kInt64));
      torch::Tensor scores = torch::zeros({nq, n}, qs.options());
      int64_t c0 = 0;
      for (int g = 0; g < 3; ++g) {
        const int64_t width = split[g];
        if (width == 0) continue;
        torch::Tensor part = torch::matmul(qs.narrow(1, c0, width), ks.narrow(1, c0, width).t());
        c0 += width;
        if (frames >= 2) {
          // Ripple along frames: a reused column copies its reference column, which may itself
          // be a copy, so frames are visited in order.
          torch::Tensor video = part.narrow(1, l.video_offset, l.video_tokens).view({nq, frames, hw});
          const torch::Tensor rv = reuse[g].narrow(0, l.video_offset, l.video_tokens).view({frames, hw});
          for (int64_t f = 1; f < frames; ++f) {
            torch::Tensor cur = video.select(1, f);
            cur.copy_(torch::where(rv[f].unsqueeze(0), video.select(1, f - 1), cur));
          }
        }
        res.macs_skipped +=
            (reuse[g].to(torch::kInt64) * col_count).sum().item<int64_t>() * width;
        scores.add_(part);
      }
      scores.mul_(scale);
      if (allowed.defined())
        scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
      const torch::Tensor lse = scores.logsumexp(1, true);
      res.out[b][h].copy_(torch::matmul((scores - lse).exp(), v[b][h].to(torch::kFloat32)));
      res.lse[b][h].copy_(lse.squeeze(1));
    }
  }
  return res;
}

RippleSubstitution RippleSubstituteKeys(const Layout& l, const torch::Tensor& k,
                                        const std::array<int64_t, 3>& split, double threshold) {
  const int64_t batch = k.size(0), heads = k.size(1), n = k.size(2), d = k.size(3);
  const int64_t frames = l.grid[0], hw = l.grid[1] * l.grid[2];
  RippleSubstitution res;
  res.reuse = torch::zeros({batch, heads, 3, n}, k.options().dtype(torch::kBool));
  if (frames < 2) {
    res.keys = k;
    return res;
  }
  res.keys = k.contiguous().clone();
  const torch::Tensor video = res.keys.narrow(2, l.video_offset, l.video_tokens)
                                  .view({batch, heads, frames, hw, d});
  const torch::Tensor original = video.clone();
  const torch::Tensor frame_ids =
      torch::arange(frames, k.options().dtype(torch::kInt64)).view({1, 1, frames, 1});
  int64_t c0 = 0;
  for (int g = 0; g < 3; ++g) {
    const int64_t width = split[static_cast<size_t>(g)];
    if (width == 0) continue;
    const torch::Tensor group = original.narrow(4, c0, width);
    // RippleReuse's test: float64 cosine of the group's channels with the key one frame earlier.
    const torch::Tensor cur = group.narrow(2, 1, frames - 1).to(torch::kFloat64);
    const torch::Tensor ref = group.narrow(2, 0, frames - 1).to(torch::kFloat64);
    const torch::Tensor cos = (cur * ref).sum(-1) /
                              (cur.norm(2, -1) * ref.norm(2, -1)).clamp_min(1e-30);
    const torch::Tensor reused = torch::cat(
        {torch::zeros({batch, heads, 1, hw}, cos.options().dtype(torch::kBool)), cos >= threshold},
        2);  // [B, H, F, HW]
    res.reuse.select(2, g).narrow(2, l.video_offset, l.video_tokens)
        .copy_(reused.view({batch, heads, l.video_tokens}));
    // Source frame of each (frame, position): the last frame at or before it that was not reused.
    const torch::Tensor source =
        std::get<0>(torch::where(reused, torch::zeros_like(frame_ids), frame_ids).cummax(2));
    video.narrow(4, c0, width)
        .copy_(group.gather(2, source.unsqueeze(-1).expand({batch, heads, frames, hw, width})));
    c0 += width;
  }
  return res;
}

int64_t RippleSkippedMacs(const Layout& l, const torch::Tensor& reuse,
                          const std::vector<torch::Tensor>& masks, const torch::Tensor& q_block,
                          const std::array<int64_t, 3>& split) {
  const int64_t batch = reuse.size(0), heads = reuse.size(1), n = reuse.size(3);
  const int64_t nq = q_block.size(1), nb = l.blocks();
  const auto i64 = reuse.options().dtype(torch::kInt64);
  // Queries per layout block, for the masked heads (float64: exact for these counts).
  torch::Tensor per_block, token_block;
  std::vector<torch::Tensor> counts;  // per head [B, N]: computed queries allowed per key
  for (int64_t h = 0; h < heads; ++h) {
    const torch::Tensor& mask = masks[static_cast<size_t>(h)];
    if (!mask.defined()) {
      counts.push_back(torch::full({batch, n}, nq, i64));
      continue;
    }
    if (!per_block.defined()) {
      per_block = torch::zeros({batch, nb}, i64)
                      .scatter_add_(1, q_block.to(i64), torch::ones({batch, nq}, i64))
                      .to(torch::kFloat64)
                      .unsqueeze(1);
      token_block = l.block_of.index_select(0, l.position).to(reuse.device());
    }
    const torch::Tensor per_key_block =
        torch::bmm(per_block, mask.to(torch::kFloat64)).squeeze(1).round().to(torch::kInt64);
    counts.push_back(per_key_block.index_select(1, token_block));
  }
  const torch::Tensor allowed = torch::stack(counts, 1);  // [B, H, N]
  const torch::Tensor per_group = (reuse.to(torch::kInt64) * allowed.unsqueeze(2)).sum({0, 1, 3});
  const torch::Tensor widths = torch::tensor({split[0], split[1], split[2]}, torch::kInt64);
  return (per_group.cpu() * widths).sum().item<int64_t>();
}

}  // namespace sparsetune
