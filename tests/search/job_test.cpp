#include "search/job.h"

#include <set>

#include "core/error.h"
#include "search/space.h"
#include "tests/catch.h"
#include "tests/search/fakes.h"
#include "tests/test_util.h"

using namespace sparsetune;
using sparsetune::test::FakeEvaluator;
using sparsetune::test::SimulatedKill;
using sparsetune::test::ToyConfig;
using sparsetune::test::ToyGeometry;

namespace {

std::set<std::string> CompleteHashes(const Store& store, int64_t job) {
  std::set<std::string> out;
  for (const CandidateRecord& c : store.candidates(job)) {
    if (c.state == CandidateState::kComplete) out.insert(c.genome_hash);
  }
  return out;
}

}  // namespace

TEST_CASE("a job is reproducible for a seed and ends with its best feasible candidate",
          "[search]") {
  for (const char* strategy : {"evolutionary", "nsga2", "random"}) {
    const JobConfig c = ToyConfig(strategy, 5);
    FakeEvaluator e1, e2;
    const auto s1_owner = MakeMemoryStore(), s2_owner = MakeMemoryStore();
    Store& s1 = *s1_owner;
    Store& s2 = *s2_owner;
    const JobSummary a = RunJob(c, e1, s1, {});
    const JobSummary b = RunJob(c, e2, s2, {});
    REQUIRE(a.best);
    REQUIRE(b.best);
    CHECK(a.best->genome_hash == b.best->genome_hash);
    CHECK(a.best->objective == b.best->objective);
    CHECK(a.best->feasible);
    CHECK(a.evaluated == b.evaluated);
    CHECK(s1.job(a.job_id).state == "COMPLETE");
    CHECK(s1.baseline(a.job_id)->latency_ms == FakeEvaluator::kDenseMs);
    // The best is the best feasible row of the store.
    for (const CandidateRecord& r : s1.candidates(a.job_id)) {
      if (r.state == CandidateState::kComplete && r.feasible)
        CHECK(r.objective <= a.best->objective);
      CHECK(r.state != CandidateState::kRunning);
    }
    // The dense seed is the first candidate and is infeasible under min_speedup 1.6.
    const CandidateRecord first = *s1.candidate(a.job_id, 0);
    if (std::string(strategy) != "random") {
      CHECK(first.origin == "seed:dense");
      CHECK_FALSE(first.feasible);
    }
  }
}

TEST_CASE("a job never evaluates a genome twice", "[search]") {
  // A tiny space (2 heads, 3 steps, few options) where the strategies hit repeats often.
  JobConfig c = ToyConfig("random", 3);
  c.space.patterns = {"dense", "block_sparse"};
  c.space.keeps = {0.3};
  c.space.budgets = {0.5};
  c.space.warmup_steps = {1};
  c.search.population = 6;
  c.search.generations = 4;
  c.search.batch_size = 4;
  for (const char* strategy : {"random", "evolutionary", "nsga2"}) {
    c.search.strategy = strategy;
    FakeEvaluator evaluator(ToyGeometry(1, 2, 3));
    const auto store_owner = MakeMemoryStore();
    Store& store = *store_owner;
    const JobSummary s = RunJob(c, evaluator, store, {});
    CHECK(s.reused > 0);
    CHECK(s.evaluated == evaluator.evaluations);
    for (const auto& entry : evaluator.per_schedule) CHECK(entry.second == 1);
    CHECK(static_cast<int64_t>(store.candidates(s.job_id).size()) == s.evaluated);
    CHECK(s.candidates == s.evaluated);
  }
}

TEST_CASE("a failing candidate becomes a FAIL row and the job goes on", "[search]") {
  JobConfig c = ToyConfig("evolutionary", 2);
  FakeEvaluator evaluator;
  // Every schedule with a block_sparse head in layer 0 head 0 fails (the uniform block_sparse
  // seeds among them).
  evaluator.fail_if = [](const Json& s) { return s["heads"][0][0]["pattern"] == "block_sparse"; };
  const auto store_owner = MakeMemoryStore();
  Store& store = *store_owner;
  const JobSummary s = RunJob(c, evaluator, store, {});
  CHECK(s.failed > 0);
  int64_t fails = 0;
  for (const CandidateRecord& r : store.candidates(s.job_id)) {
    if (r.state != CandidateState::kFail) continue;
    ++fails;
    CHECK(r.result.error == "synthetic failure");
    CHECK_FALSE(r.feasible);
  }
  CHECK(fails == s.failed);
  CHECK(store.job(s.job_id).state == "COMPLETE");
  REQUIRE(s.best);
  CHECK(s.best->schedule["heads"][0][0]["pattern"] != "block_sparse");
}

