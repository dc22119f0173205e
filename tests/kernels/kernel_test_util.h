// Helpers shared by the kernels tests: small geometries, schedules and a float64 reference
// attention with an explicit token mask.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "kernels/layout.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"

namespace sparsetune::test {

inline ModelGeometry SmallModel(std::array<int64_t, 3> grid, int64_t text, TextPosition pos,
                                int64_t heads = 2, int64_t head_dim = 32, int64_t layers = 2,
                                int64_t steps = 8) {
  ModelGeometry m;
  m.name = "test";
  m.layers = layers;
  m.heads = heads;
  m.head_dim = head_dim;
  m.grid = grid;
  m.text_tokens = text;
  m.text_position = pos;
  m.steps = steps;
  m.rope_split = RopeSplitFor(head_dim);
  return m;
}

// Every head of every layer runs `p`.
inline Schedule Uniform(const ModelGeometry& m, const HeadPattern& p, int64_t block,
                        TokenOrder order = TokenOrder{}) {
  Schedule s = Schedule::Dense(m);
  s.block_size = block;
  s.token_order = order;
  s.heads.assign(static_cast<size_t>(m.layers), std::vector<HeadPattern>(static_cast<size_t>(m.heads), p));
  return s;
}

inline HeadPattern Pattern(PatternKind kind, double density) {
  HeadPattern p;
  p.pattern = kind;
  p.density = density;
  p.keep = density;
  return p;
}

// Seeded random q/k/v [B, H, N, D].
inline torch::Tensor Rand(int64_t seed, std::vector<int64_t> shape) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  return torch::randn(shape, torch::kFloat32);
}

// Float64 attention of q [Nq, D] over k, v [N, D] with an optional bool mask [Nq, N].
inline torch::Tensor NaiveAttention(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const torch::Tensor& mask) {
  torch::Tensor s = torch::matmul(q.to(torch::kFloat64), k.to(torch::kFloat64).t()) /
                    std::sqrt(static_cast<double>(q.size(1)));
  if (mask.defined()) s.masked_fill_(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(s, 1), v.to(torch::kFloat64));
}

inline double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// q/k/v [1, H, N, D] that vary smoothly over the video grid (random on a 2x coarser grid,
// upsampled, plus noise; text in front), so block scores, ARM and TimeRipple's similarity tests
// have structure to find; rounded to bf16 and returned as float32 on the CPU. Never zero.
inline torch::Tensor SmoothInput(const ModelGeometry& g, uint64_t seed) {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t f = g.grid[0], h = g.grid[1], w = g.grid[2];
  torch::Tensor coarse = torch::randn({1, g.heads, f, h / 2, w / 2, g.head_dim}, gen);
  torch::Tensor video = coarse.repeat_interleave(2, 3).repeat_interleave(2, 4);
  video = video + 0.2 * torch::randn(video.sizes(), gen);
  video = video.reshape({1, g.heads, f * h * w, g.head_dim});
  const torch::Tensor text = torch::randn({1, g.heads, g.text_tokens, g.head_dim}, gen);
  return torch::cat({text, video}, 2).to(torch::kBFloat16).to(torch::kFloat32);
}

// Relative L2 error of out against ref (any devices), in float64.
inline double RelL2(const torch::Tensor& out, const torch::Tensor& ref) {
  const torch::Tensor r = ref.to(torch::kCPU, torch::kFloat64);
  const torch::Tensor o = out.to(torch::kCPU, torch::kFloat64);
  return ((o - r).norm() / r.norm()).item<double>();
}

// Keys of frames >= 1 built per (tile, group) from the key one frame earlier: a near-copy
// (cosine ~0.99, reused at threshold 0.9) for about two thirds of them, a near-negation (cosine
// ~-0.99) for the rest. Per-token and per-tile reuse then coincide by a wide margin, so
// RippleAttention is the exact oracle.
inline torch::Tensor RippleKeys(const Layout& l, int64_t batch, int64_t heads, int64_t d,
                                const std::array<int64_t, 3>& split, int64_t seed) {
  torch::Tensor k = Rand(seed, {batch, heads, l.tokens, d});
  const int64_t hw = l.grid[1] * l.grid[2], runs = (hw + 31) / 32;
  int64_t pick = 0;
  for (int64_t f = 1; f < l.grid[0]; ++f)
    for (int64_t c = 0; c < runs; ++c) {
      int64_t c0 = 0;
      for (int g = 0; g < 3; ++g) {
        const int64_t w = split[static_cast<size_t>(g)];
        if (w > 0) {
          const double sign = ++pick % 3 != 0 ? 1.0 : -1.0;
          const int64_t len = std::min<int64_t>(32, hw - c * 32);
          const int64_t cur = l.video_offset + f * hw + c * 32;
          torch::Tensor dst = k.narrow(2, cur, len).narrow(3, c0, w);
          const torch::Tensor src = k.narrow(2, cur - hw, len).narrow(3, c0, w);
          dst.copy_(sign * src + 0.1 * torch::randn(src.sizes()));
        }
        c0 += w;
      }
    }
  return k;
}

}  // namespace sparsetune::test
