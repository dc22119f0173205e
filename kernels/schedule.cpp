#include "kernels/schedule.h"

#include <limits>
#include <sstream>

#include "core/error.h"

namespace sparsetune {

namespace {

// Upper bounds that keep a hostile file from asking for absurd allocations. Real video DiTs are far
// inside them (Wan2.1-14B: 40 layers x 40 heads, head_dim 128, 50 steps). docs/schedule-format.md
// and configs/schedule.schema.json state the same numbers.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxGridSide = 65536;
constexpr int64_t kMaxTextTokens = 1 << 20;
constexpr int64_t kMaxSteps = 10000;
constexpr int64_t kMaxBlockSize = 4096;
constexpr int64_t kMaxTile = 65536;
constexpr int64_t kMaxRefresh = kMaxSteps;
// TimeRipple thresholds are cosine similarities; values above 1 switch reuse off at that step.
constexpr double kMinThreshold = -1.0;
constexpr double kMaxThreshold = 2.0;

[[noreturn]] void Fail(const std::string& source, const std::string& path,
                       const std::string& what) {
  throw InputError(source + ": field '" + path + "': " + what);
}

std::string Show(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// `value` (found at `key` under `r`) as a number in (0, 1]: densities, keep ratios, budgets.
// Checked here rather than with JsonReader::number because the interval is open at 0.
double FractionOf(const JsonReader& r, const std::string& key, const Json& value) {
  if (!value.is_number()) r.fail(key, "must be a number (got " + Describe(value) + ")");
  const double x = value.get<double>();
  if (!(x > 0.0 && x <= 1.0)) r.fail(key, "must be a number in (0, 1] (got " + Show(x) + ")");
  return x;
}

double Fraction(JsonReader& r, const std::string& key) { return FractionOf(r, key, r.raw(key)); }

// The length of r[key] when it is an array, checked against the model's step count before the
// elements are read, so the message says why that length is expected.
void RequirePerStep(JsonReader& r, const std::string& key, int64_t steps) {
  const Json& v = r.raw(key);
  if (v.is_array() && static_cast<int64_t>(v.size()) != steps) {
    r.fail(key, "must have one entry per step: " + std::to_string(steps) + " (model.steps) (got " +
                    std::to_string(v.size()) + ")");
  }
}

HeadPattern ReadPattern(JsonReader r) {
  HeadPattern p;
  const std::string kind =
      r.choice("pattern", {"dense", "spatial", "temporal", "textural", "block_sparse", "auto"});
  if (kind == "dense") {
    p.pattern = PatternKind::kDense;
  } else if (kind == "spatial" || kind == "temporal" || kind == "textural") {
    p.pattern = kind == "spatial"    ? PatternKind::kSpatial
                : kind == "temporal" ? PatternKind::kTemporal
                                     : PatternKind::kTextural;
    p.density = Fraction(r, "density");
  } else if (kind == "block_sparse") {
    p.pattern = PatternKind::kBlockSparse;
    p.keep = Fraction(r, "keep");
    p.first_frame_sink = r.boolean("first_frame_sink", true);
    p.mask_refresh = r.integer("mask_refresh", 1, 1, kMaxRefresh);
  } else {
    p.pattern = PatternKind::kAuto;
    p.density = Fraction(r, "density");
    p.arm_refresh = r.integer("arm_refresh", 4, 1, kMaxRefresh);
  }
  r.finish();
  return p;
}

ModelGeometry ReadModel(JsonReader r) {
  ModelGeometry m;
  m.name = r.string("name");
  if (m.name.empty()) r.fail("name", "must be a non-empty string");
  m.layers = r.integer("layers", 1, kMaxLayers);
  m.heads = r.integer("heads", 1, kMaxHeads);
  m.head_dim = r.integer("head_dim", 2, kMaxHeadDim);
  if (m.head_dim % 2 != 0) {
    r.fail("head_dim",
           "must be even: RoPE rotates channel pairs (got " + std::to_string(m.head_dim) + ")");
  }
  const std::vector<int64_t> grid = r.integers("grid", 1, kMaxGridSide, 3, 3);
  m.grid = {grid[0], grid[1], grid[2]};
  m.text_tokens = r.integer("text_tokens", 0, kMaxTextTokens);
  const std::string position = r.choice("text_position", {"none", "front", "back"});
  m.text_position = position == "front"  ? TextPosition::kFront
                    : position == "back" ? TextPosition::kBack
                                         : TextPosition::kNone;
  if (m.text_tokens == 0 && m.text_position != TextPosition::kNone) {
    r.fail("text_position", "must be \"none\" when text_tokens is 0 (got \"" + position + "\")");
  }
  if (m.text_tokens > 0 && m.text_position == TextPosition::kNone) {
    r.fail("text_position", "must be \"front\" or \"back\" when text_tokens is " +
                                std::to_string(m.text_tokens) + " (got \"none\")");
  }
  m.steps = r.integer("steps", 1, kMaxSteps);
  if (r.has("rope_split")) {
    const std::vector<int64_t> split = r.integers("rope_split", 0, m.head_dim, 3, 3);
    for (size_t i = 0; i < 3; ++i) {
      if (split[i] % 2 != 0) {
        r.fail("rope_split[" + std::to_string(i) + "]",
               "must be even: RoPE rotates channel pairs (got " + std::to_string(split[i]) + ")");
      }
    }
    if (split[0] + split[1] + split[2] != m.head_dim) {
      r.fail("rope_split", "must sum to head_dim " + std::to_string(m.head_dim) + " (got " +
                               std::to_string(split[0] + split[1] + split[2]) + ")");
    }
    m.rope_split = {split[0], split[1], split[2]};
  } else {
    m.rope_split = RopeSplitFor(m.head_dim);
  }
  r.finish();
  return m;
}

TokenOrder ReadTokenOrder(JsonReader r) {
  TokenOrder order;
  const std::string kind = r.choice("kind", {"raster", "tiles"});
  if (kind == "tiles") {
    order.kind = TokenOrderKind::kTiles;
    const std::vector<int64_t> tile = r.integers("tile", 1, kMaxTile, 3, 3);
    order.tile = {tile[0], tile[1], tile[2]};
  } else {
    order.kind = TokenOrderKind::kRaster;
  }
  r.finish();
  return order;
}

// "heads": one pattern object for every head, or per layer either one object for the layer's
// heads or an array with one object per head.
std::vector<std::vector<HeadPattern>> ReadHeads(JsonReader& root, const ModelGeometry& m) {
  const std::string& source = root.source();
  const Json& heads = root.raw("heads");
  const auto layers = static_cast<size_t>(m.layers);
  const auto per_layer = static_cast<size_t>(m.heads);
  if (heads.is_object()) {
    const HeadPattern p = ReadPattern(JsonReader(heads, source, "heads"));
    return std::vector<std::vector<HeadPattern>>(layers, std::vector<HeadPattern>(per_layer, p));
  }
  if (!heads.is_array()) {
    root.fail("heads", "must be a pattern object or an array with one entry per layer (got " +
                           Describe(heads) + ")");
  }
  if (heads.size() != layers) {
    root.fail("heads", "must have one entry per layer: " + std::to_string(layers) +
                           " (model.layers) (got " + std::to_string(heads.size()) + ")");
  }
  std::vector<std::vector<HeadPattern>> out(layers);
  for (size_t l = 0; l < layers; ++l) {
    const std::string at = "heads[" + std::to_string(l) + "]";
    const Json& layer = heads[l];
    if (layer.is_object()) {
      out[l].assign(per_layer, ReadPattern(JsonReader(layer, source, at)));
      continue;
    }
    if (!layer.is_array()) {
      Fail(source, at,
           "must be a pattern object or an array with one per head (got " + Describe(layer) + ")");
    }
    if (layer.size() != per_layer) {
      Fail(source, at,
           "must have one entry per head: " + std::to_string(per_layer) + " (model.heads) (got " +
               std::to_string(layer.size()) + ")");
    }
    out[l].reserve(per_layer);
    for (size_t h = 0; h < per_layer; ++h) {
      const std::string head_at = at + "[" + std::to_string(h) + "]";
      if (!layer[h].is_object()) {
        Fail(source, head_at, "must be a pattern object (got " + Describe(layer[h]) + ")");
      }
      out[l].push_back(ReadPattern(JsonReader(layer[h], source, head_at)));
    }
  }
  return out;
}

PatternOverride ReadOverride(JsonReader r, const ModelGeometry& m) {
  PatternOverride o;
  const std::vector<int64_t> steps = r.integers("steps", 0, m.steps, 2, 2);
  if (steps[0] >= steps[1]) {
    r.fail("steps", "must be [begin, end) with begin < end (got [" + std::to_string(steps[0]) +
                        ", " + std::to_string(steps[1]) + "])");
  }
  o.step_begin = steps[0];
  o.step_end = steps[1];
  // Absent means every layer / head (-1 in the struct); -1 itself is not accepted in the file.
  o.layer = r.integer("layer", -1, 0, m.layers - 1);
  o.head = r.integer("head", -1, 0, m.heads - 1);
  o.pattern = ReadPattern(r.object("pattern"));
  r.finish();
  return o;
}

ReuseConfig ReadReuse(JsonReader r, const ModelGeometry& m) {
  ReuseConfig reuse;
  r.choice("kind", {"timeripple"});
  reuse.enabled = true;
  RequirePerStep(r, "threshold", m.steps);
  reuse.threshold = r.numbers("threshold", kMinThreshold, kMaxThreshold);
  r.finish();
  return reuse;
}

std::array<int64_t, 3> EffectiveRopeSplit(const ModelGeometry& m) {
  if (m.rope_split == std::array<int64_t, 3>{0, 0, 0}) return RopeSplitFor(m.head_dim);
  return m.rope_split;
}

}  // namespace

const char* ToString(TextPosition p) {
  switch (p) {
    case TextPosition::kNone:
      return "none";
    case TextPosition::kFront:
      return "front";
    case TextPosition::kBack:
      return "back";
  }
  return "?";
}

const char* ToString(PatternKind p) {
  switch (p) {
    case PatternKind::kDense:
      return "dense";
    case PatternKind::kSpatial:
      return "spatial";
    case PatternKind::kTemporal:
      return "temporal";
    case PatternKind::kTextural:
      return "textural";
    case PatternKind::kBlockSparse:
      return "block_sparse";
    case PatternKind::kAuto:
      return "auto";
  }
  return "?";
}

const char* ToString(TokenOrderKind k) {
  switch (k) {
    case TokenOrderKind::kRaster:
      return "raster";
    case TokenOrderKind::kTiles:
      return "tiles";
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
  if (pattern != o.pattern) return false;
  switch (pattern) {
    case PatternKind::kDense:
      return true;
    case PatternKind::kSpatial:
    case PatternKind::kTemporal:
    case PatternKind::kTextural:
      return density == o.density;
    case PatternKind::kBlockSparse:
      return keep == o.keep && first_frame_sink == o.first_frame_sink &&
             mask_refresh == o.mask_refresh;
    case PatternKind::kAuto:
      return density == o.density && arm_refresh == o.arm_refresh;
  }
  return false;
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

bool TokenOrder::operator==(const TokenOrder& o) const {
  return kind == o.kind && (kind == TokenOrderKind::kRaster || tile == o.tile);
}

bool PatternOverride::operator==(const PatternOverride& o) const {
  return step_begin == o.step_begin && step_end == o.step_end && layer == o.layer &&
         head == o.head && pattern == o.pattern;
}

bool ReuseConfig::operator==(const ReuseConfig& o) const {
  return enabled == o.enabled && (!enabled || threshold == o.threshold);
}

bool Schedule::operator==(const Schedule& o) const {
  return model == o.model && block_size == o.block_size && token_order == o.token_order &&
         dense_warmup_steps == o.dense_warmup_steps && token_budget == o.token_budget &&
         heads == o.heads && overrides == o.overrides && reuse == o.reuse &&
         provenance == o.provenance;
}

HeadPattern HeadPatternFromJson(const Json& value, const std::string& source,
                                const std::string& path) {
  return ReadPattern(JsonReader(value, source, path));
}

Json HeadPatternToJson(const HeadPattern& p) {
  Json j = Json::object();
  j["pattern"] = ToString(p.pattern);
  switch (p.pattern) {
    case PatternKind::kDense:
      break;
    case PatternKind::kSpatial:
    case PatternKind::kTemporal:
    case PatternKind::kTextural:
      j["density"] = p.density;
      break;
    case PatternKind::kBlockSparse:
      j["keep"] = p.keep;
      j["first_frame_sink"] = p.first_frame_sink;
      j["mask_refresh"] = p.mask_refresh;
      break;
    case PatternKind::kAuto:
      j["density"] = p.density;
      j["arm_refresh"] = p.arm_refresh;
      break;
  }
  return j;
}

ModelGeometry ModelGeometryFromJson(const Json& value, const std::string& source,
                                    const std::string& path) {
  return ReadModel(JsonReader(value, source, path));
}

Json ModelGeometryToJson(const ModelGeometry& m) {
  Json j = Json::object();
  j["name"] = m.name;
  j["layers"] = m.layers;
  j["heads"] = m.heads;
  j["head_dim"] = m.head_dim;
  j["grid"] = m.grid;
  j["text_tokens"] = m.text_tokens;
  j["text_position"] = ToString(m.text_position);
  j["steps"] = m.steps;
  j["rope_split"] = m.rope_split;
  return j;
}

Schedule ScheduleFromJson(const Json& document, const std::string& source) {
  JsonReader r(document, source);
  const std::string format = r.string("format");
  if (format != Schedule::kFormat) {
    r.fail("format", std::string("must be \"") + Schedule::kFormat + "\" (got \"" + format + "\")");
  }
  // The version is checked before anything else so that a newer file gets this message rather
  // than a complaint about a key this build does not know.
  const int64_t version = r.integer("version", 1);
  if (version > Schedule::kVersion) {
    r.fail("version", "written by a newer sparsetune (version " + std::to_string(version) +
                          "); this build reads version " + std::to_string(Schedule::kVersion));
  }
  Schedule s;
  s.model = ReadModel(r.object("model"));
  const int64_t steps = s.model.steps;
  s.block_size = r.integer("block_size", 1, kMaxBlockSize);
  s.token_order = ReadTokenOrder(r.object("token_order"));
  s.dense_warmup_steps = r.integer("dense_warmup_steps", 0, 0, steps);
  if (r.has("token_budget")) {
    RequirePerStep(r, "token_budget", steps);
    const Json& budget = r.raw("token_budget");
    if (!budget.is_array()) {
      r.fail("token_budget", "must be an array of numbers (got " + Describe(budget) + ")");
    }
    for (size_t i = 0; i < budget.size(); ++i) {
      s.token_budget.push_back(FractionOf(r, "token_budget[" + std::to_string(i) + "]", budget[i]));
    }
  }
  s.heads = ReadHeads(r, s.model);
  if (r.has("overrides")) {
    for (JsonReader& o : r.objects("overrides")) s.overrides.push_back(ReadOverride(o, s.model));
  }
  if (auto reuse = r.optional_object("reuse")) s.reuse = ReadReuse(*reuse, s.model);
  if (const Json* provenance = r.find("provenance")) {
    if (!provenance->is_object()) {
      r.fail("provenance", "must be an object (got " + Describe(*provenance) + ")");
    }
    s.provenance = *provenance;
  }
  r.finish();
  return s;
}

Json ScheduleToJson(const Schedule& s) {
  Json j = Json::object();
  j["format"] = Schedule::kFormat;
  j["version"] = Schedule::kVersion;
  j["model"] = ModelGeometryToJson(s.model);
  j["block_size"] = s.block_size;
  Json order = Json::object();
  order["kind"] = ToString(s.token_order.kind);
  if (s.token_order.kind == TokenOrderKind::kTiles) order["tile"] = s.token_order.tile;
  j["token_order"] = order;
  j["dense_warmup_steps"] = s.dense_warmup_steps;
  if (!s.token_budget.empty()) j["token_budget"] = s.token_budget;
  Json heads = Json::array();
  for (const auto& layer : s.heads) {
    Json row = Json::array();
    for (const HeadPattern& p : layer) row.push_back(HeadPatternToJson(p));
    heads.push_back(row);
  }
  j["heads"] = heads;
  if (!s.overrides.empty()) {
    Json overrides = Json::array();
    for (const PatternOverride& o : s.overrides) {
      Json item = Json::object();
      item["steps"] = {o.step_begin, o.step_end};
      // -1 ("all") is written as an absent key; any other value is written so that validation
      // of a schedule built in code reports it.
      if (o.layer != -1) item["layer"] = o.layer;
      if (o.head != -1) item["head"] = o.head;
      item["pattern"] = HeadPatternToJson(o.pattern);
      overrides.push_back(item);
    }
    j["overrides"] = overrides;
  }
  if (s.reuse.enabled) {
    j["reuse"] = {{"kind", "timeripple"}, {"threshold", s.reuse.threshold}};
  }
  j["provenance"] = s.provenance;
  return j;
}

Schedule LoadSchedule(const std::filesystem::path& path) {
  return ScheduleFromJson(LoadJsonFile(path), path.string());
}

void SaveSchedule(const std::filesystem::path& path, const Schedule& schedule) {
  const Json document = ScheduleToJson(schedule);
  // Never write a file that could not be read back.
  ScheduleFromJson(document, path.string());
  SaveJsonFile(path, document);
}

// One set of rules: a schedule built in code is checked by reading its own JSON, so messages name
// the same fields a user would see in the file.
void ValidateSchedule(const Schedule& schedule, const std::string& source) {
  ScheduleFromJson(ScheduleToJson(schedule), source);
}

void CheckGeometryMatches(const Schedule& schedule, const ModelGeometry& workload,
                          const std::string& source) {
  const ModelGeometry& m = schedule.model;
  auto mismatch = [&](const char* field, const Json& made_for, const Json& has) {
    Fail(source, std::string("model.") + field,
         "schedule was made for " + made_for.dump() + " but the workload has " + has.dump());
  };
  if (m.name != workload.name) mismatch("name", m.name, workload.name);
  if (m.layers != workload.layers) mismatch("layers", m.layers, workload.layers);
  if (m.heads != workload.heads) mismatch("heads", m.heads, workload.heads);
  if (m.head_dim != workload.head_dim) mismatch("head_dim", m.head_dim, workload.head_dim);
  if (m.grid != workload.grid) mismatch("grid", m.grid, workload.grid);
  if (m.text_tokens != workload.text_tokens) {
    mismatch("text_tokens", m.text_tokens, workload.text_tokens);
  }
  if (m.text_position != workload.text_position) {
    mismatch("text_position", ToString(m.text_position), ToString(workload.text_position));
  }
  if (m.steps != workload.steps) mismatch("steps", m.steps, workload.steps);
  const auto split = EffectiveRopeSplit(m);
  const auto workload_split = EffectiveRopeSplit(workload);
  if (split != workload_split) mismatch("rope_split", split, workload_split);
}

bool LooksLikeSchedule(const Json& document) {
  if (!document.is_object()) return false;
  const auto it = document.find("format");
  return it != document.end() && it->is_string() && it->get<std::string>() == Schedule::kFormat;
}

}  // namespace sparsetune
