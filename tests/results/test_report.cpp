// Tables and JSON printed by `sparsetune results`.
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "results/report.h"
#include "tests/catch.h"
#include "tests/results/store_backends.h"

using sparsetune::CandidateRecord;
using sparsetune::EvalResult;
using sparsetune::FormatNumber;
using sparsetune::FormatTable;
using sparsetune::Json;

TEST_CASE("FormatNumber shows NaN as '-' and infinities as inf", "[db]") {
  CHECK(FormatNumber(31.23456, 2) == "31.23");
  CHECK(FormatNumber(-0.5, 3) == "-0.500");
  CHECK(FormatNumber(std::nan(""), 2) == "-");
  CHECK(FormatNumber(std::numeric_limits<double>::infinity(), 2) == "inf");
  CHECK(FormatNumber(-std::numeric_limits<double>::infinity(), 2) == "-inf");
}

TEST_CASE("FormatTable aligns text left and numbers right", "[db]") {
  const std::string table = FormatTable({"name", "value"}, {{"a", "1.5"}, {"longer", "-"},
                                                            {"b", "123.25"}});
  CHECK(table ==
        "name     value\n"
        "a          1.5\n"
        "longer       -\n"
        "b       123.25\n");
}

TEST_CASE("job summary, tables and JSON reflect the store", "[db]") {
  std::mt19937 rng(30);
  auto store = sparsetune::MakeMemoryStore();
  const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "report"));
  const EvalResult good = sparsetune::test::RandomResult(rng);
  EvalResult bad;
  bad.error = "NaN in output\nsecond line is dropped in tables";
  store->finish_candidate(job, store->start_candidate(job, 0, Json::object(), "a", {}, {},
                                                      "seed:dense"),
                          good, good.psnr, true);
  store->finish_candidate(job, store->start_candidate(job, 1, Json::object(), "b", {0}, {},
                                                      "mutation"),
                          bad, 0.0, false);
  store->start_candidate(job, 1, Json::object(), "c", {0}, {}, "mutation");
  store->save_baseline(job, good);

  const sparsetune::JobOverview s = sparsetune::OverviewOfJob(*store, job);
  CHECK(s.complete == 1);
  CHECK(s.failed == 1);
  CHECK(s.running == 1);
  CHECK(s.pareto_size == 1);
  REQUIRE(s.best);
  CHECK(s.best->number == 0);

  const Json j = ToJson(s);
  CHECK(j["job"]["name"] == "report");
  CHECK(j["candidates"]["failed"] == 1);
  CHECK(j["best_feasible"]["number"] == 0);
  CHECK(j["best_feasible"]["psnr"].get<double>() == good.psnr);
  CHECK(j["baseline"]["latency_ms"].get<double>() == good.latency_ms);

  const std::vector<CandidateRecord> all = store->candidates(job);
  const Json failed = ToJson(all[1]);
  CHECK(failed["state"] == "FAIL");
  CHECK(failed["psnr"].is_null());
  CHECK(failed["objective"].is_null());
  CHECK(failed["error"] == bad.error);
  CHECK(failed["parents"] == Json::array({0}));
  CHECK_FALSE(failed.contains("schedule"));

  std::istringstream table(sparsetune::CandidateTable(all));
  std::string header, row0, row1, row2, extra;
  std::getline(table, header);
  std::getline(table, row0);
  std::getline(table, row1);
  std::getline(table, row2);
  CHECK_FALSE(std::getline(table, extra));
  CHECK(header.rfind("number  generation  state", 0) == 0);
  CHECK(row0.find(FormatNumber(good.psnr, 2)) != std::string::npos);
  CHECK(row0.find("yes") != std::string::npos);
  CHECK(row1.find("NaN in output") != std::string::npos);
  CHECK(row1.find("second line") == std::string::npos);
  CHECK(row2.find("RUNNING") != std::string::npos);

  const std::string jobs = sparsetune::JobTable({s});
  CHECK(jobs.find("report") != std::string::npos);
  const std::string details = sparsetune::JobDetails(s);
  CHECK(details.find("1 complete, 1 failed, 1 running; Pareto front 1") != std::string::npos);
  CHECK(details.find("best        #0") != std::string::npos);
  REQUIRE_THROWS_AS(sparsetune::OverviewOfJob(*store, 42), sparsetune::StoreError);
}
