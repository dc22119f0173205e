#include <algorithm>
#include <random>
#include <set>

#include "core/error.h"
#include "search/evolutionary.h"
#include "search/nsga2.h"
#include "search/objective.h"
#include "search/operators.h"
#include "search/random_search.h"
#include "search/seeds.h"
#include "tests/catch.h"
#include "tests/search/fakes.h"

using namespace sparsetune;
using sparsetune::test::FakeEvaluator;
using sparsetune::test::ToyConfig;
using sparsetune::test::ToyGeometry;

namespace {

Score Feasible(double objective, double speedup) {
  Score s;
  s.ok = true;
  s.feasible = true;
  s.objective = objective;
  s.speedup = speedup;
  return s;
}

Score Infeasible(double objective, double violation) {
  Score s;
  s.ok = true;
  s.objective = objective;
  s.speedup = 1.0;
  s.violation = violation;
  return s;
}

Score Failed() { return Score(); }

Evaluated Member(int64_t number, Score score) {
  Evaluated e;
  e.number = number;
  e.score = score;
  return e;
}

// Drives a strategy to the end with the fake evaluator, batch by batch; returns every proposal.
std::vector<Proposal> Drive(SearchStrategy& strategy, const SearchSpace& space, size_t batch,
                            const ObjectiveConfig& objective) {
  FakeEvaluator evaluator;
  std::vector<Proposal> all;
  int64_t number = 0;
  while (!strategy.finished()) {
    std::vector<Proposal> props = strategy.propose(batch);
    REQUIRE_FALSE(props.empty());
    REQUIRE(props.size() <= batch);
    std::vector<Evaluated> done;
    for (const Proposal& p : props) {
      Evaluated e;
      e.genome = p.genome;
      e.number = number++;
      e.result = evaluator.Evaluate(space.ToSchedule(p.genome));
      e.score = ScoreOf(objective, e.result);
      done.push_back(e);
      all.push_back(p);
    }
    strategy.notify(done);
  }
  return all;
}

}  // namespace

TEST_CASE("an infeasible candidate never ranks above a feasible one", "[search]") {
  const Score good = Feasible(40, 2.0), poor = Feasible(12, 1.7);
  const Score close = Infeasible(60, 0.01), far = Infeasible(80, 0.5);
  CHECK(Better(poor, close));
  CHECK_FALSE(Better(close, poor));
  CHECK(Better(good, poor));
  CHECK(Better(close, far));  // smaller violation first, whatever the quality
  CHECK(Better(far, Failed()));
  CHECK_FALSE(Better(Failed(), far));
  CHECK(Better(Feasible(30, 2.5), Feasible(30, 2.0)));  // tie on objective: faster first
  CHECK_FALSE(Better(good, good));

  ObjectiveConfig o;
  o.min_speedup = 2.0;
  EvalResult r;
  r.ok = true;
  r.psnr = 50;
  r.ssim = 0.9;
  r.speedup = 1.5;
  r.latency_ms = 8;
  Score s = ScoreOf(o, r);
  CHECK_FALSE(s.feasible);
  CHECK(s.violation == Approx(0.25));
  CHECK(s.objective == 50);
  o.metric = "ssim";
  o.min_speedup.reset();
  o.max_latency_ms = 10;
  s = ScoreOf(o, r);
  CHECK(s.feasible);
  CHECK(s.objective == Approx(0.9));
  r.ok = false;
  CHECK_FALSE(ScoreOf(o, r).feasible);
  CHECK(std::isnan(ScoreOf(o, r).objective));
}

TEST_CASE("tournament selection picks the better entrant", "[search]") {
  std::vector<Evaluated> pop = {Member(0, Feasible(20, 2)), Member(1, Infeasible(90, 0.1)),
                                Member(2, Feasible(35, 2)), Member(3, Failed()),
                                Member(4, Feasible(30, 3))};
  std::mt19937_64 rng(11);
  // With a large tournament every member enters: the best feasible must win.
  for (int i = 0; i < 10; ++i) CHECK(TournamentSelect(pop, 200, rng) == 2);
  // Size 1 is a uniform draw: every member is picked sometimes.
  std::set<size_t> picked;
  for (int i = 0; i < 200; ++i) picked.insert(TournamentSelect(pop, 1, rng));
  CHECK(picked.size() == pop.size());
}

