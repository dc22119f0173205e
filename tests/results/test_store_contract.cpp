// One contract suite for every Store backend: SQLite file, SQLite ":memory:", in-memory store.
// Each test case loops over the backends with a fresh store each time.
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "core/error.h"
#include "results/store.h"
#include "tests/catch.h"
#include "tests/results/store_backends.h"

using sparsetune::CandidateRecord;
using sparsetune::CandidateState;
using sparsetune::EvalResult;
using sparsetune::JobRecord;
using sparsetune::Json;
using sparsetune::Store;
using sparsetune::StoreError;
using sparsetune::test::AllBackends;
using sparsetune::test::Backend;
using sparsetune::test::TempDir;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t Start(Store& s, int64_t job, const std::string& hash, int64_t generation = 0) {
  return s.start_candidate(job, generation, Json{{"genes", {1, 2, 3}}, {"hash", hash}}, hash,
                           {}, Json{{"format", "sparsetune.schedule"}}, "mutation");
}

bool IsIsoUtc(const std::string& t) {
  // 2026-11-26T23:17:51.123Z
  return t.size() == 24 && t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' &&
         t[16] == ':' && t[19] == '.' && t.back() == 'Z';
}

void CheckSameMetric(double a, double b) {
  if (std::isnan(b)) {
    CHECK(std::isnan(a));
  } else {
    CHECK(a == b);
  }
}

void CheckSameResult(const EvalResult& a, const EvalResult& b) {
  CheckSameMetric(a.psnr, b.psnr);
  CheckSameMetric(a.ssim, b.ssim);
  CheckSameMetric(a.psnr_heldout, b.psnr_heldout);
  CheckSameMetric(a.ssim_heldout, b.ssim_heldout);
  CheckSameMetric(a.latency_ms, b.latency_ms);
  CheckSameMetric(a.dense_latency_ms, b.dense_latency_ms);
  CheckSameMetric(a.speedup, b.speedup);
  CheckSameMetric(a.density, b.density);
  CheckSameMetric(a.token_density, b.token_density);
  CheckSameMetric(a.latency_spread, b.latency_spread);
  CHECK(a.error == b.error);
  CHECK(a.latency_source == b.latency_source);
  CHECK(a.extra == b.extra);
  REQUIRE(a.kernels.size() == b.kernels.size());
  for (size_t i = 0; i < a.kernels.size(); ++i) {
    CHECK(a.kernels[i].name == b.kernels[i].name);
    CHECK(a.kernels[i].category == b.kernels[i].category);
    CHECK(a.kernels[i].launches == b.kernels[i].launches);
    CHECK(a.kernels[i].total_ns == b.kernels[i].total_ns);
    CHECK(a.kernels[i].mean_ns == b.kernels[i].mean_ns);
    CHECK(a.kernels[i].min_ns == b.kernels[i].min_ns);
    CHECK(a.kernels[i].median_ns == b.kernels[i].median_ns);
  }
}

std::vector<int64_t> Numbers(const std::vector<CandidateRecord>& cs) {
  std::vector<int64_t> out;
  for (const CandidateRecord& c : cs) out.push_back(c.number);
  return out;
}

std::string Source(Backend b, const TempDir& dir) {
  switch (b) {
    case Backend::kSqliteFile:
      return sparsetune::test::StorePath(dir).string();
    case Backend::kSqliteMemory:
      return ":memory:";
    case Backend::kMemory:
      return "memory store";
  }
  return "";
}

}  // namespace

