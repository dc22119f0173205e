#include "search/space.h"

#include <random>
#include <set>

#include "core/error.h"
#include "search/operators.h"
#include "tests/catch.h"
#include "tests/search/fakes.h"

using namespace sparsetune;
using sparsetune::test::ToyConfig;
using sparsetune::test::ToyGeometry;

TEST_CASE("FNV-1a 64 matches the published test vectors", "[search]") {
  CHECK(Fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(Fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(Fnv1a64("foobar") == 0x85944171f73967e8ULL);
}

TEST_CASE("genome hash is the FNV-1a of the canonical JSON and stable", "[search]") {
  Genome g;
  g.warmup = 1;
  g.budgets = {3, 3, 0, 1};
  g.heads = {0, 2, 1, 4};
  const std::string canonical =
      R"({"budgets":[3,3,0,1],"heads":[[0,2],[1,4]],"reuse":[],"warmup":1})";
  CHECK(GenomeToJson(g, 2).dump() == canonical);
  char expected[17];
  std::snprintf(expected, sizeof(expected), "%016llx",
                static_cast<unsigned long long>(Fnv1a64(canonical)));
  CHECK(GenomeHash(g, 2) == expected);
  CHECK(GenomeHash(g, 2).size() == 16);
  Genome h = g;
  h.heads[3] = 3;
  CHECK(GenomeHash(h, 2) != GenomeHash(g, 2));
}

TEST_CASE("search space lists the configured options in canonical order", "[search]") {
  JobConfig c = ToyConfig();
  c.space.patterns = {"block_sparse", "auto", "temporal", "dense"};
  c.schedule.first_frame_sink = false;
  c.schedule.mask_refresh = 3;
  c.schedule.arm_refresh = 5;
  c.space.budgets = {0.7, 0.3, 0.5};
  const SearchSpace space(c, ToyGeometry());
  CHECK(space.budget_grid() == std::vector<double>{0.3, 0.5, 0.7, 1.0});
  const auto& o = space.head_options();
  REQUIRE(o.size() == 1 + 2 + 2 + 2);
  CHECK(o[0] == Json{{"pattern", "dense"}});
  CHECK(o[1] == Json{{"pattern", "temporal"}, {"density", 0.15}});
  CHECK(o[3] == Json{{"pattern", "block_sparse"},
                     {"keep", 0.2},
                     {"first_frame_sink", false},
                     {"mask_refresh", 3}});
  CHECK(o[6] == Json{{"pattern", "auto"}, {"density", 0.3}, {"arm_refresh", 5}});
  CHECK(space.option_costs()[4] == Approx(0.4));
  CHECK(space.FindOption("block_sparse", 0.35) == 4);
  CHECK(space.FindOption("spatial", 0.2) == -1);
  CHECK(space.GeneCount() == 1 + 6 + 6);
}

TEST_CASE("genome JSON round trip keeps every gene", "[search]") {
  JobConfig c = ToyConfig();
  c.space.reuse_thresholds = {0.9, 0.95};
  const SearchSpace space(c, ToyGeometry());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20; ++i) {
    const Genome g = RandomGenome(space, rng);
    const Genome back = space.FromJson(space.ToJson(g), "db");
    CHECK(back == g);
    CHECK(space.Hash(back) == space.Hash(g));
  }
}

TEST_CASE("genome JSON errors name the field", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry());
  Json j = space.ToJson(space.Dense());
  SECTION("head index out of range") {
    j["heads"][1][2] = 99;
    REQUIRE_THROWS_WITH(space.FromJson(j, "db"),
                        "db: field 'genome.heads[5]': must be an index in [0, 7) (got 99)");
  }
  SECTION("wrong layer count") {
    j["heads"].erase(1);
    REQUIRE_THROWS_AS(space.FromJson(j, "db"), InputError);
  }
  SECTION("budget list too short") {
    j["budgets"].erase(0);
    REQUIRE_THROWS_WITH(space.FromJson(j, "db"),
                        "db: field 'genome.budgets': must have 6 entries (got 5)");
  }
  SECTION("unknown key") {
    j["extra"] = 1;
    REQUIRE_THROWS_AS(space.FromJson(j, "db"), InputError);
  }
}