TEST_CASE("uniform crossover takes each gene from one of the parents", "[search]") {
  std::mt19937_64 rng(5);
  std::vector<int64_t> a(64), b(64);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<int64_t>(i);
    b[i] = 1000 + static_cast<int64_t>(i);
  }
  const auto child = UniformCrossover(a, b, rng);
  size_t from_a = 0, from_b = 0;
  for (size_t i = 0; i < child.size(); ++i) {
    REQUIRE((child[i] == a[i] || child[i] == b[i]));
    (child[i] == a[i] ? from_a : from_b)++;
  }
  CHECK(from_a > 10);
  CHECK(from_b > 10);
}

TEST_CASE("one-point crossover joins a prefix of one parent to the suffix of the other",
          "[search]") {
  const std::vector<int64_t> a = {1, 2, 3, 4, 5}, b = {6, 7, 8, 9, 10};
  CHECK(OnePointCrossover(a, b, 2) == std::vector<int64_t>{1, 2, 8, 9, 10});
  std::mt19937_64 rng(9);
  std::set<size_t> cuts;
  for (int i = 0; i < 200; ++i) cuts.insert(DrawCut(a.size(), rng));
  CHECK(cuts == std::set<size_t>{1, 2, 3, 4});

  const SearchSpace space(ToyConfig(), ToyGeometry());
  std::mt19937_64 g(2);
  const Genome pa = RandomGenome(space, g), pb = RandomGenome(space, g);
  const Genome child = Crossover(pa, pb, g);
  size_t cut = 0;
  while (cut < child.budgets.size() && child.budgets[cut] == pa.budgets[cut]) ++cut;
  for (size_t s = cut; s < child.budgets.size(); ++s) CHECK(child.budgets[s] == pb.budgets[s]);
  for (size_t h = 0; h < child.heads.size(); ++h) {
    CHECK((child.heads[h] == pa.heads[h] || child.heads[h] == pb.heads[h]));
  }
  CHECK((child.warmup == pa.warmup || child.warmup == pb.warmup));
}

TEST_CASE("mutation rate 0 keeps the genome, rate 1 changes every free gene", "[search]") {
  JobConfig c = ToyConfig();
  c.space.reuse_thresholds = {0.9};
  const SearchSpace space(c, ToyGeometry());
  std::mt19937_64 rng(21);
  const Genome g = RandomGenome(space, rng);
  CHECK(Mutate(g, space, 0.0, rng) == g);
  const Genome m = Mutate(g, space, 1.0, rng);
  CHECK(m.warmup != g.warmup);
  for (size_t s = 0; s < g.budgets.size(); ++s) CHECK(m.budgets[s] != g.budgets[s]);
  for (size_t h = 0; h < g.heads.size(); ++h) CHECK(m.heads[h] != g.heads[h]);
  for (size_t s = 0; s < g.reuse.size(); ++s) CHECK(m.reuse[s] != g.reuse[s]);
  space.Check(m, "mutant");
}

TEST_CASE("elitism keeps the best feasible candidates", "[search]") {
  std::vector<Evaluated> pop = {Member(0, Infeasible(90, 0.1)), Member(1, Feasible(20, 2)),
                                Member(2, Failed()), Member(3, Feasible(35, 2)),
                                Member(4, Feasible(35, 2))};
  CHECK(BestIndices(pop, 2) == std::vector<size_t>{3, 4});
  CHECK(BestIndices(pop, 4) == std::vector<size_t>{3, 4, 1, 0});

  // In a whole run the best feasible candidate seen so far stays in the population.
  const JobConfig c = ToyConfig();
  const SearchSpace space(c, ToyGeometry());
  StrategyContext ctx{&c, &space, nullptr, FakeEvaluator::kDenseMs};
  EvolutionarySearch ea(ctx);
  FakeEvaluator evaluator;
  int64_t number = 0;
  std::optional<Score> best;
  while (!ea.finished()) {
    std::vector<Evaluated> done;
    for (const Proposal& p : ea.propose(0)) {
      Evaluated e;
      e.genome = p.genome;
      e.number = number++;
      e.result = evaluator.Evaluate(space.ToSchedule(p.genome));
      e.score = ScoreOf(c.objective, e.result);
      if (!best || Better(e.score, *best)) best = e.score;
      done.push_back(e);
    }
    ea.notify(done);
    REQUIRE(ea.generation_complete());
    const auto top = BestIndices(ea.population(), 1);
    REQUIRE(top.size() == 1);
    CHECK_FALSE(Better(*best, ea.population()[top[0]].score));
    CHECK(static_cast<int64_t>(ea.population().size()) == c.search.population);
  }
  CHECK(number == ea.planned());
  REQUIRE(best);
  CHECK(best->feasible);
}

