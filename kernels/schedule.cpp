#include "kernels/schedule.h"

#include "core/error.h"

namespace sparsetune {

const char* ToString(TextPosition p) {
  switch (p) {
    case TextPosition::kNone: return "none";
    case TextPosition::kFront: return "front";
    case TextPosition::kBack: return "back";
  }
  return "?";
}

const char* ToString(PatternKind p) {
  switch (p) {
    case PatternKind::kDense: return "dense";
    case PatternKind::kSpatial: return "spatial";
    case PatternKind::kTemporal: return "temporal";
    case PatternKind::kTextural: return "textural";
    case PatternKind::kBlockSparse: return "block_sparse";
    case PatternKind::kAuto: return "auto";
  }
  return "?";
}

const char* ToString(TokenOrderKind k) {
  switch (k) {
    case TokenOrderKind::kRaster: return "raster";
    case TokenOrderKind::kTiles: return "tiles";
  }
  return "?";
}

bool ModelGeometry::operator==(const ModelGeometry& o) const {
  return name == o.name && layers == o.layers && heads == o.heads && head_dim == o.head_dim &&
         grid == o.grid && text_tokens == o.text_tokens && text_position == o.text_position &&
         steps == o.steps && rope_split == o.rope_split;
}

std::array<int64_t, 3> RopeSplitFor(int64_t head_dim) {
  const int64_t pairs = head_dim / 2;
  const int64_t third = pairs / 3;
  return {2 * (pairs - 2 * third), 2 * third, 2 * third};
}

bool HeadPattern::operator==(const HeadPattern& o) const {
  return pattern == o.pattern && density == o.density && keep == o.keep &&
         first_frame_sink == o.first_frame_sink && mask_refresh == o.mask_refresh &&
         arm_refresh == o.arm_refresh;
}

HeadPattern Schedule::pattern_at(int64_t step, int64_t layer, int64_t head) const {
  if (step < dense_warmup_steps) return HeadPattern{};
  HeadPattern current = heads.at(static_cast<size_t>(layer)).at(static_cast<size_t>(head));
  for (const PatternOverride& o : overrides) {
    if (step < o.step_begin || step >= o.step_end) continue;
    if (o.layer >= 0 && o.layer != layer) continue;
    if (o.head >= 0 && o.head != head) continue;
    current = o.pattern;
  }
  return current;
}

double Schedule::budget_at(int64_t step) const {
  if (step < dense_warmup_steps || token_budget.empty()) return 1.0;
  return token_budget.at(static_cast<size_t>(step));
}

Schedule Schedule::Dense(const ModelGeometry& model) {
  Schedule s;
  s.model = model;
  if (s.model.rope_split == std::array<int64_t, 3>{0, 0, 0}) {
    s.model.rope_split = RopeSplitFor(model.head_dim);
  }
  s.heads.assign(static_cast<size_t>(model.layers),
                 std::vector<HeadPattern>(static_cast<size_t>(model.heads)));
  return s;
}

}  // namespace sparsetune
