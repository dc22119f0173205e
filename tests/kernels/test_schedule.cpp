// Schedule file v1: round trips, the example files, field-by-field rejection of invalid documents,
// pattern_at / budget_at semantics and the geometry check.
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/schedule.h"
#include "tests/catch.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

const std::filesystem::path kExamples =
    std::filesystem::path(SPARSETUNE_SOURCE_DIR) / "configs" / "schedules";

ModelGeometry TinyGeometry() {
  ModelGeometry m;
  m.name = "tiny-vdit/cpu-tiny";
  m.layers = 6;
  m.heads = 4;
  m.head_dim = 32;
  m.grid = {8, 8, 8};
  m.text_tokens = 4;
  m.text_position = TextPosition::kFront;
  m.steps = 16;
  m.rope_split = RopeSplitFor(32);
  return m;
}

int64_t Pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// A random valid pattern. Fields the pattern does not use get junk: they must be ignored.
HeadPattern RandomPattern(std::mt19937_64& rng) {
  HeadPattern p;
  p.pattern = static_cast<PatternKind>(Pick(rng, 0, 5));
  p.density = Uniform(rng, 1e-3, 1.0);
  p.keep = Uniform(rng, 1e-3, 1.0);
  p.first_frame_sink = Pick(rng, 0, 1) == 1;
  p.mask_refresh = Pick(rng, 1, 50);
  p.arm_refresh = Pick(rng, 1, 50);
  return p;
}

Schedule RandomSchedule(std::mt19937_64& rng) {
  ModelGeometry m;
  m.name = "model-" + std::to_string(Pick(rng, 0, 1000000));
  m.layers = Pick(rng, 1, 8);
  m.heads = Pick(rng, 1, 8);
  m.head_dim = 2 * Pick(rng, 1, 128);
  m.grid = {Pick(rng, 1, 64), Pick(rng, 1, 64), Pick(rng, 1, 64)};
  m.text_tokens = Pick(rng, 0, 2) == 0 ? 0 : Pick(rng, 1, 600);
  m.text_position = m.text_tokens == 0     ? TextPosition::kNone
                    : Pick(rng, 0, 1) == 0 ? TextPosition::kFront
                                           : TextPosition::kBack;
  m.steps = Pick(rng, 1, 60);
  if (Pick(rng, 0, 1) == 0) {
    m.rope_split = RopeSplitFor(m.head_dim);
  } else {
    const int64_t t = 2 * Pick(rng, 0, m.head_dim / 2);
    const int64_t h = 2 * Pick(rng, 0, (m.head_dim - t) / 2);
    m.rope_split = {t, h, m.head_dim - t - h};
  }

  Schedule s;
  s.model = m;
  s.block_size = Pick(rng, 1, 4096);
  s.token_order.kind = Pick(rng, 0, 1) == 0 ? TokenOrderKind::kRaster : TokenOrderKind::kTiles;
  s.token_order.tile = {Pick(rng, 1, 8), Pick(rng, 1, 16), Pick(rng, 1, 16)};
  s.dense_warmup_steps = Pick(rng, 0, m.steps);
  if (Pick(rng, 0, 1) == 1) {
    for (int64_t i = 0; i < m.steps; ++i) s.token_budget.push_back(Uniform(rng, 1e-3, 1.0));
  }
  s.heads.resize(static_cast<size_t>(m.layers));
  for (auto& layer : s.heads) {
    for (int64_t h = 0; h < m.heads; ++h) layer.push_back(RandomPattern(rng));
  }
  const int64_t overrides = Pick(rng, 0, 4);
  for (int64_t i = 0; i < overrides; ++i) {
    PatternOverride o;
    o.step_begin = Pick(rng, 0, m.steps - 1);
    o.step_end = Pick(rng, o.step_begin + 1, m.steps);
    o.layer = Pick(rng, 0, 1) == 0 ? -1 : Pick(rng, 0, m.layers - 1);
    o.head = Pick(rng, 0, 1) == 0 ? -1 : Pick(rng, 0, m.heads - 1);
    o.pattern = RandomPattern(rng);
    s.overrides.push_back(o);
  }
  s.reuse.enabled = Pick(rng, 0, 1) == 1;
  for (int64_t i = 0; i < m.steps; ++i) s.reuse.threshold.push_back(Uniform(rng, -1.0, 2.0));
  s.provenance = {{"job", Pick(rng, 1, 99)},
                  {"candidate", Pick(rng, 0, 999)},
                  {"metrics", {{"psnr", Uniform(rng, 10.0, 50.0)}}},
                  {"device", "cpu: test"}};
  return s;
}