TEST_CASE("NSGA-II ranks a hand-made front exactly", "[search]") {
  const std::vector<Score> s = {
      Feasible(30, 1.0),    // 0 A  front 0
      Feasible(25, 2.0),    // 1 B  front 0
      Feasible(20, 3.0),    // 2 C  front 0
      Feasible(24, 1.5),    // 3 D  dominated by B
      Feasible(19, 2.9),    // 4 E  dominated by C
      Feasible(18, 1.0),    // 5 F  dominated by D and E
      Infeasible(99, 0.1),  // 6 G  below every feasible one
      Infeasible(99, 0.5),  // 7 H  dominated by G
      Failed(),             // 8 I  last
  };
  CHECK(NonDominatedRanks(s) == std::vector<int64_t>{0, 0, 0, 1, 1, 2, 3, 4, 5});
  CHECK(Dominates(s[1], s[3]));
  CHECK_FALSE(Dominates(s[0], s[1]));
  CHECK_FALSE(Dominates(s[1], s[0]));

  const auto d = CrowdingDistances(s, {0, 1, 2});
  CHECK(std::isinf(d[0]));
  CHECK(d[1] == Approx(2.0));  // (30-20)/10 + (3-1)/2
  CHECK(std::isinf(d[2]));

  const std::vector<Score> front = {Feasible(10, 4), Feasible(20, 3), Feasible(35, 2),
                                    Feasible(40, 1)};
  const auto f = CrowdingDistances(front, {0, 1, 2, 3});
  CHECK(std::isinf(f[0]));
  CHECK(f[1] == Approx(25.0 / 30.0 + 2.0 / 3.0));
  CHECK(f[2] == Approx(20.0 / 30.0 + 2.0 / 3.0));
  CHECK(std::isinf(f[3]));

  CHECK(Nsga2Select(s, 4) == std::vector<size_t>{0, 2, 1, 3});
  CHECK(Nsga2Select(s, 6) == std::vector<size_t>{0, 2, 1, 3, 4, 5});
  // The last front is cut by crowding: of {1, 2 interior} the more isolated one survives.
  CHECK(Nsga2Select(front, 3) == std::vector<size_t>{0, 3, 1});
}

TEST_CASE("random search is reproducible for a seed and respects batches", "[search]") {
  const JobConfig c = ToyConfig("random", 99);
  const SearchSpace space(c, ToyGeometry());
  StrategyContext ctx{&c, &space, nullptr, FakeEvaluator::kDenseMs};
  RandomSearch a(ctx), b(ctx);
  const auto pa = Drive(a, space, 3, c.objective);
  const auto pb = Drive(b, space, 5, c.objective);
  REQUIRE(static_cast<int64_t>(pa.size()) == a.planned());
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) CHECK(pa[i].genome == pb[i].genome);
  CHECK(pa.back().generation == c.search.generations);

  const JobConfig other = ToyConfig("random", 100);
  StrategyContext ctx2{&other, &space, nullptr, FakeEvaluator::kDenseMs};
  RandomSearch d(ctx2);
  const auto pd = Drive(d, space, 8, other.objective);
  size_t same = 0;
  for (size_t i = 0; i < pa.size(); ++i) same += pa[i].genome == pd[i].genome;
  CHECK(same < pa.size());
}

TEST_CASE("a strategy proposes nothing while a generation awaits its results", "[search]") {
  const JobConfig c = ToyConfig("nsga2");
  const SearchSpace space(c, ToyGeometry());
  StrategyContext ctx{&c, &space, nullptr, FakeEvaluator::kDenseMs};
  Nsga2Search s(ctx);
  const auto first = s.propose(100);
  CHECK(static_cast<int64_t>(first.size()) == c.search.population);
  CHECK(s.propose(100).empty());
  CHECK_FALSE(s.generation_complete());
  std::vector<Evaluated> too_many(first.size() + 1);
  REQUIRE_THROWS_AS(s.notify(too_many), RunError);
}

