#include "kernels/layout.h"

#include <algorithm>

#include "core/error.h"

namespace sparsetune {

namespace {

// Video raster indices (frame, row, column) in the requested order.
std::vector<int64_t> VideoOrder(const std::array<int64_t, 3>& grid, const TokenOrder& order) {
  const int64_t f = grid[0], h = grid[1], w = grid[2];
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(f * h * w));
  if (order.kind == TokenOrderKind::kRaster) {
    for (int64_t i = 0; i < f * h * w; ++i) out.push_back(i);
    return out;
  }
  const int64_t tf = order.tile[0], th = order.tile[1], tw = order.tile[2];
  if (tf < 1 || th < 1 || tw < 1) throw InputError("layout: token_order.tile entries must be >= 1");
  // Tiles in raster order of their tile coordinates; tokens raster inside; edge tiles smaller.
  for (int64_t f0 = 0; f0 < f; f0 += tf)
    for (int64_t h0 = 0; h0 < h; h0 += th)
      for (int64_t w0 = 0; w0 < w; w0 += tw)
        for (int64_t fi = f0; fi < std::min(f, f0 + tf); ++fi)
          for (int64_t hi = h0; hi < std::min(h, h0 + th); ++hi)
            for (int64_t wi = w0; wi < std::min(w, w0 + tw); ++wi)
              out.push_back((fi * h + hi) * w + wi);
  return out;
}

}  // namespace

Layout BuildLayout(const ModelGeometry& model, const TokenOrder& order, int64_t block_size) {
  if (block_size < 1) throw InputError("layout: block_size must be >= 1");
  Layout l;
  l.grid = model.grid;
  l.video_tokens = model.video_tokens();
  l.text_tokens = model.text_tokens;
  l.tokens = l.video_tokens + l.text_tokens;
  l.block_size = block_size;
  l.video_offset = model.text_position == TextPosition::kFront ? l.text_tokens : 0;
  const int64_t text_offset = model.text_position == TextPosition::kFront ? 0 : l.video_tokens;

  std::vector<int64_t> order_v = VideoOrder(model.grid, order);
  std::vector<int64_t> ord;
  ord.reserve(static_cast<size_t>(l.tokens));
  for (int64_t v : order_v) ord.push_back(v + l.video_offset);
  for (int64_t t = 0; t < l.text_tokens; ++t) ord.push_back(text_offset + t);

  l.video_blocks = (l.video_tokens + block_size - 1) / block_size;
  l.text_blocks = (l.text_tokens + block_size - 1) / block_size;
  const int64_t nb = l.blocks();
  std::vector<int64_t> block_of(static_cast<size_t>(l.tokens));
  std::vector<int64_t> padded(static_cast<size_t>(nb * block_size), l.tokens);
  const int64_t hw = model.grid[1] * model.grid[2];
  for (int64_t b = 0; b < nb; ++b) {
    const bool text = b >= l.video_blocks;
    const int64_t part_begin = text ? l.video_tokens : 0;
    const int64_t part_end = text ? l.tokens : l.video_tokens;
    const int64_t local = text ? b - l.video_blocks : b;
    const int64_t begin = part_begin + local * block_size;
    const int64_t end = std::min(part_end, begin + block_size);
    l.block_begin.push_back(begin);
    l.block_len.push_back(end - begin);
    BlockExtent e{INT64_MAX, -1, INT64_MAX, -1, INT64_MAX, -1};
    for (int64_t p = begin; p < end; ++p) {
      block_of[static_cast<size_t>(p)] = b;
      padded[static_cast<size_t>(b * block_size + (p - begin))] = p;
      if (!text) {
        const int64_t r = order_v[static_cast<size_t>(p)];
        const int64_t fi = r / hw, hi = (r % hw) / model.grid[2], wi = r % model.grid[2];
        e.f0 = std::min(e.f0, fi), e.f1 = std::max(e.f1, fi);
        e.h0 = std::min(e.h0, hi), e.h1 = std::max(e.h1, hi);
        e.w0 = std::min(e.w0, wi), e.w1 = std::max(e.w1, wi);
      }
    }
    if (!text) l.extent.push_back(e);
  }
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  l.order = torch::tensor(ord, i64);
  l.position = torch::empty({l.tokens}, i64);
  l.position.index_put_({l.order}, torch::arange(l.tokens, i64));
  l.block_of = torch::tensor(block_of, i64);
  l.padded = torch::tensor(padded, i64);
  l.slot_valid = l.padded < l.tokens;
  return l;
}

Layout LayoutOn(const Layout& layout, const torch::Device& device) {
  Layout l = layout;
  for (torch::Tensor* t : {&l.order, &l.position, &l.block_of, &l.padded, &l.slot_valid})
    *t = t->to(device);
  return l;
}

torch::Tensor ExpandBlockMask(const Layout& layout, const torch::Tensor& block_mask) {
  // Block of each token in model order, then a 2-D gather of the block mask.
  const torch::Tensor blk = layout.block_of.index_select(0, layout.position);
  const torch::Tensor rows = block_mask.index_select(-2, blk);
  return rows.index_select(-1, blk);
}

torch::Tensor PermuteTokens(const torch::Tensor& x, const torch::Tensor& idx) {
  const int64_t n = x.size(-2), d = x.size(-1);
  const int64_t lead = x.numel() / std::max<int64_t>(1, n * d);
  const torch::Tensor rows =
      (torch::arange(lead, idx.options()).unsqueeze(1) * n + idx.unsqueeze(0)).reshape({-1});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[shape.size() - 2] = idx.size(0);
  return x.reshape({lead * n, d}).index_select(0, rows).reshape(shape);
}

torch::Tensor KeyTokensPerRow(const Layout& layout, const torch::Tensor& block_mask) {
  const torch::Tensor len = torch::tensor(layout.block_len, torch::kInt64).to(block_mask.device());
  return (block_mask.to(torch::kInt64) * len).sum(-1);
}

}  // namespace sparsetune