// The message of the InputError that reading `document` throws, or "" when it reads fine.
std::string ErrorOf(const Json& document) {
  try {
    ScheduleFromJson(document, "test.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// A valid document using every optional field.
Json FullDocument() {
  Json doc = LoadJsonFile(kExamples / "rainfusion-mixed.json");
  doc["model"]["rope_split"] = {12, 10, 10};
  doc["token_budget"] = std::vector<double>(16, 0.75);
  doc["reuse"] = {{"kind", "timeripple"}, {"threshold", std::vector<double>(16, 0.9)}};
  return doc;
}

// A valid document with only the required fields.
Json MinimalDocument() {
  return {{"format", "sparsetune.schedule"},
          {"version", 1},
          {"model", ModelGeometryToJson(TinyGeometry())},
          {"block_size", 32},
          {"token_order", {{"kind", "raster"}}},
          {"heads", {{"pattern", "dense"}}}};
}

}  // namespace

TEST_CASE("RopeSplitFor follows Wan2.1's split", "[kernels][schedule]") {
  CHECK(RopeSplitFor(128) == std::array<int64_t, 3>{44, 42, 42});
  CHECK(RopeSplitFor(32) == std::array<int64_t, 3>{12, 10, 10});
  CHECK(RopeSplitFor(2) == std::array<int64_t, 3>{2, 0, 0});
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100; ++i) {
    const int64_t head_dim = 2 * Pick(rng, 1, 2048);
    const auto split = RopeSplitFor(head_dim);
    CHECK(split[0] + split[1] + split[2] == head_dim);
    CHECK(split[0] % 2 == 0);
    CHECK(split[1] % 2 == 0);
    CHECK(split[1] == split[2]);
    CHECK(split[0] >= split[1]);
  }
}

TEST_CASE("ToString names every enum value as the file spells it", "[kernels][schedule]") {
  CHECK(std::string(ToString(TextPosition::kNone)) == "none");
  CHECK(std::string(ToString(TextPosition::kBack)) == "back");
  CHECK(std::string(ToString(PatternKind::kBlockSparse)) == "block_sparse");
  CHECK(std::string(ToString(PatternKind::kTextural)) == "textural");
  CHECK(std::string(ToString(PatternKind::kAuto)) == "auto");
  CHECK(std::string(ToString(TokenOrderKind::kTiles)) == "tiles");
  CHECK(std::string(ToString(TokenOrderKind::kRaster)) == "raster");
}

TEST_CASE("random schedules survive a JSON round trip field by field", "[kernels][schedule]") {
  std::mt19937_64 rng(20261126);
  for (int i = 0; i < 300; ++i) {
    const Schedule s = RandomSchedule(rng);
    INFO("schedule " << i << ": " << ScheduleToJson(s).dump());
    REQUIRE_NOTHROW(ValidateSchedule(s, "random"));
    const std::string text = ScheduleToJson(s).dump();
    const Schedule back = ScheduleFromJson(ParseJsonText(text, "random"), "random");
    CHECK(back.model == s.model);
    CHECK(back.block_size == s.block_size);
    CHECK(back.token_order == s.token_order);
    CHECK(back.dense_warmup_steps == s.dense_warmup_steps);
    CHECK(back.token_budget == s.token_budget);
    CHECK(back.heads == s.heads);
    CHECK(back.overrides == s.overrides);
    CHECK(back.reuse == s.reuse);
    CHECK(back.provenance == s.provenance);
    REQUIRE(back == s);
    // Writing again gives the same document: the expanded form is canonical.
    CHECK(ScheduleToJson(back) == ScheduleToJson(s));
  }
}

TEST_CASE("schedule equality notices a change in any field", "[kernels][schedule]") {
  std::mt19937_64 rng(99);
  const Schedule base = RandomSchedule(rng);
  const std::vector<std::function<void(Schedule&)>> changes = {
      [](Schedule& s) { s.model.name += "x"; },
      [](Schedule& s) { s.model.grid[2] += 1; },
      [](Schedule& s) {
        s.model.rope_split = {s.model.head_dim, 0, 0};
      },
      [](Schedule& s) { s.block_size += 1; },
      [](Schedule& s) {
        s.token_order.kind = s.token_order.kind == TokenOrderKind::kRaster
                                 ? TokenOrderKind::kTiles
                                 : TokenOrderKind::kRaster;
      },
      [](Schedule& s) { s.dense_warmup_steps += 1; },
      [](Schedule& s) { s.token_budget.push_back(0.5); },
      [](Schedule& s) {
        s.heads[0][0].pattern = PatternKind::kSpatial;
        s.heads[0][0].density = 0.123;
      },
      [](Schedule& s) {
        s.overrides.push_back(PatternOverride{0, 1, -1, -1, HeadPattern{}});
      },
      [](Schedule& s) {
        s.reuse.enabled = true;
        s.reuse.threshold.assign(static_cast<size_t>(s.model.steps), 0.321);
      },
      [](Schedule& s) { s.provenance["extra"] = 1; },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    INFO("change " << i);
    Schedule changed = base;
    changes[i](changed);
    CHECK(changed != base);
  }
}

TEST_CASE("pattern equality compares only the fields the pattern uses", "[kernels][schedule]") {
  HeadPattern a, b;
  b.density = 0.3;
  b.keep = 0.2;
  b.mask_refresh = 5;
  CHECK(a == b);  // both dense
  a.pattern = b.pattern = PatternKind::kSpatial;
  CHECK(a != b);
  b.density = a.density;
  CHECK(a == b);  // keep and mask_refresh do not matter for spatial
  a.pattern = b.pattern = PatternKind::kBlockSparse;
  CHECK(a != b);
  TokenOrder raster{TokenOrderKind::kRaster, {1, 2, 3}};
  CHECK(raster == TokenOrder{TokenOrderKind::kRaster, {4, 4, 4}});
  CHECK(TokenOrder{TokenOrderKind::kTiles, {1, 2, 3}} !=
        TokenOrder{TokenOrderKind::kTiles, {1, 2, 4}});
  ReuseConfig off{false, {0.5}};
  CHECK(off == ReuseConfig{});
  CHECK(ReuseConfig{true, {0.5}} != ReuseConfig{true, {0.6}});
}

TEST_CASE("SaveSchedule and LoadSchedule round trip through a file", "[kernels][schedule]") {
  test::TempDir dir;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 10; ++i) {
    const Schedule s = RandomSchedule(rng);
    const auto path = dir / ("s" + std::to_string(i) + ".json");
    SaveSchedule(path, s);
    CHECK(LoadSchedule(path) == s);
    CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  }
  SECTION("an invalid schedule is refused and no file is written") {
    Schedule bad = Schedule::Dense(TinyGeometry());
    bad.heads.pop_back();
    const auto path = dir / "bad.json";
    REQUIRE_THROWS_WITH(SaveSchedule(path, bad),
                        path.string() +
                            ": field 'heads': must have one entry per layer: 6 "
                            "(model.layers) (got 5)");
    CHECK_FALSE(std::filesystem::exists(path));
  }
  SECTION("a missing file is an InputError naming it") {
    REQUIRE_THROWS_AS(LoadSchedule(dir / "absent.json"), InputError);
  }
}