TEST_CASE("store: jobs are created, listed and read back", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(1);
    auto store = Open(backend, dir);
    CHECK(store->jobs().empty());
    const JobRecord a = sparsetune::test::RandomJob(rng, "first");
    const JobRecord b = sparsetune::test::RandomJob(rng, "second");
    const int64_t ia = store->create_job(a);
    const int64_t ib = store->create_job(b);
    CHECK(ib > ia);

    const JobRecord got = store->job(ia);
    CHECK(got.id == ia);
    CHECK(got.name == "first");
    CHECK(got.config == a.config);
    CHECK(got.workload == a.workload);
    CHECK(got.device == a.device);
    CHECK(got.commit == a.commit);
    CHECK(got.state == "RUNNING");
    CHECK(got.objective == "psnr");
    CHECK(got.constraint == a.constraint);
    CHECK(IsIsoUtc(got.created));

    const std::vector<JobRecord> all = store->jobs();
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == ia);
    CHECK(all[1].id == ib);
    CHECK(all[1].name == "second");

    store->set_job_state(ib, "COMPLETE");
    CHECK(store->job(ib).state == "COMPLETE");
    CHECK(store->job(ia).state == "RUNNING");
    REQUIRE_THROWS_AS(store->set_job_state(ib, "DONE"), StoreError);
    CHECK(store->job(ib).state == "COMPLETE");

    const std::string missing = Source(backend, dir) + ": no job 99 (`sparsetune results jobs` lists them)";
    REQUIRE_THROWS_WITH(store->job(99), missing);
    REQUIRE_THROWS_WITH(store->candidates(99), missing);
    REQUIRE_THROWS_WITH(store->set_job_state(99, "COMPLETE"), missing);
    REQUIRE_THROWS_WITH(Start(*store, 99, "h"), missing);
    try {
      store->job(99);
    } catch (const StoreError& e) {
      CHECK(e.exit_code() == 2);
    }
  }
}

TEST_CASE("store: candidate lifecycle, sequential numbers, finish once", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(2);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t other = store->create_job(sparsetune::test::RandomJob(rng, "b"));

    // Numbers count per job, interleaved starts do not disturb each other.
    CHECK(Start(*store, job, "h0") == 0);
    CHECK(Start(*store, other, "x0") == 0);
    const Json genome = Json{{"budget", {1.0, 0.5}}, {"pattern", "temporal"}};
    const Json schedule = Json{{"format", "sparsetune.schedule"}, {"version", 1}};
    const int64_t n1 = store->start_candidate(job, 3, genome, "h1", {0, 7}, schedule, "crossover");
    CHECK(n1 == 1);
    CHECK(Start(*store, job, "h2") == 2);
    CHECK(Start(*store, other, "x1") == 1);

    std::optional<CandidateRecord> c = store->candidate(job, n1);
    REQUIRE(c);
    CHECK(c->job_id == job);
    CHECK(c->number == 1);
    CHECK(c->generation == 3);
    CHECK(c->state == CandidateState::kRunning);
    CHECK(c->genome == genome);
    CHECK(c->genome_hash == "h1");
    CHECK(c->parents == std::vector<int64_t>{0, 7});
    CHECK(c->schedule == schedule);
    CHECK(c->origin == "crossover");
    CHECK(IsIsoUtc(c->started));
    CHECK(c->completed.empty());
    CHECK(std::isnan(c->objective));
    CHECK_FALSE(c->feasible);
    CHECK_FALSE(store->candidate(job, 3));
    CHECK_FALSE(store->candidate(77, 0));

    const EvalResult r = sparsetune::test::RandomResult(rng, 3);
    store->finish_candidate(job, n1, r, r.psnr, true);
    c = store->candidate(job, n1);
    REQUIRE(c);
    CHECK(c->state == CandidateState::kComplete);
    CHECK(c->result.ok);
    CHECK(c->objective == r.psnr);
    CHECK(c->feasible);
    CHECK(IsIsoUtc(c->completed));
    CheckSameResult(c->result, r);

    // Finishing again is rejected and changes nothing.
    EvalResult again = sparsetune::test::RandomResult(rng);
    REQUIRE_THROWS_AS(store->finish_candidate(job, n1, again, again.psnr, false), StoreError);
    c = store->candidate(job, n1);
    REQUIRE(c);
    CHECK(c->objective == r.psnr);
    CHECK(c->feasible);
    CheckSameResult(c->result, r);
    REQUIRE_THROWS_WITH(store->finish_candidate(job, 9, again, 1.0, false),
                        Source(backend, dir) + ": job " + std::to_string(job) +
                            " has no candidate 9");

    const std::vector<CandidateRecord> all = store->candidates(job);
    CHECK(Numbers(all) == std::vector<int64_t>{0, 1, 2});
    CHECK(all[0].state == CandidateState::kRunning);
    CHECK(all[1].state == CandidateState::kComplete);
    CheckSameResult(all[1].result, r);
    CHECK(Numbers(store->candidates(other)) == std::vector<int64_t>{0, 1});
  }
}

