#include "search/cost_model.h"

#include <cmath>
#include <limits>
#include <random>

#include "search/operators.h"
#include "tests/catch.h"
#include "tests/search/fakes.h"

using namespace sparsetune;
using sparsetune::test::ToyConfig;
using sparsetune::test::ToyGeometry;

TEST_CASE("the cost model starts from the analytic prior", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry());
  CostModel model(space);
  CHECK(model.samples() == 0);
  CHECK(model.predict(space.Dense()) == Approx(1.0));
  model.fit();  // no data: the prior again
  CHECK(model.predict(space.Dense()) == Approx(1.0));
  const CostModel::Vector f = model.features(space.UniformBudget(0.5));
  // 2 warm-up steps at 1, four at 0.5; dense heads.
  CHECK(f(1) == Approx((2 + 4 * 0.5) / 6.0));
  CHECK(f(2) == Approx((2 + 4 * 0.5) / 6.0));
  CHECK(f(3) == 0);
  model.add(space.Dense(), std::nan(""));
  model.add(space.Dense(), -1);
  CHECK(model.samples() == 0);
}

TEST_CASE("the cost model recovers a known linear latency function from noisy samples",
          "[search]") {
  JobConfig c = ToyConfig();
  c.space.reuse_thresholds = {0.9, 0.95};
  const SearchSpace space(c, ToyGeometry(3, 4, 8));
  CostModel::Vector truth;
  truth << 0.15, 0.25, 0.55, -0.08;
  std::mt19937_64 rng(17);
  std::normal_distribution<double> noise(0.0, 0.005);
  CostModel model(space, 1e-3);
  std::vector<Genome> genomes;
  for (int i = 0; i < 300; ++i) {
    const Genome g = RandomGenome(space, rng);
    genomes.push_back(g);
    model.add(g, truth.dot(model.features(g)) + noise(rng));
  }
  model.fit();
  CHECK(model.samples() == 300);
  for (int k = 0; k < CostModel::kFeatures; ++k) {
    CHECK(model.coefficients()(k) == Approx(truth(k)).margin(0.03));
  }
  for (size_t i = 0; i < 20; ++i) {
    CHECK(model.predict(genomes[i]) == Approx(truth.dot(model.features(genomes[i]))).margin(0.01));
  }
}

TEST_CASE("repair moves a genome to the constraint on the model", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry(4, 4, 10));
  CostModel model(space);
  std::mt19937_64 rng(8);
  const double target = 1.0 / 2.5;
  for (int i = 0; i < 20; ++i) {
    Genome g = RandomGenome(space, rng);
    // Start from a dense-ish genome so repair has work to do.
    for (size_t s = 0; s < g.budgets.size(); ++s) g.budgets[s] = space.full_budget_index();
    int64_t moves = 0;
    const Genome r = Repair(g, space, model, target, rng, &moves);
    CHECK(moves > 0);
    CHECK(model.predict(r) <= target);
    // Only downward moves, warm-up steps untouched.
    for (size_t s = 0; s < r.budgets.size(); ++s) CHECK(r.budgets[s] <= g.budgets[s]);
    for (int64_t s = 0; s < space.warmup_of(r); ++s) CHECK(r.budgets[s] == g.budgets[s]);
    for (size_t h = 0; h < r.heads.size(); ++h) {
      CHECK(space.option_costs()[r.heads[h]] <= space.option_costs()[g.heads[h]]);
    }
    CHECK(r.warmup == g.warmup);
  }
}

TEST_CASE("repair is deterministic and leaves a feasible genome alone", "[search]") {
  const SearchSpace space(ToyConfig(), ToyGeometry());
  CostModel model(space);
  std::mt19937_64 a(3), b(3);
  const Genome dense = space.Dense();
  CHECK(Repair(dense, space, model, 0.5, a) == Repair(dense, space, model, 0.5, b));
  int64_t moves = -1;
  CHECK(Repair(dense, space, model, 1.5, a, &moves) == dense);
  CHECK(moves == 0);
  CHECK(Repair(dense, space, model, std::numeric_limits<double>::infinity(), a) == dense);
  // An unreachable target: every gene goes as low as it can, then repair stops.
  const Genome floor = Repair(dense, space, model, 0.01, a, &moves);
  CHECK(moves > 0);
  for (int64_t s = space.warmup_of(floor); s < space.steps(); ++s) CHECK(floor.budgets[s] == 0);
  for (int64_t option : floor.heads) CHECK(space.option_costs()[option] == Approx(0.15));
}

TEST_CASE("the latency target combines speedup and latency constraints", "[search]") {
  ObjectiveConfig o;
  CHECK(std::isinf(TargetLatencyRatio(o, 10)));
  o.min_speedup = 2;
  CHECK(TargetLatencyRatio(o, 10) == Approx(0.5));
  o.max_latency_ms = 4;
  CHECK(TargetLatencyRatio(o, 10) == Approx(0.4));
  CHECK(TargetLatencyRatio(o, std::nan("")) == Approx(0.5));
  o.min_speedup.reset();
  CHECK(std::isinf(TargetLatencyRatio(o, std::nan(""))));
}