TEST_CASE("every example schedule loads and means what its name says", "[kernels][schedule]") {
  const ModelGeometry tiny = TinyGeometry();
  const std::vector<std::string> names = {"dense.json", "block-sparse-0.2.json",
                                          "rainfusion-mixed.json", "astraea-0.5.json",
                                          "timeripple.json"};
  for (const std::string& name : names) {
    INFO(name);
    const auto path = kExamples / name;
    CHECK(LooksLikeSchedule(LoadJsonFile(path)));
    Schedule s;
    REQUIRE_NOTHROW(s = LoadSchedule(path));
    CHECK(s.model == tiny);
    REQUIRE_NOTHROW(CheckGeometryMatches(s, tiny, path.string()));
    REQUIRE_NOTHROW(ValidateSchedule(s, path.string()));
    CHECK(s.provenance.contains("note"));
  }

  const Schedule dense = LoadSchedule(kExamples / "dense.json");
  CHECK(dense.heads == Schedule::Dense(tiny).heads);
  CHECK(dense.dense_warmup_steps == 0);

  const Schedule block = LoadSchedule(kExamples / "block-sparse-0.2.json");
  CHECK(block.dense_warmup_steps == 3);
  CHECK(block.pattern_at(2, 5, 3).pattern == PatternKind::kDense);
  const HeadPattern sparse = block.pattern_at(3, 5, 3);
  CHECK(sparse.pattern == PatternKind::kBlockSparse);
  CHECK(sparse.keep == Approx(0.2));
  CHECK(sparse.mask_refresh == 2);
  CHECK(sparse.first_frame_sink);

  const Schedule mixed = LoadSchedule(kExamples / "rainfusion-mixed.json");
  CHECK(mixed.pattern_at(3, 3, 2).pattern == PatternKind::kAuto);
  CHECK(mixed.pattern_at(3, 3, 2).arm_refresh == 4);
  CHECK(mixed.pattern_at(10, 0, 1).pattern == PatternKind::kSpatial);
  CHECK(mixed.pattern_at(13, 0, 1).pattern == PatternKind::kDense);  // override [13, 16)
  CHECK(mixed.pattern_at(4, 2, 0).density == Approx(0.25));          // override [3, 6)
  CHECK(mixed.pattern_at(6, 2, 0).density == Approx(0.15));
  CHECK(mixed.pattern_at(4, 4, 3).pattern == PatternKind::kBlockSparse);

  const Schedule astraea = LoadSchedule(kExamples / "astraea-0.5.json");
  CHECK(astraea.budget_at(2) == 1.0);
  CHECK(astraea.budget_at(3) == 0.5);
  CHECK(astraea.budget_at(15) == 0.5);

  const Schedule ripple = LoadSchedule(kExamples / "timeripple.json");
  CHECK(ripple.reuse.enabled);
  REQUIRE(ripple.reuse.threshold.size() == 16);
  CHECK(ripple.reuse.threshold[0] > 1.0);
  CHECK(ripple.reuse.threshold[15] == Approx(0.95));
}

