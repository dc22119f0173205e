// ParetoFront / BestFeasible on hand-made data, and the SQL views `pareto` / `best_feasible`
// against them on seeded random data with ties, infinities, NaNs and every candidate state.
#include <cmath>
#include <limits>
#include <random>

#include "results/store.h"
#include "tests/catch.h"
#include "tests/results/store_backends.h"

using sparsetune::BestFeasible;
using sparsetune::CandidateRecord;
using sparsetune::CandidateState;
using sparsetune::EvalResult;
using sparsetune::Json;
using sparsetune::ParetoFront;
using sparsetune::test::AllBackends;
using sparsetune::test::Backend;
using sparsetune::test::TempDir;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

CandidateRecord Make(int64_t number, CandidateState state, double objective, double speedup,
                     bool feasible) {
  CandidateRecord c;
  c.number = number;
  c.state = state;
  c.objective = objective;
  c.result.speedup = speedup;
  c.feasible = feasible;
  return c;
}

std::vector<int64_t> Numbers(const std::vector<CandidateRecord>& cs) {
  std::vector<int64_t> out;
  for (const CandidateRecord& c : cs) out.push_back(c.number);
  return out;
}

}  // namespace

TEST_CASE("ParetoFront keeps the non-dominated COMPLETE candidates by speedup", "[db]") {
  const auto C = CandidateState::kComplete;
  const std::vector<CandidateRecord> cs = {
      Make(0, C, 30.0, 2.0, true),                        // front
      Make(1, C, 35.0, 1.5, true),                        // front
      Make(2, C, 29.0, 1.9, true),                        // dominated by 0
      Make(3, C, 20.0, kInf, false),                      // front (infinite speedup)
      Make(4, CandidateState::kFail, 99.0, 9.0, false),   // failed: ignored
      Make(5, CandidateState::kRunning, 99.0, 9.0, false),
      Make(6, C, 35.0, 1.5, false),                       // equal to 1: kept too
      Make(7, C, kNaN, 5.0, true),                        // no objective: ignored
      Make(8, C, 40.0, kNaN, true),                       // no speedup: ignored
      Make(9, C, 35.0, 1.2, true),                        // dominated by 1 (same objective)
  };
  CHECK(Numbers(ParetoFront(cs)) == std::vector<int64_t>{1, 6, 0, 3});
  CHECK(ParetoFront({}).empty());
}

TEST_CASE("BestFeasible takes the highest objective, then speedup, then lower number", "[db]") {
  const auto C = CandidateState::kComplete;
  std::vector<CandidateRecord> cs = {
      Make(0, C, 30.0, 2.0, true),
      Make(1, C, 35.0, 1.5, false),                      // infeasible
      Make(2, CandidateState::kFail, 50.0, 3.0, true),   // failed
      Make(3, C, 32.0, kNaN, true),
      Make(4, C, 32.0, 1.1, true),                       // same objective as 3, has a speedup
      Make(5, C, 32.0, 1.1, true),                       // full tie with 4: lower number wins
      Make(6, C, kNaN, 9.0, true),                       // no objective
  };
  std::optional<CandidateRecord> best = BestFeasible(cs);
  REQUIRE(best);
  CHECK(best->number == 4);
  cs.push_back(Make(7, C, 32.0, 1.3, true));
  CHECK(BestFeasible(cs)->number == 7);
  cs.push_back(Make(8, C, 33.0, 0.5, true));
  CHECK(BestFeasible(cs)->number == 8);
  CHECK_FALSE(BestFeasible({Make(0, C, 30.0, 2.0, false)}));
}

TEST_CASE("store: views pareto and best_feasible agree with the C++ definitions", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(20);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto store = Open(backend, dir);
    const double kObjectives[] = {20.0, 25.0, 30.0, 35.0};
    const double kSpeedups[] = {1.0, 1.5, 2.0};
    std::vector<int64_t> jobs;
    for (int j = 0; j < 4; ++j) {
      const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "views"));
      jobs.push_back(job);
      const double feasible_share = j == 3 ? 0.0 : 0.5;  // the last job has no feasible one
      for (int i = 0; i < 60; ++i) {
        const int64_t n = store->start_candidate(job, i / 10, Json{{"i", i}},
                                                 "h" + std::to_string(i), {}, Json::object(),
                                                 "random");
        const double state = u(rng);
        if (state < 0.15) continue;  // stays RUNNING
        EvalResult r = sparsetune::test::RandomResult(rng, 0);
        r.ok = state >= 0.3;
        if (!r.ok) r.error = "failed";
        // Mostly discrete values, so the front has exact ties (continuous ones stay inside the
        // discrete range); some infinities and NaNs on both axes.
        double objective = u(rng) < 0.8 ? kObjectives[rng() % 4] : 20.0 + 15.0 * u(rng);
        const double pick = u(rng);
        r.speedup = pick < 0.7 ? kSpeedups[rng() % 3] : 0.5 + 1.5 * u(rng);
        if (pick > 0.92) r.speedup = kInf;
        if (pick > 0.96) r.speedup = kNaN;
        if (u(rng) < 0.05) objective = kNaN;
        store->finish_candidate(job, n, r, objective, u(rng) < feasible_share);
      }
    }
    size_t front_total = 0;
    int tied_fronts = 0;
    for (int64_t job : jobs) {
      INFO("job " << job);
      const std::vector<CandidateRecord> all = store->candidates(job);
      const std::vector<CandidateRecord> front = store->pareto(job);
      CHECK(Numbers(front) == Numbers(ParetoFront(all)));
      front_total += front.size();
      for (size_t i = 1; i < front.size(); ++i) {
        if (front[i].objective == front[i - 1].objective &&
            front[i].result.speedup == front[i - 1].result.speedup) {
          ++tied_fronts;
          break;
        }
      }
      const std::optional<CandidateRecord> best = store->best_feasible(job);
      const std::optional<CandidateRecord> expected = BestFeasible(all);
      REQUIRE(best.has_value() == expected.has_value());
      if (best) CHECK(best->number == expected->number);
    }
    CHECK_FALSE(store->best_feasible(jobs[3]));
    // The data must exercise ties: some front has two candidates equal in both coordinates.
    CHECK(front_total >= jobs.size());
    CHECK(tied_fronts > 0);
    REQUIRE_THROWS_AS(store->pareto(99), sparsetune::StoreError);
    REQUIRE_THROWS_AS(store->best_feasible(99), sparsetune::StoreError);
  }
}