TEST_CASE("store: a failed candidate keeps its error and is never feasible", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(3);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t n = Start(*store, job, "h");
    EvalResult r;
    r.ok = false;
    r.error = "CUDA error: out of memory (block_sparse, keep 0.9)";
    r.latency_ms = 12.5;
    store->finish_candidate(job, n, r, 33.0, true);
    const std::optional<CandidateRecord> c = store->candidate(job, n);
    REQUIRE(c);
    CHECK(c->state == CandidateState::kFail);
    CHECK_FALSE(c->result.ok);
    CHECK(c->result.error == r.error);
    CHECK(c->result.latency_ms == 12.5);
    CHECK(std::isnan(c->result.psnr));
    CHECK(std::isnan(c->objective));
    CHECK_FALSE(c->feasible);
    CHECK_FALSE(store->find_complete(job, "h"));
    REQUIRE_THROWS_AS(store->finish_candidate(job, n, sparsetune::test::RandomResult(rng), 1.0,
                                              true),
                      StoreError);
  }
}

TEST_CASE("store: infinite and NaN values round trip", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(4);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t n = Start(*store, job, "h");
    EvalResult r = sparsetune::test::RandomResult(rng, 0);
    r.psnr = kInf;
    r.ssim = -kInf;
    r.psnr_heldout = EvalResult::kNaN;
    r.speedup = kInf;
    r.latency_spread = EvalResult::kNaN;
    store->finish_candidate(job, n, r, kInf, true);
    const std::optional<CandidateRecord> c = store->candidate(job, n);
    REQUIRE(c);
    CHECK(c->objective == kInf);
    CheckSameResult(c->result, r);

    // Same through candidates(), which reads in bulk.
    CheckSameResult(store->candidates(job).at(0).result, r);
  }
}

TEST_CASE("store: kernel breakdown, latency source and extra round trip", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(5);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    std::vector<EvalResult> results;
    for (int i = 0; i < 4; ++i) {
      const int64_t n = Start(*store, job, "h" + std::to_string(i));
      results.push_back(sparsetune::test::RandomResult(rng, 1 + i));
      results.back().extra["sample"] = i;
      store->finish_candidate(job, n, results.back(), results.back().psnr, i % 2 == 0);
    }
    const std::vector<CandidateRecord> all = store->candidates(job);
    REQUIRE(all.size() == 4);
    for (size_t i = 0; i < all.size(); ++i) {
      CheckSameResult(all[i].result, results[i]);
      CHECK(all[i].feasible == (i % 2 == 0));
    }
  }
}

TEST_CASE("store: fail_running marks only RUNNING candidates", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(6);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t other = store->create_job(sparsetune::test::RandomJob(rng, "b"));
    for (int i = 0; i < 4; ++i) Start(*store, job, "h" + std::to_string(i));
    Start(*store, other, "o");
    const EvalResult r = sparsetune::test::RandomResult(rng);
    store->finish_candidate(job, 1, r, r.psnr, true);

    CHECK(store->fail_running(job, "interrupted: resumed after a kill") == 3);
    const std::vector<CandidateRecord> all = store->candidates(job);
    for (int64_t n : {0, 2, 3}) {
      CHECK(all[n].state == CandidateState::kFail);
      CHECK(all[n].result.error == "interrupted: resumed after a kill");
      CHECK(IsIsoUtc(all[n].completed));
    }
    CHECK(all[1].state == CandidateState::kComplete);
    CheckSameResult(all[1].result, r);
    CHECK(store->candidates(other).at(0).state == CandidateState::kRunning);
    CHECK(store->fail_running(job, "again") == 0);
    CHECK(store->candidates(job).at(0).result.error == "interrupted: resumed after a kill");
    REQUIRE_THROWS_AS(store->fail_running(99, "x"), StoreError);
  }
}