TEST_CASE("optional fields take their documented defaults", "[kernels][schedule]") {
  const Schedule s = ScheduleFromJson(MinimalDocument(), "minimal.json");
  CHECK(s.dense_warmup_steps == 0);
  CHECK(s.token_budget.empty());
  CHECK(s.budget_at(0) == 1.0);
  CHECK(s.budget_at(15) == 1.0);
  CHECK(s.overrides.empty());
  CHECK_FALSE(s.reuse.enabled);
  CHECK(s.provenance == Json::object());
  CHECK(s.token_order.kind == TokenOrderKind::kRaster);

  Json doc = MinimalDocument();
  doc["model"].erase("rope_split");
  doc["model"]["head_dim"] = 128;
  CHECK(ScheduleFromJson(doc, "x").model.rope_split == std::array<int64_t, 3>{44, 42, 42});

  doc["heads"] = Json{{"pattern", "block_sparse"}, {"keep", 0.5}};
  const HeadPattern p = ScheduleFromJson(doc, "x").pattern_at(0, 0, 0);
  CHECK(p.first_frame_sink);
  CHECK(p.mask_refresh == 1);
  doc["heads"] = Json{{"pattern", "auto"}, {"density", 0.5}};
  CHECK(ScheduleFromJson(doc, "x").pattern_at(0, 0, 0).arm_refresh == 4);
}

TEST_CASE("heads accept one pattern, one per layer, or one per head", "[kernels][schedule]") {
  Json doc = MinimalDocument();
  const Json temporal = {{"pattern", "temporal"}, {"density", 0.3}};
  const Json spatial = {{"pattern", "spatial"}, {"density", 0.6}};
  doc["heads"] = Json::array();
  for (int l = 0; l < 6; ++l) {
    doc["heads"].push_back(l == 2 ? Json::array({spatial, temporal, spatial, temporal}) : temporal);
  }
  const Schedule s = ScheduleFromJson(doc, "x");
  REQUIRE(s.heads.size() == 6);
  for (const auto& layer : s.heads) REQUIRE(layer.size() == 4);
  CHECK(s.heads[0][3] == HeadPatternFromJson(temporal, "x"));
  CHECK(s.heads[2][0] == HeadPatternFromJson(spatial, "x"));
  CHECK(s.heads[2][1] == HeadPatternFromJson(temporal, "x"));
  // The writer always expands to one object per head.
  const Json written = ScheduleToJson(s);
  CHECK(written["heads"][0].is_array());
  CHECK(written["heads"][0].size() == 4);
}

TEST_CASE("pattern_at applies warm-up, then heads, then overrides in order",
          "[kernels][schedule]") {
  std::mt19937_64 rng(11);
  Schedule s = Schedule::Dense(TinyGeometry());
  for (auto& layer : s.heads) {
    for (auto& head : layer) {
      head.pattern = PatternKind::kTextural;
      head.density = Uniform(rng, 0.1, 0.9);
    }
  }
  s.dense_warmup_steps = 2;
  HeadPattern a, b, c;
  a.pattern = PatternKind::kSpatial;
  a.density = Uniform(rng, 0.1, 0.9);
  b.pattern = PatternKind::kBlockSparse;
  b.keep = Uniform(rng, 0.1, 0.9);
  c.pattern = PatternKind::kAuto;
  c.density = Uniform(rng, 0.1, 0.9);
  s.overrides = {{0, 6, -1, -1, a}, {4, 5, 1, -1, b}, {4, 8, 1, 2, c}};
  REQUIRE_NOTHROW(ValidateSchedule(s, "code"));

  for (int64_t layer = 0; layer < 6; ++layer) {
    for (int64_t head = 0; head < 4; ++head) {
      // Warm-up wins over overrides that cover it.
      CHECK(s.pattern_at(0, layer, head) == HeadPattern{});
      CHECK(s.pattern_at(1, layer, head) == HeadPattern{});
      CHECK(s.pattern_at(8, layer, head) == s.heads[layer][head]);
      CHECK(s.pattern_at(15, layer, head) == s.heads[layer][head]);
    }
  }
  CHECK(s.pattern_at(2, 0, 0) == a);
  CHECK(s.pattern_at(3, 1, 2) == a);
  CHECK(s.pattern_at(4, 0, 2) == a);
  CHECK(s.pattern_at(4, 1, 0) == b);
  CHECK(s.pattern_at(4, 1, 2) == c);  // later override wins
  CHECK(s.pattern_at(5, 1, 0) == a);
  CHECK(s.pattern_at(5, 1, 2) == c);
  CHECK(s.pattern_at(6, 1, 2) == c);
  CHECK(s.pattern_at(6, 1, 1) == s.heads[1][1]);
  CHECK(s.pattern_at(7, 3, 2) == s.heads[3][2]);
}

TEST_CASE("budget_at is 1 during warm-up and the file's budget after", "[kernels][schedule]") {
  std::mt19937_64 rng(3);
  Schedule s = Schedule::Dense(TinyGeometry());
  for (int i = 0; i < 16; ++i) s.token_budget.push_back(Uniform(rng, 0.1, 0.9));
  s.dense_warmup_steps = 3;
  for (int64_t step = 0; step < 16; ++step) {
    CHECK(s.budget_at(step) == (step < 3 ? 1.0 : s.token_budget[step]));
  }
  s.token_budget.clear();
  for (int64_t step = 0; step < 16; ++step) CHECK(s.budget_at(step) == 1.0);
}