TEST_CASE(
    "evolutionary and NSGA-II runs are reproducible and honour the constraint better "
    "than their seeds",
    "[search]") {
  for (const char* name : {"evolutionary", "nsga2"}) {
    const JobConfig c = ToyConfig(name, 4);
    const SearchSpace space(c, ToyGeometry());
    StrategyContext ctx{&c, &space, FakeEvaluator().head_advice(space.head_options()),
                        FakeEvaluator::kDenseMs};
    auto a = MakeStrategy(ctx), b = MakeStrategy(ctx);
    const auto pa = Drive(*a, space, 4, c.objective);
    const auto pb = Drive(*b, space, 8, c.objective);
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); ++i)
      CHECK(space.Hash(pa[i].genome) == space.Hash(pb[i].genome));
    // Children are repaired toward the constraint: most of them are feasible.
    FakeEvaluator evaluator;
    size_t children = 0, feasible = 0;
    for (const Proposal& p : pa) {
      if (p.generation == 0) continue;
      ++children;
      feasible += ScoreOf(c.objective, evaluator.Evaluate(space.ToSchedule(p.genome))).feasible;
    }
    CHECK(feasible * 4 >= children * 3);
  }
}

TEST_CASE("seeds come in the documented order without duplicates", "[search]") {
  const JobConfig c = ToyConfig();
  const SearchSpace space(c, ToyGeometry());
  FakeEvaluator evaluator;
  const Json advice = evaluator.head_advice(space.head_options());
  std::mt19937_64 rng(1);
  const auto seeds = SeedProposals(space, advice, 12, rng);
  std::vector<std::string> origins;
  for (const auto& p : seeds) origins.push_back(p.origin);
  const std::vector<std::string> expected = {"seed:dense",
                                             "seed:block_sparse@0.2",
                                             "seed:block_sparse@0.4",
                                             "seed:budget@0.5",
                                             "seed:budget@0.7",
                                             "seed:arm",
                                             "seed:argmin-error",
                                             "random",
                                             "random",
                                             "random",
                                             "random",
                                             "random"};
  // 0.4 and 0.5 both map to the grid value 0.5: the second is a duplicate and dropped.
  CHECK(origins == expected);
  std::set<std::string> hashes;
  for (const auto& p : seeds) hashes.insert(space.Hash(p.genome));
  CHECK(hashes.size() == seeds.size());

  // ARM: even heads temporal, odd heads spatial, at the median density 0.15 (lower median of 2).
  const Genome& arm = seeds[5].genome;
  CHECK(arm.heads[0] == space.FindOption("temporal", 0.15));
  CHECK(arm.heads[1] == space.FindOption("spatial", 0.15));
  // Argmin among options of cost <= the median sparse cost (0.2): in even layers temporal is
  // cheapest in error, in odd layers spatial; block_sparse 0.2 has error 0.8 vs 0.85*0.5.
  const Genome& argmin = seeds[6].genome;
  for (int64_t h = 0; h < 3; ++h) {
    CHECK(argmin.heads[h] == space.FindOption("temporal", 0.15));
    CHECK(argmin.heads[3 + h] == space.FindOption("spatial", 0.15));
  }

  const auto few = SeedProposals(space, advice, 2, rng);
  REQUIRE(few.size() == 2);
  CHECK(few[1].origin == "seed:block_sparse@0.2");

  Json bad = advice;
  bad["error"][0].erase(0);
  REQUIRE_THROWS_AS(SeedProposals(space, bad, 12, rng), RunError);
  const auto plain = SeedProposals(space, nullptr, 12, rng);
  CHECK(plain[5].origin == "random");
}

TEST_CASE("an unknown strategy name is an input error", "[search]") {
  JobConfig c = ToyConfig("annealing");
  const SearchSpace space(c, ToyGeometry());
  StrategyContext ctx{&c, &space, nullptr, 10.0};
  REQUIRE_THROWS_AS(MakeStrategy(ctx), InputError);
}