TEST_CASE("a geometry without layers, heads or steps is rejected", "[search]") {
  Json g = ToyGeometry();
  g.erase("steps");
  REQUIRE_THROWS_WITH(SearchSpace(ToyConfig(), g), "model geometry: field 'model.steps': missing");
  g = ToyGeometry();
  g["heads"] = 0;
  REQUIRE_THROWS_AS(SearchSpace(ToyConfig(), g), InputError);
}

TEST_CASE("ToSchedule writes a complete schedule v1 document", "[search]") {
  JobConfig c = ToyConfig();
  c.space.reuse_thresholds = {0.9};
  const SearchSpace space(c, ToyGeometry());
  Genome g = space.UniformBudget(0.5);
  g.warmup = 1;  // two warm-up steps
  g.heads = {0, 1, 2, 3, 4, 5};
  g.reuse = {1, 1, 1, 0, 1, 1};
  space.Normalize(&g);
  const Json s = space.ToSchedule(g);
  CHECK(s["format"] == "sparsetune.schedule");
  CHECK(s["version"] == 1);
  CHECK(s["model"] == ToyGeometry());
  CHECK(s["block_size"] == 32);
  CHECK(s["token_order"] == Json{{"kind", "tiles"}, {"tile", {1, 4, 4}}});
  CHECK(s["dense_warmup_steps"] == 2);
  CHECK(s["token_budget"] == Json{1.0, 1.0, 0.5, 0.5, 0.5, 0.5});
  REQUIRE(s["heads"].size() == 2);
  REQUIRE(s["heads"][0].size() == 3);
  CHECK(s["heads"][0][0] == Json{{"pattern", "dense"}});
  CHECK(s["heads"][1][2] == space.head_options()[5]);
  CHECK(s["reuse"] == Json{{"kind", "timeripple"},
                           {"threshold",
                            {SearchSpace::kReuseOff, SearchSpace::kReuseOff, 0.9,
                             SearchSpace::kReuseOff, 0.9, 0.9}}});
  c.schedule.token_order = "raster";
  c.space.reuse_thresholds.clear();
  const SearchSpace raster(c, ToyGeometry());
  const Json r = raster.ToSchedule(raster.Dense());
  CHECK(r["token_order"] == Json{{"kind", "raster"}});
  CHECK_FALSE(r.contains("reuse"));
  CHECK(r["dense_warmup_steps"] == 1);
}

TEST_CASE("normalisation makes genomes with the same schedule hash equally", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry());
  Genome a = space.UniformBudget(0.3);
  Genome b = a;
  b.budgets[0] = 1;  // step 0 is a warm-up step: its budget gene cannot matter
  CHECK(space.ToSchedule(a) == space.ToSchedule(b));
  CHECK(space.Hash(a) != space.Hash(b));
  space.Normalize(&b);
  CHECK(space.Hash(a) == space.Hash(b));
}

TEST_CASE("named seeds", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry());
  const Genome dense = space.Dense();
  CHECK(space.ToSchedule(dense)["token_budget"] == Json{1.0, 1.0, 1.0, 1.0, 1.0, 1.0});
  CHECK(space.UniformBudget(0.42).budgets.back() == 1);  // nearest grid value 0.5
  CHECK(space.UniformBudget(0.6).budgets.back() == 2);   // tie 0.5 / 0.7 goes to 0.7
  const Genome heads = space.UniformHeads(5);
  CHECK(std::set<int64_t>(heads.heads.begin(), heads.heads.end()) == std::set<int64_t>{5});
  const Genome chosen = space.FromHeadChoices({{0, 1, 2}, {3, 4, 5}});
  CHECK(chosen.heads == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  REQUIRE_THROWS_AS(space.FromHeadChoices({{0, 1, 2}}), InputError);
  REQUIRE_THROWS_AS(space.FromHeadChoices({{0, 1, 2}, {0, 1, 77}}), InputError);
  REQUIRE_THROWS_AS(space.UniformHeads(-1), InputError);
}