TEST_CASE("Schedule::Dense runs every head dense at full budget", "[kernels][schedule]") {
  ModelGeometry m = TinyGeometry();
  m.rope_split = {0, 0, 0};
  const Schedule s = Schedule::Dense(m);
  CHECK(s.model.rope_split == RopeSplitFor(32));
  REQUIRE_NOTHROW(ValidateSchedule(s, "dense"));
  for (int64_t step = 0; step < 16; ++step) {
    CHECK(s.budget_at(step) == 1.0);
    for (int64_t layer = 0; layer < 6; ++layer) {
      for (int64_t head = 0; head < 4; ++head) {
        CHECK(s.pattern_at(step, layer, head).pattern == PatternKind::kDense);
      }
    }
  }
}

TEST_CASE("every invalid field is rejected with a message naming it", "[kernels][schedule]") {
  struct Case {
    std::function<void(Json&)> mutate;
    std::string field;  // "" for messages about the whole document
    std::string what;   // start of the explanation
  };
  const std::vector<Case> cases = {
      {[](Json& d) { d.erase("format"); }, "format", "is required but missing"},
      {[](Json& d) { d["format"] = "sparsetune.job"; }, "format",
       "must be \"sparsetune.schedule\" (got \"sparsetune.job\")"},
      {[](Json& d) { d["format"] = 1; }, "format", "must be a string"},
      {[](Json& d) { d.erase("version"); }, "version", "is required but missing"},
      {[](Json& d) { d["version"] = 0; }, "version", "must be an integer >= 1"},
      {[](Json& d) { d["version"] = "1"; }, "version", "must be an integer"},
      {[](Json& d) { d["version"] = 2; }, "version",
       "written by a newer sparsetune (version 2); this build reads version 1"},
      {[](Json& d) {
         d["version"] = 7;
         d["novelty"] = true;
         d.erase("heads");
       },
       "version", "written by a newer sparsetune (version 7)"},
      {[](Json& d) { d["extra"] = 1; }, "extra", "unknown key"},

      {[](Json& d) { d.erase("model"); }, "model", "is required but missing"},
      {[](Json& d) { d["model"] = "tiny"; }, "model", "must be an object"},
      {[](Json& d) { d["model"]["name"] = ""; }, "model.name", "must be a non-empty string"},
      {[](Json& d) { d["model"].erase("name"); }, "model.name", "is required but missing"},
      {[](Json& d) { d["model"]["layers"] = 0; }, "model.layers",
       "must be an integer in [1, 1024]"},
      {[](Json& d) { d["model"]["layers"] = 2.5; }, "model.layers", "must be an integer"},
      {[](Json& d) { d["model"]["heads"] = -1; }, "model.heads", "must be an integer in [1, 1024]"},
      {[](Json& d) { d["model"].erase("heads"); }, "model.heads", "is required but missing"},
      {[](Json& d) { d["model"]["head_dim"] = 31; }, "model.head_dim", "must be even"},
      {[](Json& d) { d["model"]["head_dim"] = 0; }, "model.head_dim",
       "must be an integer in [2, 4096]"},
      {[](Json& d) {
         d["model"]["grid"] = {8, 8};
       },
       "model.grid", "must have exactly 3 elements"},
      {[](Json& d) {
         d["model"]["grid"] = {8, 0, 8};
       },
       "model.grid[1]", "must be a number in [1, 65536]"},
      {[](Json& d) {
         d["model"]["grid"] = {8, 8, 2.5};
       },
       "model.grid[2]", "must be an integer"},
      {[](Json& d) { d["model"]["grid"] = 8; }, "model.grid", "must be an array of numbers"},
      {[](Json& d) { d["model"]["text_tokens"] = -1; }, "model.text_tokens",
       "must be an integer in [0,"},
      {[](Json& d) { d["model"]["text_position"] = "middle"; }, "model.text_position",
       "must be one of none, front, back"},
      {[](Json& d) { d["model"]["text_tokens"] = 0; }, "model.text_position",
       "must be \"none\" when text_tokens is 0"},
      {[](Json& d) { d["model"]["text_position"] = "none"; }, "model.text_position",
       "must be \"front\" or \"back\" when text_tokens is 4"},
      {[](Json& d) { d["model"]["steps"] = 0; }, "model.steps", "must be an integer in [1, 10000]"},
      {[](Json& d) {
         d["model"]["rope_split"] = {10, 10, 10};
       },
       "model.rope_split", "must sum to head_dim 32 (got 30)"},
      {[](Json& d) {
         d["model"]["rope_split"] = {11, 11, 10};
       },
       "model.rope_split[0]", "must be even"},
      {[](Json& d) {
         d["model"]["rope_split"] = {12, 20};
       },
       "model.rope_split", "must have exactly 3 elements"},
      {[](Json& d) {
         d["model"]["rope_split"] = {-2, 24, 10};
       },
       "model.rope_split[0]", "must be a number in [0, 32]"},
      {[](Json& d) { d["model"]["dtype"] = "bf16"; }, "model.dtype", "unknown key"},

      {[](Json& d) { d.erase("block_size"); }, "block_size", "is required but missing"},
      {[](Json& d) { d["block_size"] = 0; }, "block_size", "must be an integer in [1, 4096]"},
      {[](Json& d) { d["block_size"] = 4097; }, "block_size", "must be an integer in [1, 4096]"},
      {[](Json& d) { d["block_size"] = "32"; }, "block_size", "must be an integer"},

      {[](Json& d) { d.erase("token_order"); }, "token_order", "is required but missing"},
      {[](Json& d) { d["token_order"]["kind"] = "hilbert"; }, "token_order.kind",
       "must be one of raster, tiles"},
      {[](Json& d) { d["token_order"].erase("tile"); }, "token_order.tile",
       "is required but missing"},
      {[](Json& d) {
         d["token_order"]["tile"] = {1, 0, 4};
       },
       "token_order.tile[1]", "must be a number in [1, 65536]"},
      {[](Json& d) {
         d["token_order"]["tile"] = {1, 4};
       },
       "token_order.tile", "must have exactly 3 elements"},
      {[](Json& d) { d["token_order"]["kind"] = "raster"; }, "token_order.tile", "unknown key"},

      {[](Json& d) { d["dense_warmup_steps"] = -1; }, "dense_warmup_steps",
       "must be an integer in [0, 16]"},
      {[](Json& d) { d["dense_warmup_steps"] = 17; }, "dense_warmup_steps",
       "must be an integer in [0, 16]"},
      {[](Json& d) { d["dense_warmup_steps"] = true; }, "dense_warmup_steps", "must be an integer"},

      {[](Json& d) { d["token_budget"].erase(0); }, "token_budget",
       "must have one entry per step: 16 (model.steps) (got 15)"},
      {[](Json& d) { d["token_budget"].push_back(1.0); }, "token_budget",
       "must have one entry per step: 16 (model.steps) (got 17)"},
      {[](Json& d) { d["token_budget"][4] = 0; }, "token_budget[4]", "must be a number in (0, 1]"},
      {[](Json& d) { d["token_budget"][5] = 1.5; }, "token_budget[5]",
       "must be a number in (0, 1]"},
      {[](Json& d) { d["token_budget"][6] = "half"; }, "token_budget[6]", "must be a number"},
      {[](Json& d) { d["token_budget"] = 0.5; }, "token_budget", "must be an array of numbers"},

      {[](Json& d) { d.erase("heads"); }, "heads", "is required but missing"},
      {[](Json& d) { d["heads"] = "dense"; }, "heads", "must be a pattern object or an array"},
      {[](Json& d) { d["heads"].erase(5); }, "heads",
       "must have one entry per layer: 6 (model.layers) (got 5)"},
      {[](Json& d) { d["heads"][2].erase(3); }, "heads[2]",
       "must have one entry per head: 4 (model.heads) (got 3)"},
      {[](Json& d) { d["heads"][2] = 7; }, "heads[2]", "must be a pattern object or an array"},
      {[](Json& d) { d["heads"][2][1] = 3; }, "heads[2][1]", "must be a pattern object (got 3)"},
      {[](Json& d) { d["heads"][2][1]["pattern"] = "sparse"; }, "heads[2][1].pattern",
       "must be one of dense, spatial, temporal, textural, block_sparse, auto"},
      {[](Json& d) { d["heads"][2][1].erase("pattern"); }, "heads[2][1].pattern",
       "is required but missing"},
      {[](Json& d) { d["heads"][2][1].erase("density"); }, "heads[2][1].density",
       "is required but missing"},
      {[](Json& d) { d["heads"][2][1]["density"] = 0; }, "heads[2][1].density",
       "must be a number in (0, 1] (got 0)"},
      {[](Json& d) { d["heads"][2][1]["density"] = 1.01; }, "heads[2][1].density",
       "must be a number in (0, 1] (got 1.01)"},
      {[](Json& d) { d["heads"][2][1]["density"] = nullptr; }, "heads[2][1].density",
       "must be a number"},
      {[](Json& d) { d["heads"][2][1]["keep"] = 0.2; }, "heads[2][1].keep", "unknown key"},
      {[](Json& d) { d["heads"][0][0]["density"] = 0.2; }, "heads[0][0].density", "unknown key"},
      {[](Json& d) { d["heads"][4][3]["keep"] = 0; }, "heads[4][3].keep",
       "must be a number in (0, 1]"},
      {[](Json& d) { d["heads"][4][3].erase("keep"); }, "heads[4][3].keep",
       "is required but missing"},
      {[](Json& d) { d["heads"][4][3]["mask_refresh"] = 0; }, "heads[4][3].mask_refresh",
       "must be an integer in [1, 10000]"},
      {[](Json& d) { d["heads"][4][3]["first_frame_sink"] = "yes"; },
       "heads[4][3].first_frame_sink", "must be true or false"},
      {[](Json& d) { d["heads"][4][3]["density"] = 0.2; }, "heads[4][3].density", "unknown key"},
      {[](Json& d) { d["heads"][4][3]["arm_refresh"] = 2; }, "heads[4][3].arm_refresh",
       "unknown key"},
      {[](Json& d) { d["heads"][3]["arm_refresh"] = 0; }, "heads[3].arm_refresh",
       "must be an integer in [1, 10000]"},
      {[](Json& d) { d["heads"][3].erase("density"); }, "heads[3].density",
       "is required but missing"},
      {[](Json& d) { d["heads"][3]["mask_refresh"] = 2; }, "heads[3].mask_refresh", "unknown key"},
      {[](Json& d) {
         d["heads"] = {{"pattern", "temporal"}, {"density", 2}};
       },
       "heads.density", "must be a number in (0, 1]"},

      {[](Json& d) {
         d["overrides"] = {{"steps", {0, 1}}};
       },
       "overrides", "must be an array of objects"},
      {[](Json& d) { d["overrides"][0] = 1; }, "overrides[0]", "must be an object"},
      {[](Json& d) {
         d["overrides"][0]["steps"] = {3, 3};
       },
       "overrides[0].steps", "must be [begin, end) with begin < end (got [3, 3])"},
      {[](Json& d) {
         d["overrides"][0]["steps"] = {0, 17};
       },
       "overrides[0].steps[1]", "must be a number in [0, 16]"},
      {[](Json& d) {
         d["overrides"][0]["steps"] = {-1, 2};
       },
       "overrides[0].steps[0]", "must be a number in [0, 16]"},
      {[](Json& d) { d["overrides"][0]["steps"] = {1}; }, "overrides[0].steps",
       "must have exactly 2 elements"},
      {[](Json& d) { d["overrides"][0].erase("steps"); }, "overrides[0].steps",
       "is required but missing"},
      {[](Json& d) { d["overrides"][0]["layer"] = 6; }, "overrides[0].layer",
       "must be an integer in [0, 5]"},
      {[](Json& d) { d["overrides"][0]["layer"] = -1; }, "overrides[0].layer",
       "must be an integer in [0, 5]"},
      {[](Json& d) { d["overrides"][1]["head"] = 4; }, "overrides[1].head",
       "must be an integer in [0, 3]"},
      {[](Json& d) { d["overrides"][1].erase("pattern"); }, "overrides[1].pattern",
       "is required but missing"},
      {[](Json& d) { d["overrides"][1]["pattern"]["density"] = -0.5; },
       "overrides[1].pattern.density", "must be a number in (0, 1]"},
      {[](Json& d) { d["overrides"][1]["pattern"]["keep"] = 0.5; }, "overrides[1].pattern.keep",
       "unknown key"},
      {[](Json& d) { d["overrides"][1]["note"] = "x"; }, "overrides[1].note", "unknown key"},

      {[](Json& d) { d["reuse"] = true; }, "reuse", "must be an object"},
      {[](Json& d) { d["reuse"]["kind"] = "fora"; }, "reuse.kind", "must be one of timeripple"},
      {[](Json& d) { d["reuse"].erase("threshold"); }, "reuse.threshold",
       "is required but missing"},
      {[](Json& d) { d["reuse"]["threshold"].erase(0); }, "reuse.threshold",
       "must have one entry per step: 16 (model.steps) (got 15)"},
      {[](Json& d) { d["reuse"]["threshold"][2] = 2.5; }, "reuse.threshold[2]",
       "must be a number in [-1, 2]"},
      {[](Json& d) { d["reuse"]["threshold"][3] = -1.5; }, "reuse.threshold[3]",
       "must be a number in [-1, 2]"},
      {[](Json& d) { d["reuse"]["groups"] = 3; }, "reuse.groups", "unknown key"},

      {[](Json& d) { d["provenance"] = 3; }, "provenance", "must be an object (got 3)"},
  };

  const Json valid = FullDocument();
  REQUIRE(ErrorOf(valid).empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    Json doc = valid;
    cases[i].mutate(doc);
    const std::string expected = "test.json: field '" + cases[i].field + "': " + cases[i].what;
    const std::string message = ErrorOf(doc);
    INFO("case " << i << " expected: " << expected);
    INFO("got: " << message);
    CHECK(message.rfind(expected, 0) == 0);
    CHECK(message.find('\n') == std::string::npos);
  }

  REQUIRE_THROWS_WITH(ScheduleFromJson(Json::array(), "test.json"),
                      "test.json: document: must be an object (got [])");
}