TEST_CASE("a killed job resumes to the same best without re-evaluating finished candidates",
          "[search]") {
  for (const char* strategy : {"evolutionary", "nsga2"}) {
    JobConfig c = ToyConfig(strategy, 11);
    c.search.batch_size = 3;  // the kill lands in the middle of a generation

    FakeEvaluator clean_evaluator;
    const auto clean_store_owner = MakeMemoryStore();
    Store& clean_store = *clean_store_owner;
    const JobSummary clean = RunJob(c, clean_evaluator, clean_store, {});
    REQUIRE(clean.best);

    const auto store_owner = MakeMemoryStore();
    Store& store = *store_owner;
    FakeEvaluator dying;
    // Batches of 3, 3, 2 (generation 0), then 3, 3, ...: the kill lands in the fifth batch after
    // two of its three evaluations, so 11 candidates are COMPLETE and 3 rows are left RUNNING.
    dying.kill_after = 13;
    const int64_t kept = 11;
    REQUIRE_THROWS_AS(RunJob(c, dying, store, {}), SimulatedKill);
    const int64_t job = store.jobs().at(0).id;
    CHECK(store.job(job).state == "INTERRUPTED");
    int64_t running = 0;
    for (const CandidateRecord& r : store.candidates(job)) {
      running += r.state == CandidateState::kRunning;
    }
    CHECK(running == 3);
    const std::set<std::string> finished_before = CompleteHashes(store, job);
    CHECK(static_cast<int64_t>(finished_before.size()) == kept);

    FakeEvaluator evaluator;
    JobOptions resume;
    resume.resume_job = job;
    const JobSummary resumed = RunJob(c, evaluator, store, resume);
    REQUIRE(resumed.best);
    CHECK(resumed.job_id == job);
    CHECK(resumed.best->genome_hash == clean.best->genome_hash);
    CHECK(resumed.best->objective == clean.best->objective);
    CHECK(resumed.reused >= kept);
    // Baseline and head advice come from the first run, so the replay seeds the same way.
    CHECK(evaluator.advice_calls == 0);
    CHECK(dying.advice_calls == 1);
    // Nothing that was COMPLETE before the kill is evaluated again.
    for (const CandidateRecord& r : store.candidates(job)) {
      if (r.number >= kept + 3) CHECK(finished_before.count(r.genome_hash) == 0);
    }
    CHECK(evaluator.evaluations + kept == clean_evaluator.evaluations);
    int64_t interrupted = 0;
    for (const CandidateRecord& r : store.candidates(job)) {
      if (r.state == CandidateState::kFail) {
        CHECK(r.result.error == kInterruptedReason);
        CHECK(r.number >= kept);
        CHECK(r.number < kept + 3);
        ++interrupted;
      }
    }
    CHECK(interrupted == 3);
    CHECK(store.job(job).state == "COMPLETE");
    CHECK(CompleteHashes(store, job) == CompleteHashes(clean_store, clean.job_id));
  }
}

TEST_CASE("resume checks the job and its config", "[search]") {
  const JobConfig c = ToyConfig("random", 1);
  FakeEvaluator evaluator;
  const auto store_owner = MakeMemoryStore();
  Store& store = *store_owner;
  const JobSummary s = RunJob(c, evaluator, store, {});
  JobOptions resume;
  resume.resume_job = s.job_id;
  JobConfig other = c;
  other.raw["search"]["seed"] = 2;
  REQUIRE_THROWS_AS(RunJob(other, evaluator, store, resume), InputError);
  resume.resume_job = 42;
  REQUIRE_THROWS_AS(RunJob(c, evaluator, store, resume), StoreError);
  // Resuming a finished job replays it from the store without evaluating anything.
  resume.resume_job = s.job_id;
  FakeEvaluator idle;
  const JobSummary again = RunJob(c, idle, store, resume);
  CHECK(idle.evaluations == 0);
  CHECK(again.evaluated == 0);
  CHECK(again.best->genome_hash == s.best->genome_hash);
}