TEST_CASE("store: find_complete returns the first COMPLETE candidate with the hash", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(7);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t other = store->create_job(sparsetune::test::RandomJob(rng, "b"));
    const int64_t running = Start(*store, job, "same");
    CHECK_FALSE(store->find_complete(job, "same"));
    const int64_t first = Start(*store, job, "same");
    const int64_t second = Start(*store, job, "same");
    const EvalResult r1 = sparsetune::test::RandomResult(rng);
    const EvalResult r2 = sparsetune::test::RandomResult(rng);
    store->finish_candidate(job, second, r2, r2.psnr, true);
    store->finish_candidate(job, first, r1, r1.psnr, true);
    const std::optional<CandidateRecord> found = store->find_complete(job, "same");
    REQUIRE(found);
    CHECK(found->number == first);
    CheckSameResult(found->result, r1);
    CHECK(running == 0);
    CHECK_FALSE(store->find_complete(job, "other"));
    CHECK_FALSE(store->find_complete(other, "same"));
  }
}

TEST_CASE("store: dense baseline is saved, replaced and read back", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(8);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    CHECK_FALSE(store->baseline(job));
    EvalResult dense = sparsetune::test::RandomResult(rng);
    dense.psnr = 100.0;
    dense.ssim = 1.0;
    dense.speedup = 1.0;
    dense.psnr_heldout = EvalResult::kNaN;
    store->save_baseline(job, dense);
    std::optional<EvalResult> got = store->baseline(job);
    REQUIRE(got);
    CHECK(got->ok);
    CheckSameResult(*got, dense);

    dense.latency_ms *= 1.5;
    store->save_baseline(job, dense);
    got = store->baseline(job);
    REQUIRE(got);
    CHECK(got->latency_ms == dense.latency_ms);
    REQUIRE_THROWS_AS(store->save_baseline(99, dense), StoreError);
    CHECK_FALSE(store->baseline(99));
  }
}

TEST_CASE("store: exports are recorded for existing candidates only", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(9);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "a"));
    const int64_t n = Start(*store, job, "h");
    const EvalResult r = sparsetune::test::RandomResult(rng);
    store->finish_candidate(job, n, r, r.psnr, true);
    const Json schedule = Json{{"format", "sparsetune.schedule"}, {"block_size", 64}};
    REQUIRE_NOTHROW(store->record_export(job, n, "out/best.json", schedule));
    REQUIRE_THROWS_WITH(store->record_export(job, 5, "out/x.json", schedule),
                        Source(backend, dir) + ": job " + std::to_string(job) +
                            " has no candidate 5");
    if (backend == Backend::kSqliteFile) {
      store.reset();
      sparsetune::test::RawDb raw(sparsetune::test::StorePath(dir));
      const auto rows = raw.rows("SELECT job_id, number, path, schedule FROM schedules");
      REQUIRE(rows.size() == 1);
      CHECK(rows[0][1] == std::to_string(n));
      CHECK(rows[0][2] == "out/best.json");
      CHECK(Json::parse(rows[0][3]) == schedule);
    }
  }
}