TEST_CASE("ValidateSchedule applies the file's rules to schedules built in code",
          "[kernels][schedule]") {
  const Schedule good = Schedule::Dense(TinyGeometry());
  REQUIRE_NOTHROW(ValidateSchedule(good, "code"));
  const std::vector<std::pair<std::function<void(Schedule&)>, std::string>> cases = {
      {[](Schedule& s) { s.heads[3].pop_back(); },
       "code: field 'heads[3]': must have one entry per head: 4 (model.heads) (got 3)"},
      {[](Schedule& s) {
         s.model.rope_split = {0, 0, 0};
       },
       "code: field 'model.rope_split': must sum to head_dim 32 (got 0)"},
      {[](Schedule& s) {
         s.overrides.push_back(PatternOverride{2, 4, 9, -1, HeadPattern{}});
       },
       "code: field 'overrides[0].layer': must be an integer in [0, 5] (got 9)"},
      {[](Schedule& s) { s.reuse.enabled = true; },
       "code: field 'reuse.threshold': must have one entry per step: 16 (model.steps) (got 0)"},
      {[](Schedule& s) { s.token_budget.assign(16, std::nan("")); },
       "code: field 'token_budget[0]': must be a number in (0, 1] (got nan)"},
      {[](Schedule& s) {
         s.heads[1][2].pattern = PatternKind::kTemporal;
         s.heads[1][2].density = 0;
       },
       "code: field 'heads[1][2].density': must be a number in (0, 1] (got 0)"},
      {[](Schedule& s) { s.provenance = nullptr; },
       "code: field 'provenance': must be an object (got null)"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    Schedule s = good;
    cases[i].first(s);
    REQUIRE_THROWS_WITH(ValidateSchedule(s, "code"), cases[i].second);
  }
}

TEST_CASE("CheckGeometryMatches names the first differing field", "[kernels][schedule]") {
  const Schedule s = Schedule::Dense(TinyGeometry());
  REQUIRE_NOTHROW(CheckGeometryMatches(s, TinyGeometry(), "s.json"));

  ModelGeometry unset_split = TinyGeometry();
  unset_split.rope_split = {0, 0, 0};
  REQUIRE_NOTHROW(CheckGeometryMatches(s, unset_split, "s.json"));

  ModelGeometry big = TinyGeometry();
  big.grid = {16, 32, 32};
  big.steps = 50;  // also differs, but grid comes first
  REQUIRE_THROWS_WITH(CheckGeometryMatches(s, big, "s.json"),
                      "s.json: field 'model.grid': schedule was made for [8,8,8] but the workload "
                      "has [16,32,32]");

  const std::vector<std::pair<std::function<void(ModelGeometry&)>, std::string>> cases = {
      {[](ModelGeometry& m) { m.name = "wan2.1-1.3b"; },
       "field 'model.name': schedule was made for \"tiny-vdit/cpu-tiny\" but the workload has "
       "\"wan2.1-1.3b\""},
      {[](ModelGeometry& m) { m.layers = 30; },
       "field 'model.layers': schedule was made for 6 but "
       "the workload has 30"},
      {[](ModelGeometry& m) { m.heads = 12; }, "field 'model.heads'"},
      {[](ModelGeometry& m) {
         m.head_dim = 64;
         m.rope_split = RopeSplitFor(64);
       },
       "field 'model.head_dim'"},
      {[](ModelGeometry& m) { m.text_tokens = 512; }, "field 'model.text_tokens'"},
      {[](ModelGeometry& m) { m.text_position = TextPosition::kBack; },
       "field 'model.text_position': schedule was made for \"front\" but the workload has "
       "\"back\""},
      {[](ModelGeometry& m) { m.steps = 50; }, "field 'model.steps'"},
      {[](ModelGeometry& m) {
         m.rope_split = {16, 8, 8};
       },
       "field 'model.rope_split': schedule was made for [12,10,10] but the workload has [16,8,8]"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    ModelGeometry m = TinyGeometry();
    cases[i].first(m);
    std::string message;
    try {
      CheckGeometryMatches(s, m, "s.json");
    } catch (const InputError& e) {
      message = e.what();
    }
    INFO("got: " << message);
    CHECK(message.rfind("s.json: " + cases[i].second, 0) == 0);
  }
}

TEST_CASE("LooksLikeSchedule recognises schedule documents only", "[kernels][schedule]") {
  CHECK(LooksLikeSchedule(MinimalDocument()));
  CHECK(LooksLikeSchedule(Json{{"format", "sparsetune.schedule"}, {"version", 99}}));
  CHECK_FALSE(LooksLikeSchedule(Json::array({1, 2})));
  CHECK_FALSE(LooksLikeSchedule(Json{{"format", 1}}));
  CHECK_FALSE(LooksLikeSchedule(Json{{"format", "sparsetune.job"}}));
  CHECK_FALSE(LooksLikeSchedule(
      LoadJsonFile(std::filesystem::path(SPARSETUNE_SOURCE_DIR) / "configs" / "default.json")));
}

TEST_CASE("pattern and model helpers read and write the same objects as the file",
          "[kernels][schedule]") {
  std::mt19937_64 rng(17);
  for (int i = 0; i < 50; ++i) {
    const HeadPattern p = RandomPattern(rng);
    CHECK(HeadPatternFromJson(HeadPatternToJson(p), "p") == p);
  }
  CHECK(ModelGeometryFromJson(ModelGeometryToJson(TinyGeometry()), "m") == TinyGeometry());
  REQUIRE_THROWS_WITH(
      HeadPatternFromJson(Json{{"pattern", "spatial"}, {"density", 0.5}, {"keep", 1}}, "job.json",
                          "head_options[2]"),
      "job.json: field 'head_options[2].keep': unknown key");
  REQUIRE_THROWS_WITH(HeadPatternFromJson(Json{{"pattern", "dense"}, {"x", 1}}, "p"),
                      "p: field 'x': unknown key");
}

}  // namespace sparsetune