TEST_CASE("progress is reported once per generation", "[search]") {
  JobConfig c = ToyConfig("evolutionary", 8);
  c.search.batch_size = 3;
  FakeEvaluator evaluator;
  const auto store_owner = MakeMemoryStore();
  Store& store = *store_owner;
  std::vector<Progress> seen;
  JobOptions options;
  options.on_progress = [&seen](const Progress& p) { seen.push_back(p); };
  const JobSummary s = RunJob(c, evaluator, store, options);
  REQUIRE(static_cast<int64_t>(seen.size()) == c.search.generations + 1);
  for (size_t g = 0; g < seen.size(); ++g) {
    CHECK(seen[g].generation == static_cast<int64_t>(g));
    CHECK(seen[g].planned == 8 + 3 * 6);
    CHECK(seen[g].elapsed_s >= 0);
  }
  CHECK(seen.back().done == seen.back().planned);
  CHECK(seen.back().evaluated == s.evaluated);
  REQUIRE(seen.back().best_objective);
  CHECK(*seen.back().best_objective == s.best->objective);
}

TEST_CASE("an evaluator that returns the wrong number of results stops the job", "[search]") {
  struct Short : FakeEvaluator {
    std::vector<EvalResult> evaluate(const std::vector<Json>& s) override {
      auto r = FakeEvaluator::evaluate(s);
      r.pop_back();
      return r;
    }
  } evaluator;
  const auto store_owner = MakeMemoryStore();
  Store& store = *store_owner;
  REQUIRE_THROWS_AS(RunJob(ToyConfig(), evaluator, store, {}), RunError);
  CHECK(store.jobs().at(0).state == "INTERRUPTED");
}

TEST_CASE("resume works across store reopenings of a SQLite file", "[search]") {
  JobConfig c = ToyConfig("evolutionary", 19);
  c.search.batch_size = 5;
  FakeEvaluator clean_evaluator;
  const auto clean_store = MakeMemoryStore();
  const JobSummary clean = RunJob(c, clean_evaluator, *clean_store, {});
  REQUIRE(clean.best);

  sparsetune::test::TempDir dir;
  int64_t job = 0;
  {
    const auto store = OpenSqliteStore(dir / "jobs.sqlite");
    FakeEvaluator dying;
    dying.kill_after = 17;
    REQUIRE_THROWS_AS(RunJob(c, dying, *store, {}), SimulatedKill);
    job = store->jobs().at(0).id;
  }
  const auto store = OpenExistingSqliteStore(dir / "jobs.sqlite");
  FakeEvaluator evaluator;
  JobOptions resume;
  resume.resume_job = job;
  const JobSummary resumed = RunJob(c, evaluator, *store, resume);
  REQUIRE(resumed.best);
  CHECK(resumed.best->genome_hash == clean.best->genome_hash);
  CHECK(resumed.best->objective == Approx(clean.best->objective));
  CHECK(evaluator.evaluations < clean_evaluator.evaluations);
  CHECK(store->job(job).state == "COMPLETE");
}

TEST_CASE("a job in a large space evaluates as many distinct genomes as it proposes",
          "[search]") {
  // The toy space has millions of genomes; a strategy that repeats itself would waste evaluations
  // (the job reuses the stored result instead). The high mutation rate and strong constraint make
  // repair pull many children onto the same genome, which is what novelty must undo.
  for (const char* strategy : {"evolutionary", "nsga2"}) {
    JobConfig c = ToyConfig(strategy, 11);
    c.search.population = 10;
    c.search.generations = 6;
    c.search.mutation_rate = 0.02;
    c.objective.min_speedup = 2.2;
    FakeEvaluator evaluator;
    const auto store_owner = MakeMemoryStore();
    Store& store = *store_owner;
    std::vector<Progress> seen;
    JobOptions options;
    options.on_progress = [&seen](const Progress& p) { seen.push_back(p); };
    const JobSummary s = RunJob(c, evaluator, store, options);
    INFO(strategy);
    CHECK(s.reused == 0);
    REQUIRE_FALSE(seen.empty());
    CHECK(seen.back().reused == 0);
    CHECK(seen.back().done == seen.back().planned);
    CHECK(s.evaluated == seen.back().planned);
    CHECK(static_cast<int64_t>(CompleteHashes(store, s.job_id).size()) == s.evaluated);
    for (const auto& entry : evaluator.per_schedule) CHECK(entry.second == 1);
  }
}