TEST_CASE("sqlite store: data persists across reopen, WAL mode, finished rows final", "[db]") {
  TempDir dir;
  std::mt19937 rng(10);
  const auto path = sparsetune::test::StorePath(dir);
  const EvalResult r = sparsetune::test::RandomResult(rng, 2);
  int64_t job = 0;
  {
    auto store = sparsetune::OpenSqliteStore(path);
    job = store->create_job(sparsetune::test::RandomJob(rng, "persist"));
    store->finish_candidate(job, Start(*store, job, "h0"), r, r.ssim, true);
    Start(*store, job, "h1");
    store->save_baseline(job, r);
  }
  for (int reopen = 0; reopen < 2; ++reopen) {
    auto store = reopen == 0 ? sparsetune::OpenExistingSqliteStore(path)
                             : sparsetune::OpenSqliteStore(path);
    REQUIRE(store->jobs().size() == 1);
    CHECK(store->job(job).name == "persist");
    const auto all = store->candidates(job);
    REQUIRE(all.size() == 2);
    CheckSameResult(all[0].result, r);
    CHECK(all[0].objective == r.ssim);
    CHECK(all[1].state == CandidateState::kRunning);
    REQUIRE(store->baseline(job));
  }
  // The next number continues after a reopen.
  CHECK(Start(*sparsetune::OpenSqliteStore(path), job, "h2") == 2);

  sparsetune::test::RawDb raw(path);
  CHECK(raw.rows("PRAGMA journal_mode").at(0).at(0) == "wal");
  CHECK(raw.rows("SELECT version FROM schema_version").at(0).at(0) == "1");
  // The trigger keeps finished candidates unmodified even for direct SQL.
  CHECK(raw.exec("UPDATE candidates SET objective = 0 WHERE number = 0") != SQLITE_OK);
  CHECK(raw.exec("UPDATE candidates SET origin = 'edited' WHERE number = 1") == SQLITE_OK);
}

TEST_CASE("sqlite store: two connections to one file see each other's commits", "[db]") {
  TempDir dir;
  std::mt19937 rng(13);
  const auto path = sparsetune::test::StorePath(dir);
  auto writer = sparsetune::OpenSqliteStore(path);
  auto reader = sparsetune::OpenExistingSqliteStore(path);
  const int64_t job = writer->create_job(sparsetune::test::RandomJob(rng, "shared"));
  CHECK(reader->job(job).name == "shared");
  CHECK(Start(*reader, job, "a") == 0);
  CHECK(Start(*writer, job, "b") == 1);
  const EvalResult r = sparsetune::test::RandomResult(rng);
  writer->finish_candidate(job, 0, r, r.psnr, true);
  REQUIRE(reader->best_feasible(job));
  CHECK(reader->best_feasible(job)->number == 0);
  REQUIRE_THROWS_AS(reader->finish_candidate(job, 0, r, r.psnr, true), StoreError);
}

TEST_CASE("sqlite store: candidate_summary flattens metrics for pandas", "[db]") {
  TempDir dir;
  std::mt19937 rng(11);
  const auto path = sparsetune::test::StorePath(dir);
  EvalResult r = sparsetune::test::RandomResult(rng);
  r.speedup = kInf;
  {
    auto store = sparsetune::OpenSqliteStore(path);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "summary"));
    store->finish_candidate(job, Start(*store, job, "a"), r, r.psnr, true);
    EvalResult fail;
    fail.error = "it's \"broken\"";
    store->finish_candidate(job, Start(*store, job, "b"), fail, 0.0, false);
  }
  sparsetune::test::RawDb raw(path);
  CHECK(raw.number("SELECT psnr FROM candidate_summary WHERE number = 0") == r.psnr);
  CHECK(raw.number("SELECT density FROM candidate_summary WHERE number = 0") == r.density);
  CHECK(raw.number("SELECT speedup FROM candidate_summary WHERE number = 0") == kInf);
  CHECK(std::isnan(raw.number("SELECT psnr FROM candidate_summary WHERE number = 1")));
  CHECK(raw.rows("SELECT error, state FROM candidate_summary WHERE number = 1").at(0) ==
        std::vector<std::string>{"it's \"broken\"", "FAIL"});
  CHECK(raw.rows("SELECT kernel FROM kernel_measurements WHERE number = 0").size() ==
        r.kernels.size());
  CHECK(raw.rows("SELECT DISTINCT device FROM kernel_measurements").at(0).at(0) == "cpu: test");
}

