#include "core/error.h"
#include "core/job_config.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using sparsetune::InputError;
using sparsetune::Json;

namespace {

Json ValidConfig() {
  return Json::parse(R"({
    "name": "t",
    "workload": {"kind": "tiny-vdit", "preset": "cpu-tiny", "weights": "w.safetensors",
                 "calibration": [{"class": 1, "seed": 5}], "heldout": [{"class": 2, "seed": 9}]},
    "device": {"device": "cpu", "threads": 2},
    "latency": {"warmup": 1, "repeats": 3},
    "schedule": {"block_size": 32, "token_order": "tiles", "tile": [1, 4, 4]},
    "search_space": {"budgets": [0.5, 1.0], "patterns": ["dense", "block_sparse"],
                     "keeps": [0.2]},
    "search": {"strategy": "evolutionary", "population": 8, "generations": 2, "seed": 3},
    "objective": {"metric": "psnr", "min_speedup": 1.5},
    "store": "out/db.sqlite"
  })");
}

std::string ErrorOf(const Json& doc) {
  try {
    sparsetune::ParseJobConfig(doc, "job.json", "/cfg");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("A valid job config is read with paths resolved against its folder", "[core]") {
  const sparsetune::JobConfig job = sparsetune::ParseJobConfig(ValidConfig(), "job.json", "/cfg");
  CHECK(job.name == "t");
  CHECK(job.workload.preset == "cpu-tiny");
  REQUIRE(job.workload.weights.has_value());
  CHECK(*job.workload.weights == std::filesystem::path("/cfg/w.safetensors"));
  REQUIRE(job.workload.calibration.size() == 1);
  CHECK(job.workload.calibration[0].class_id == 1);
  CHECK(job.workload.calibration[0].seed == 5);
  CHECK(job.workload.heldout[0].seed == 9);
  CHECK(job.device.threads == 2);
  CHECK(job.search.population == 8);
  CHECK(job.search.seed == 3);
  CHECK(job.space.keeps == std::vector<double>{0.2});
  REQUIRE(job.objective.min_speedup.has_value());
  CHECK(*job.objective.min_speedup == Approx(1.5));
  CHECK(job.store == std::filesystem::path("/cfg/out/db.sqlite"));
}

TEST_CASE("Job config errors name the field", "[core]") {
  struct Case {
    const char* pointer;  // JSON pointer to change
    Json value;           // new value (null with remove = true removes)
    bool remove;
    const char* expected;
  };
  const Case cases[] = {
      {"/bogus", 1, false, "job.json: field 'bogus': unknown key"},
      {"/workload/kind", "video", false,
       "job.json: field 'workload.kind': must be one of tiny-vdit, trace, shape (got \"video\")"},
      {"/workload/calibration", nullptr, true,
       "job.json: field 'workload.calibration': is required but missing"},
      {"/workload/calibration/0/seed", -1, false,
       "job.json: field 'workload.calibration[0].seed': must be an integer in [0, "
       "9007199254740992] (got -1)"},
      {"/workload/calibration/0/colour", 1, false,
       "job.json: field 'workload.calibration[0].colour': unknown key"},
      {"/search/population", 1, false,
       "job.json: field 'search.population': must be an integer in [2, 100000] (got 1)"},
      {"/search/elites", 8, false,
       "job.json: field 'search.elites': must be smaller than search.population (8)"},
      {"/search_space/patterns", Json::array({"dense", "diagonal"}), false,
       "job.json: field 'search_space.patterns[1]': unknown pattern \"diagonal\" (expected dense, "
       "spatial, temporal, textural, block_sparse or auto)"},
      {"/search_space/budgets", Json::array({1.0}), false,
       "job.json: field 'search_space': empty search space: no sparse pattern, no token budget "
       "below 1 and no reuse threshold to search (set search_space.patterns, budgets or "
       "reuse_thresholds)"},
      {"/objective/min_speedup", 0, false,
       "job.json: field 'objective.min_speedup': must be > 0 (got 0)"},
      {"/device/dtype", "bfloat16", false,
       "job.json: field 'device.dtype': must be float32 on the cpu device (got \"bfloat16\")"},
      {"/schedule/tile", Json::array({1, 4}), false,
       "job.json: field 'schedule.tile': must have exactly 3 elements (got 2)"},
  };
  for (const Case& c : cases) {
    Json doc = ValidConfig();
    if (std::string(c.pointer) == "/search_space/budgets") {
      doc["search_space"]["patterns"] = Json::array({"dense"});
    }
    const Json::json_pointer ptr(c.pointer);
    if (c.remove) {
      doc[ptr.parent_pointer()].erase(ptr.back());
    } else {
      doc[ptr] = c.value;
    }
    INFO(c.pointer);
    CHECK(ErrorOf(doc) == c.expected);
  }
}

TEST_CASE("LoadJobConfig reports a missing file", "[core]") {
  sparsetune::test::TempDir dir;
  CHECK_THROWS_WITH(sparsetune::LoadJobConfig(dir / "missing.json"),
                    (dir / "missing.json").string() + ": file not found");
}