TEST_CASE("a job whose constraint nothing meets still proposes distinct genomes", "[search]") {
  // With no feasible candidate the cost model predicts every child infeasible and repair pulls
  // them all toward the same fastest corners; novelty must keep the proposals distinct anyway
  // (seen in the default job on trained weights: 81 of 100 proposals were repeats).
  for (const char* strategy : {"evolutionary", "nsga2"}) {
    JobConfig c = ToyConfig(strategy, 5);
    c.search.population = 10;
    c.search.generations = 6;
    c.objective.min_speedup = 50.0;  // the fake evaluator's fastest genome is 10x
    FakeEvaluator evaluator;
    const auto store_owner = MakeMemoryStore();
    Store& store = *store_owner;
    const JobSummary s = RunJob(c, evaluator, store, {});
    INFO(strategy);
    CHECK_FALSE(s.best);
    CHECK(s.reused == 0);
    CHECK(static_cast<int64_t>(CompleteHashes(store, s.job_id).size()) == s.evaluated);
    CHECK(s.evaluated >= 50);  // 10 seeds and random genomes, then 6 bred generations
  }
}

TEST_CASE("when repair sends every child to one corner, children stay novel (#5)", "[search]") {
  // One sparse family and an unreachable speedup: every genome is predicted infeasible, and Repair
  // lowers every budget and head to the bottom of its grid, so all children of one warm-up choice
  // become the same genome: the space has two such corners. A child whose repaired form was
  // proposed before must then be kept unrepaired (it is novel and measures something new);
  // re-repairing its mutants or immigrants only lands on the corners again. Before that rule the
  // novelty tries ran out and most children repeated a corner (the default job on trained
  // weights: 81 of 100 proposals reused).
  for (const char* strategy : {"evolutionary", "nsga2"}) {
    JobConfig c = ToyConfig(strategy, 13);
    c.space.patterns = {"dense", "block_sparse"};
    c.space.keeps = {0.2, 0.5};
    c.search.population = 10;
    c.search.generations = 5;
    c.objective.min_speedup = 50.0;  // the fake evaluator's fastest genome is below 10x
    FakeEvaluator evaluator;
    const auto store_owner = MakeMemoryStore();
    Store& store = *store_owner;
    std::vector<Progress> seen;
    JobOptions options;
    options.on_progress = [&seen](const Progress& p) { seen.push_back(p); };
    const JobSummary s = RunJob(c, evaluator, store, options);
    INFO(strategy);
    CHECK_FALSE(s.best);
    CHECK(s.reused == 0);
    REQUIRE_FALSE(seen.empty());
    CHECK(s.evaluated == seen.back().planned);
    CHECK(static_cast<int64_t>(CompleteHashes(store, s.job_id).size()) == s.evaluated);
  }
}

TEST_CASE("the evolutionary search improves on its seeds over the generations", "[search]") {
  // The fake evaluator rewards per-step budgets and head choices no seed has, so the best
  // feasible candidate should come from a bred generation (the best quality so far, higher is
  // better, never falls).
  JobConfig c = ToyConfig("evolutionary", 3);
  c.search.population = 12;
  c.search.generations = 8;
  FakeEvaluator evaluator;
  const auto store_owner = MakeMemoryStore();
  Store& store = *store_owner;
  std::vector<Progress> seen;
  JobOptions options;
  options.on_progress = [&seen](const Progress& p) { seen.push_back(p); };
  const JobSummary s = RunJob(c, evaluator, store, options);
  REQUIRE(s.best);
  REQUIRE(seen.size() == 9);
  REQUIRE(seen.front().best_objective);
  for (size_t g = 1; g < seen.size(); ++g) {
    REQUIRE(seen[g].best_objective);
    CHECK(*seen[g].best_objective >= *seen[g - 1].best_objective);
  }
  CHECK(*seen.back().best_objective > *seen.front().best_objective);
  CHECK(s.best->generation > 0);
}