TEST_CASE("sqlite store: rejects newer schemas, foreign files and bad paths", "[db]") {
  TempDir dir;
  const auto path = sparsetune::test::StorePath(dir);
  SECTION("newer schema") {
    sparsetune::OpenSqliteStore(path);
    {
      sparsetune::test::RawDb raw(path);
      REQUIRE(raw.exec("UPDATE schema_version SET version = 2") == SQLITE_OK);
    }
    const std::string message =
        path.string() + ": written by a newer sparsetune (schema 2); this build reads schema 1";
    REQUIRE_THROWS_WITH(sparsetune::OpenSqliteStore(path), message);
    REQUIRE_THROWS_WITH(sparsetune::OpenExistingSqliteStore(path), message);
    try {
      sparsetune::OpenSqliteStore(path);
    } catch (const StoreError& e) {
      CHECK(e.exit_code() == 2);
    }
  }
  SECTION("garbage file") {
    std::mt19937 rng(12);
    std::string bytes(8192, '\0');
    for (char& b : bytes) b = static_cast<char>(rng() % 256);
    sparsetune::test::WriteText(path, bytes);
    REQUIRE_THROWS_WITH(sparsetune::OpenSqliteStore(path),
                        path.string() + ": not a sparsetune results store (file is not a database)");
    REQUIRE_THROWS_AS(sparsetune::OpenExistingSqliteStore(path), StoreError);
  }
  SECTION("a SQLite database of something else") {
    {
      sparsetune::test::RawDb raw(path);
      REQUIRE(raw.exec("CREATE TABLE trials (id INTEGER)") == SQLITE_OK);
    }
    REQUIRE_THROWS_WITH(sparsetune::OpenSqliteStore(path),
                        path.string() +
                            ": not a sparsetune results store (no schema_version table)");
  }
  SECTION("missing or unwritable location") {
    const auto bad = dir / "no-such-dir" / "store.sqlite";
    REQUIRE_THROWS_WITH(sparsetune::OpenSqliteStore(bad),
                        bad.string() + ": cannot open results store: unable to open database file");
    REQUIRE_THROWS_WITH(
        sparsetune::OpenExistingSqliteStore(path),
        path.string() + ": no results store here (run `sparsetune run` first or pass --db)");
    CHECK_FALSE(std::filesystem::exists(path));
    try {
      sparsetune::OpenSqliteStore(bad);
    } catch (const StoreError& e) {
      CHECK(e.exit_code() == 2);
    }
  }
  SECTION("an empty file is not opened as an existing store") {
    sparsetune::test::WriteText(path, "");
    REQUIRE_THROWS_WITH(sparsetune::OpenExistingSqliteStore(path),
                        path.string() + ": not a sparsetune results store (it has no tables)");
    // ...but OpenSqliteStore makes a store of it.
    REQUIRE(sparsetune::OpenSqliteStore(path)->jobs().empty());
  }
}

TEST_CASE("store: held-out quality is added to COMPLETE candidates only", "[db]") {
  for (Backend backend : AllBackends()) {
    INFO(Name(backend));
    TempDir dir;
    std::mt19937 rng(21);
    auto store = Open(backend, dir);
    const int64_t job = store->create_job(sparsetune::test::RandomJob(rng, "h"));
    const int64_t done = Start(*store, job, "a");
    EvalResult r = sparsetune::test::RandomResult(rng);
    r.psnr_heldout = EvalResult::kNaN;
    r.ssim_heldout = EvalResult::kNaN;
    store->finish_candidate(job, done, r, r.psnr, true);
    const int64_t running = Start(*store, job, "b");

    std::uniform_real_distribution<double> u(10.0, 50.0);
    const double psnr = u(rng);
    const double ssim = u(rng) / 50.0;
    store->record_heldout(job, done, psnr, ssim);
    auto back = store->candidate(job, done);
    REQUIRE(back.has_value());
    CHECK(back->result.psnr_heldout == psnr);
    CHECK(back->result.ssim_heldout == ssim);
    CHECK(back->result.psnr == r.psnr);  // calibration values untouched
    CHECK(back->state == CandidateState::kComplete);

    CHECK_THROWS_AS(store->record_heldout(job, running, psnr, ssim), StoreError);
    CHECK_THROWS_AS(store->record_heldout(job, 99, psnr, ssim), StoreError);
  }
}
