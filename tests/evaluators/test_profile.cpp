// ProfileGeneration / ProfileToJson on the CPU (wall clock) and the `profile` command.
#include <fstream>
#include <string>

#include "core/error.h"
#include "evaluators/profile.h"
#include "evaluators_test_util.h"
#include "tests/catch.h"
#include "tests/test_util.h"

namespace sparsetune::test {
namespace {

TEST_CASE("profile on the CPU times whole generations on the wall clock", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  ProfileOptions options;
  options.warmup = 1;
  options.repeats = 2;
  const ProfileReport p = ProfileGeneration(ev, options);
  CHECK(p.measurement.source == "wall_clock");
  CHECK(p.fallback.empty());  // the config asks for the CPU: no fallback to report
  CHECK(p.workload == "tiny-vdit/test");
  CHECK(p.schedule == "dense");
  CHECK(p.sample.class_id == 0);
  CHECK(p.sample.seed == 1);
  REQUIRE(p.measurement.repeat_ns.size() == 2);
  CHECK(p.measurement.median_ns > 0);
  // One generation = steps x layers attention calls, all dense.
  CHECK(p.stats.calls == 4 * 2);
  CHECK(p.stats.density() == Approx(1.0));
  REQUIRE(p.categories.size() == 1);
  CHECK(p.categories[0].name == "wall");
  CHECK(p.categories[0].launches == 2);

  const Json j = ProfileToJson(p, 10);
  CHECK(j.at("source") == "wall_clock");
  CHECK(j.at("repeats") == 2);
  CHECK(j.at("warmup") == 1);
  REQUIRE(j.at("kernels").size() == 1);
  CHECK(j.at("kernels")[0].at("name") == "region");
  CHECK(j.at("categories")[0].at("share").get<double>() == Approx(1.0));
  CHECK(j.at("categories")[0].at("per_generation_ms").get<double>() ==
        Approx(j.at("categories")[0].at("total_ms").get<double>() / 2));
  CHECK(j.at("repeat_ms").size() == 2);
  CHECK_FALSE(j.contains("fallback"));
}

TEST_CASE("profile runs a schedule and reports its density", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  HeadPattern bs;
  bs.pattern = PatternKind::kBlockSparse;
  bs.keep = 0.3;
  ProfileOptions options;
  options.schedule = UniformSchedule(ev.workload().geometry(), bs, 1);
  options.schedule_name = "bs.json";
  options.warmup = 0;
  options.repeats = 1;
  const ProfileReport p = ProfileGeneration(ev, options);
  CHECK(p.schedule == "bs.json");
  CHECK(p.stats.density() < 1.0);
  CHECK(ProfileToJson(p, 0).at("kernels").empty());
}

TEST_CASE("profile takes the config's repeats and rejects a schedule for another model", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  // Negative warm-up and repeats below 1 take the config's values (SmallJob: 0 and 1).
  ProfileOptions defaults;
  defaults.warmup = -1;
  defaults.repeats = 0;
  const ProfileReport p = ProfileGeneration(ev, defaults);
  CHECK(p.warmup == 0);
  CHECK(p.repeats == 1);

  ProfileOptions other;
  ModelGeometry g = ev.workload().geometry();
  g.layers += 1;
  other.schedule = Schedule::Dense(g);
  other.schedule_name = "other.json";
  REQUIRE_THROWS_AS(ProfileGeneration(ev, other), InputError);
}

TEST_CASE("profile on a cuda config without a device is bad input", "[evaluators]") {
  if (torch::cuda::is_available()) {
    WARN("skipped: a CUDA device is present (the [cuda] tests cover this config)");
    return;
  }
  JobConfig config = SmallJob();
  config.device.device = "cuda";
  REQUIRE_THROWS_AS(MakeWorkload(config), InputError);
}

TEST_CASE("sparsetune profile prints the table, JSON and a Chrome trace", "[evaluators]") {
  TempDir dir;
  // cpu-tiny cut to 2 steps so one generation takes a fraction of a second.
  WriteText(dir / "job.json", R"({
    "name": "profile-test",
    "workload": {"kind": "tiny-vdit", "preset": "cpu-tiny", "steps": 2,
                 "calibration": [{"class": 2, "seed": 9}]},
    "device": {"device": "cpu", "threads": 1},
    "latency": {"warmup": 0, "repeats": 2}
  })");
  const std::string cli = SPARSETUNE_CLI;
  const std::string job = (dir / "job.json").string();
  const std::string trace = (dir / "trace.json").string();

  const CommandResult table = RunCommand(cli + " profile " + job + " --trace " + trace);
  INFO(table.err);
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.find("wall_clock") != std::string::npos);
  CHECK(table.out.find("per category") != std::string::npos);
  CHECK(table.out.find("region") != std::string::npos);
  const Json events = Json::parse(std::ifstream(trace));
  int complete = 0;
  for (const Json& e : events.at("traceEvents")) complete += e.at("ph") == "X" ? 1 : 0;
  CHECK(complete == 2);

  const CommandResult json = RunCommand(cli + " profile " + job + " --json --repeats 1");
  INFO(json.err);
  REQUIRE(json.exit_code == 0);
  const Json j = Json::parse(json.out);
  CHECK(j.at("source") == "wall_clock");
  CHECK(j.at("repeats") == 1);
  CHECK(j.at("sample").at("class") == 2);
  CHECK(j.at("workload") == "tiny-vdit/cpu-tiny");

  const CommandResult missing = RunCommand(cli + " profile " + (dir / "nope.json").string());
  CHECK(missing.exit_code == 2);
  const CommandResult bad_schedule =
      RunCommand(cli + " profile " + job + " --schedule " + SPARSETUNE_SOURCE_DIR +
                 "/configs/schedules/block-sparse-0.2.json");
  CHECK(bad_schedule.exit_code == 2);  // cpu-tiny with 2 steps is another geometry
}

}  // namespace
}  // namespace sparsetune::test
