#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "evaluators/analyze.h"
#include "evaluators/evaluator.h"
#include "tests/catch.h"
#include "tests/evaluators/evaluators_test_util.h"

namespace sparsetune {
namespace {

using test::SmallJob;
using test::SmallWorkload;
using test::UniformSchedule;

HeadPattern Pattern(PatternKind kind, double density = 1.0, double keep = 1.0) {
  HeadPattern p;
  p.pattern = kind;
  p.density = density;
  p.keep = keep;
  return p;
}

TEST_CASE("a dense schedule gives PSNR 100 and SSIM 1", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  const Schedule dense = UniformSchedule(ev.workload().geometry(), HeadPattern{}, 0);
  const EvalResult r = ev.evaluate_one(ScheduleToJson(dense));
  REQUIRE(r.ok);
  CHECK(r.psnr == 100.0);
  CHECK(r.ssim == Approx(1.0));
  CHECK(std::isnan(r.psnr_heldout));  // held-out samples are off by default
  CHECK(r.density == Approx(1.0));
  CHECK(r.token_density == Approx(1.0));
  CHECK(r.latency_ms > 0);
  CHECK(r.dense_latency_ms > 0);
  CHECK(r.speedup > 0);
  CHECK(r.latency_source == "wall_clock");
  CHECK(r.extra["samples"].size() == 2);

  const EvalResult base = ev.dense_baseline();
  CHECK(base.ok);
  CHECK(base.psnr == 100.0);
  CHECK(base.speedup == 1.0);
}

TEST_CASE("speedup is computed against dense references taken through the candidate path",
          "[evaluators]") {
  EvaluatorOptions options;
  options.dense_every = 2;
  options.start_warmup = 3;
  JobConfig job = SmallJob();
  job.latency.pairing = "bracketed";
  Evaluator ev(job, SmallWorkload(), options);
  const ModelGeometry& g = ev.workload().geometry();
  const Schedule dense = UniformSchedule(g, HeadPattern{}, 0);
  const Schedule sparse = UniformSchedule(g, Pattern(PatternKind::kBlockSparse, 1.0, 0.5), 1);
  // A bad candidate in the middle is not timed and does not count toward dense_every.
  Json bad = ScheduleToJson(dense);
  bad["block_size"] = -3;
  const std::vector<EvalResult> batch =
      ev.evaluate({ScheduleToJson(dense), ScheduleToJson(sparse), bad, ScheduleToJson(dense),
                   ScheduleToJson(sparse), ScheduleToJson(dense)});
  REQUIRE(batch.size() == 6);
  CHECK_FALSE(batch[2].ok);
  CHECK_FALSE(batch[2].extra.contains("dense_reference"));

  // References: the first (the baseline), after timed candidates 2 and 4, and one closing the
  // batch after the fifth.
  const std::vector<DenseReference>& refs = ev.dense_references();
  REQUIRE(refs.size() == 4);
  CHECK(refs[0].after_candidates == 0);
  CHECK(refs[1].after_candidates == 2);
  CHECK(refs[2].after_candidates == 4);
  CHECK(refs[3].after_candidates == 5);
  const std::vector<int64_t> expected_before = {0, 0, -1, 1, 1, 2};
  for (size_t i = 0; i < batch.size(); ++i) {
    if (expected_before[i] < 0) continue;
    const EvalResult& r = batch[i];
    REQUIRE(r.ok);
    const Json& ref = r.extra.at("dense_reference");
    const auto before = static_cast<size_t>(expected_before[i]);
    CHECK(ref.at("before_index").get<int64_t>() == expected_before[i]);
    CHECK(ref.at("before_ms").get<double>() == refs[before].latency_ms);
    CHECK(ref.at("after_ms").get<double>() == refs[before + 1].latency_ms);
    CHECK(r.dense_latency_ms == Approx(0.5 * (refs[before].latency_ms +
                                               refs[before + 1].latency_ms)));
    CHECK(r.speedup == Approx(r.dense_latency_ms / r.latency_ms));
  }
  // The baseline is the first reference, measured like a candidate after the start warm-up.
  const EvalResult base = ev.dense_baseline();
  CHECK(base.latency_ms == refs[0].latency_ms);
  CHECK(base.speedup == 1.0);
  CHECK(base.extra.at("start_warmup_ms").size() == 3);
  CHECK(base.extra.at("samples").size() == 2);  // scored like a candidate: PSNR 100 each
  CHECK(base.psnr == 100.0);

  // A single evaluation is a batch of one: it gets its own closing reference.
  const EvalResult one = ev.evaluate_schedule(sparse);
  REQUIRE(one.ok);
  REQUIRE(ev.dense_references().size() == 5);
  CHECK(one.extra.at("dense_reference").at("before_index").get<int64_t>() == 3);
  CHECK(ev.dense_references()[4].after_candidates == 6);
}

TEST_CASE("the min estimator ignores additive interference that moves the median",
          "[evaluators]") {
  // Repeats of one measurement: a true time plus small seeded jitter, then interference (another
  // tenant, a preempted vCPU) that only ever adds time to some repeats.
  std::mt19937_64 rng(29);
  std::uniform_real_distribution<double> jitter(0.0, 2.0);
  std::uniform_real_distribution<double> burst(40.0, 160.0);
  const double base = 250.0;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> repeats(7);
    for (double& r : repeats) r = base + jitter(rng);
    // Outliers on 4 of 7 repeats: the majority, so the median is an outlier too. The first
    // repeat stays clean, so at least one undisturbed repeat remains.
    std::vector<size_t> hit = {1, 2, 3, 4, 5, 6};
    std::shuffle(hit.begin(), hit.end(), rng);
    for (size_t i = 0; i < 4; ++i) repeats[hit[i]] += burst(rng);
    std::shuffle(repeats.begin(), repeats.end(), rng);
    const double min_estimate = EstimateLatency(repeats, kEstimatorMin);
    CHECK(min_estimate >= base);
    CHECK(min_estimate < base + 2.0);  // a clean repeat: only the jitter on top
    CHECK(EstimateLatency(repeats, kEstimatorMedian) >= base + 40.0);
  }
  // One outlier of three: both estimators stay on clean repeats.
  CHECK(EstimateLatency({251.0, 390.0, 252.5}, kEstimatorMin) == 251.0);
  CHECK(EstimateLatency({251.0, 390.0, 252.5}, kEstimatorMedian) == 252.5);
  // An even count: the median is the mean of the middle two.
  CHECK(EstimateLatency({4.0, 1.0, 3.0, 2.0}, kEstimatorMedian) == Approx(2.5));
  CHECK(EstimateLatency({7.5}, kEstimatorMin) == 7.5);

  REQUIRE_THROWS_AS(EstimateLatency({1.0, 2.0}, "mean"), InputError);
  REQUIRE_THROWS_WITH(EstimateLatency({1.0, 2.0}, "mean"),
                      "latency: unknown estimator \"mean\" (expected min or median)");
  REQUIRE_THROWS_AS(EstimateLatency({}, kEstimatorMin), RunError);
}

TEST_CASE("the estimator defaults to min on the wall clock and median on CUPTI",
          "[evaluators]") {
  LatencyConfig latency;
  CHECK(LatencyEstimatorFor(latency, "wall_clock") == "min");
  CHECK(LatencyEstimatorFor(latency, "cupti") == "median");
  latency.estimator = "median";
  CHECK(LatencyEstimatorFor(latency, "wall_clock") == "median");
  latency.estimator = "min";
  CHECK(LatencyEstimatorFor(latency, "cupti") == "min");
}

// A shape-workload job config ("job.json") whose "latency" object is `latency`.
JobConfig ParseWithLatency(const Json& latency) {
  const Json doc = {{"name", "test"},
                    {"workload", {{"kind", "shape"}, {"shape", "cogvideox-5b"}}},
                    {"latency", latency}};
  return ParseJobConfig(doc, "job.json", ".");
}

TEST_CASE("latency.estimator is read strictly from the job config", "[evaluators]") {
  const auto parse = ParseWithLatency;
  CHECK(parse(Json::object()).latency.estimator.empty());
  CHECK(parse({{"estimator", "min"}}).latency.estimator == "min");
  CHECK(parse({{"estimator", "median"}, {"repeats", 5}}).latency.estimator == "median");
  REQUIRE_THROWS_WITH(parse({{"estimator", "mean"}}),
                      "job.json: field 'latency.estimator': must be one of min, median (got "
                      "\"mean\")");
  REQUIRE_THROWS_AS(parse({{"estimator", "MIN"}}), InputError);
  REQUIRE_THROWS_AS(parse({{"estimator", 1}}), InputError);
  REQUIRE_THROWS_AS(parse({{"estimator", nullptr}}), InputError);
  REQUIRE_THROWS_AS(parse({{"estimators", "min"}}), InputError);
}

TEST_CASE("candidates and references keep every repeat and are estimated from them",
          "[evaluators]") {
  for (const char* estimator : {"min", "median"}) {
    INFO(estimator);
    JobConfig job = SmallJob();
    job.latency.repeats = 3;
    job.latency.estimator = estimator;
    job.latency.pairing = "bracketed";
    Evaluator ev(job, SmallWorkload());
    const ModelGeometry& g = ev.workload().geometry();
    const Schedule sparse = UniformSchedule(g, Pattern(PatternKind::kBlockSparse, 1.0, 0.5), 1);
    const EvalResult r = ev.evaluate_schedule(sparse);
    REQUIRE(r.ok);
    CHECK(r.extra.at("latency_estimator") == estimator);
    const std::vector<double> repeats = r.extra.at("repeat_ms").get<std::vector<double>>();
    REQUIRE(repeats.size() == 3);
    CHECK(r.latency_ms == Approx(EstimateLatency(repeats, estimator)));
    const std::vector<DenseReference>& refs = ev.dense_references();
    REQUIRE(refs.size() == 2);
    for (const DenseReference& d : refs) {
      REQUIRE(d.repeat_ms.size() == 3);
      CHECK(d.latency_ms == Approx(EstimateLatency(d.repeat_ms, estimator)));
    }
    const Json& ref = r.extra.at("dense_reference");
    CHECK(ref.at("before_repeat_ms").get<std::vector<double>>() == refs[0].repeat_ms);
    CHECK(ref.at("after_repeat_ms").get<std::vector<double>>() == refs[1].repeat_ms);
    CHECK(r.dense_latency_ms == Approx(0.5 * (refs[0].latency_ms + refs[1].latency_ms)));
  }
}

// Forwards to a workload and records, per run, the Runtime object it ran under and the sample.
class RecordingWorkload : public Workload {
 public:
  explicit RecordingWorkload(std::unique_ptr<Workload> inner)
      : Workload(inner->options()), inner_(std::move(inner)) {}
  const ModelGeometry& geometry() const override { return inner_->geometry(); }
  std::string kind() const override { return inner_->kind(); }
  bool has_ssim() const override { return inner_->has_ssim(); }
  torch::Tensor run(const SampleSpec& sample, Runtime& runtime) override {
    runs.push_back({&runtime, sample.class_id});
    return inner_->run(sample, runtime);
  }
  Quality compare(const torch::Tensor& dense, const torch::Tensor& output) const override {
    return inner_->compare(dense, output);
  }
  std::vector<int64_t> capture_steps() const override { return inner_->capture_steps(); }
  std::vector<CapturedCall> capture(const SampleSpec& sample,
                                    const std::vector<int64_t>& steps) override {
    return inner_->capture(sample, steps);
  }
  std::vector<std::pair<const Runtime*, int64_t>> runs;  // (runtime, class) per run

 private:
  std::unique_ptr<Workload> inner_;
};

TEST_CASE("interleaved pairing alternates dense and candidate generations of the same samples",
          "[evaluators]") {
  JobConfig job = SmallJob();
  job.latency.warmup = 1;
  job.latency.repeats = 3;
  job.latency.pairing = "interleaved";
  auto recording = std::make_unique<RecordingWorkload>(SmallWorkload());
  RecordingWorkload* rec = recording.get();
  EvaluatorOptions options;
  options.start_warmup = 2;
  options.heldout = true;
  Evaluator ev(job, std::move(recording), options);
  const ModelGeometry& g = ev.workload().geometry();
  const Schedule sparse = UniformSchedule(g, Pattern(PatternKind::kBlockSparse, 1.0, 0.5), 1);
  const Schedule budget = [&] {
    Schedule s = UniformSchedule(g, HeadPattern{}, 1);
    s.token_budget = {1.0, 0.5, 0.5, 0.5};
    return s;
  }();
  Json bad = ScheduleToJson(sparse);
  bad["block_size"] = -3;

  ev.dense_baseline();
  const size_t start = rec->runs.size();
  // Start warm-up (2) + the baseline measured alone (1 warm-up + 3 repeats).
  CHECK(start == 6);
  REQUIRE(ev.dense_references().size() == 1);
  CHECK_FALSE(ev.dense_references()[0].interleaved);

  const std::vector<EvalResult> batch =
      ev.evaluate({ScheduleToJson(sparse), bad, ScheduleToJson(budget)});
  REQUIRE(batch.size() == 3);
  REQUIRE(batch[0].ok);
  CHECK_FALSE(batch[1].ok);
  REQUIRE(batch[2].ok);
  // One interleaved dense measurement per timed candidate, none for the bad one.
  const std::vector<DenseReference>& refs = ev.dense_references();
  REQUIRE(refs.size() == 3);

  // Per candidate: 1 warm-up, then pairs D C, C D, D C; then its held-out sample (untimed).
  const Runtime* dense_runtime = nullptr;
  size_t at = start;
  for (size_t c : {size_t{0}, size_t{2}}) {
    INFO("candidate " << c);
    const EvalResult& r = batch[c];
    const Runtime* candidate = rec->runs[at].first;
    const std::vector<bool> dense_turn = {false, true, false, false, true, true, false};
    std::vector<int64_t> dense_classes;
    std::vector<int64_t> candidate_classes;
    for (size_t k = 0; k < dense_turn.size(); ++k) {
      const auto& [runtime, cls] = rec->runs[at + k];
      if (dense_turn[k]) {
        CHECK(runtime != candidate);
        if (dense_runtime == nullptr) dense_runtime = runtime;
        CHECK(runtime == dense_runtime);  // one persistent dense runtime
        dense_classes.push_back(cls);
      } else {
        CHECK(runtime == candidate);
        if (k > 0) candidate_classes.push_back(cls);  // timed ones
      }
    }
    // Dense generation k runs the sample of timed candidate generation k.
    CHECK(dense_classes == candidate_classes);
    CHECK(rec->runs[at + dense_turn.size()].second == 1);  // the held-out sample's class
    at += dense_turn.size() + 1;
    if (c == 0) {
      // The held-out sample's dense output, computed (untimed) when first needed.
      CHECK(rec->runs[at].second == 1);
      CHECK(rec->runs[at].first != dense_runtime);
      ++at;
    }

    const DenseReference& ref = refs[c == 0 ? 1 : 2];
    CHECK(ref.interleaved);
    REQUIRE(ref.repeat_ms.size() == 3);
    CHECK(ref.latency_ms == Approx(EstimateLatency(ref.repeat_ms, "min")));
    const std::vector<double> repeats = r.extra.at("repeat_ms").get<std::vector<double>>();
    REQUIRE(repeats.size() == 3);
    CHECK(r.latency_ms == Approx(EstimateLatency(repeats, "min")));
    CHECK(r.dense_latency_ms == Approx(ref.latency_ms));
    CHECK(r.speedup == Approx(r.dense_latency_ms / r.latency_ms));
    const Json& pairing = r.extra.at("dense_reference");
    CHECK(pairing.at("pairing") == "interleaved");
    CHECK(pairing.at("repeat_ms").get<std::vector<double>>() == ref.repeat_ms);
  }
  CHECK(at == rec->runs.size());
  // The candidate's outputs are scored, not the dense ones: the sparse schedule loses quality.
  CHECK(batch[0].psnr < 100.0);
  CHECK(batch[2].psnr < 100.0);
}

TEST_CASE("pairing defaults to interleaved on the wall clock and bracketed on CUPTI and is read "
          "strictly", "[evaluators]") {
  LatencyConfig latency;
  CHECK(LatencyPairingFor(latency, "wall_clock") == "interleaved");
  CHECK(LatencyPairingFor(latency, "cupti") == "bracketed");
  latency.pairing = "bracketed";
  CHECK(LatencyPairingFor(latency, "wall_clock") == "bracketed");
  latency.pairing = "interleaved";
  CHECK(LatencyPairingFor(latency, "cupti") == "interleaved");

  const auto parse = ParseWithLatency;
  CHECK(parse(Json::object()).latency.pairing.empty());
  CHECK(parse({{"pairing", "bracketed"}}).latency.pairing == "bracketed");
  REQUIRE_THROWS_WITH(parse({{"pairing", "paired"}}),
                      "job.json: field 'latency.pairing': must be one of interleaved, bracketed "
                      "(got \"paired\")");
  REQUIRE_THROWS_AS(parse({{"pairing", 2}}), InputError);
}

TEST_CASE("held-out samples are scored when asked for", "[evaluators]") {
  EvaluatorOptions options;
  options.heldout = true;
  Evaluator ev(SmallJob(), SmallWorkload(), options);
  const Schedule dense = UniformSchedule(ev.workload().geometry(), HeadPattern{}, 0);
  const EvalResult r = ev.evaluate_schedule(dense);
  REQUIRE(r.ok);
  CHECK(r.psnr_heldout == 100.0);
  CHECK(r.ssim_heldout == Approx(1.0));
  CHECK(r.extra["samples"].size() == 3);
}

TEST_CASE("a sparse schedule gives finite PSNR and density below 1", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  const ModelGeometry& g = ev.workload().geometry();
  // Not temporal: here one attention block is one whole frame, so a temporal head (same position
  // across frames) keeps every block.
  for (const HeadPattern& p : {Pattern(PatternKind::kSpatial, 0.25),
                               Pattern(PatternKind::kTextural, 0.25),
                               Pattern(PatternKind::kBlockSparse, 1.0, 0.3)}) {
    INFO("pattern " << ToString(p.pattern));
    const EvalResult r = ev.evaluate_schedule(UniformSchedule(g, p, 1));
    REQUIRE(r.ok);
    CHECK(std::isfinite(r.psnr));
    CHECK(r.psnr < 100.0);
    CHECK(r.ssim < 1.0);
    CHECK(r.density < 1.0);
    CHECK(r.token_density == Approx(1.0));
  }
}

TEST_CASE("an Astraea budget below 1 changes the output and lowers token density",
          "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  Schedule s = UniformSchedule(ev.workload().geometry(), HeadPattern{}, 1);
  s.token_budget = {1.0, 0.5, 0.5, 0.5};
  const EvalResult r = ev.evaluate_schedule(s);
  REQUIRE(r.ok);
  CHECK(r.psnr < 100.0);
  CHECK(std::isfinite(r.psnr));
  CHECK(r.token_density < 1.0);
  CHECK(r.token_density > 0.5);
}

TEST_CASE("evaluation is deterministic for fixed seeds", "[evaluators]") {
  Evaluator a(SmallJob(), SmallWorkload());
  Evaluator b(SmallJob(), SmallWorkload());
  const Schedule s = UniformSchedule(a.workload().geometry(), Pattern(PatternKind::kSpatial, 0.25), 1);
  const EvalResult ra = a.evaluate_schedule(s);
  const EvalResult rb = b.evaluate_schedule(s);
  REQUIRE(ra.ok);
  REQUIRE(rb.ok);
  CHECK(ra.psnr == rb.psnr);
  CHECK(ra.ssim == rb.ssim);
  CHECK(ra.density == rb.density);
  CHECK(a.evaluate_schedule(s).psnr == ra.psnr);
}

TEST_CASE("failing candidates give error results, not exceptions", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  const ModelGeometry& g = ev.workload().geometry();

  SECTION("geometry mismatch") {
    ModelGeometry other = g;
    other.heads = 4;
    const EvalResult r = ev.evaluate_one(ScheduleToJson(Schedule::Dense(other)));
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("heads") != std::string::npos);
  }
  SECTION("invalid schedule document") {
    Json doc = ScheduleToJson(Schedule::Dense(g));
    doc["block_size"] = -3;
    const std::vector<EvalResult> r = ev.evaluate({doc, Json::array()});
    REQUIRE(r.size() == 2);
    CHECK_FALSE(r[0].ok);
    CHECK(r[0].error.find("block_size") != std::string::npos);
    CHECK_FALSE(r[1].ok);
    CHECK_FALSE(r[1].error.empty());
  }
  SECTION("a candidate whose output holds NaN") {
    // The dense outputs are computed from the healthy model; then the output projection is
    // poisoned, so the candidate's video is NaN.
    auto workload = SmallWorkload();
    Evaluator poisoned(SmallJob(), std::move(workload));
    auto& model = dynamic_cast<TinyVditWorkload&>(poisoned.workload()).model();
    {
      torch::NoGradGuard no_grad;
      REQUIRE(poisoned.dense_baseline().ok);
      model->final_proj->bias.fill_(std::nan(""));
    }
    const EvalResult r = poisoned.evaluate_schedule(UniformSchedule(g, HeadPattern{}, 0));
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("NaN") != std::string::npos);
  }
  // The evaluator still works after failures.
  CHECK(ev.evaluate_schedule(UniformSchedule(g, HeadPattern{}, 0)).psnr == 100.0);
}

TEST_CASE("the evaluator builds the configured workload and reports geometry and device",
          "[evaluators]") {
  JobConfig job = SmallJob();
  job.workload.steps = 2;  // cpu-tiny with 2 sampler steps keeps this test fast
  Evaluator ev(job);
  CHECK(ev.model_geometry()["name"] == "tiny-vdit/cpu-tiny");
  CHECK(ev.model_geometry()["steps"] == 2);
  CHECK(ev.model_geometry()["grid"] == Json::array({8, 8, 8}));
  CHECK(ev.device_name().rfind("cpu: ", 0) == 0);
}

TEST_CASE("head advice gives ARM picks and per-option errors", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  const std::vector<Json> options = {HeadPatternToJson(HeadPattern{}),
                                     HeadPatternToJson(Pattern(PatternKind::kSpatial, 0.25))};
  const Json advice = ev.head_advice(options);
  REQUIRE(advice["arm"].size() == 2);
  REQUIRE(advice["arm"][0].size() == 2);
  for (const Json& layer : advice["arm"]) {
    for (const Json& pick : layer) {
      const std::string name = pick.get<std::string>();
      CHECK((name == "spatial" || name == "temporal" || name == "textural"));
    }
  }
  REQUIRE(advice["error"].size() == 2);
  for (const Json& layer : advice["error"]) {
    REQUIRE(layer.size() == 2);
    for (const Json& head : layer) {
      REQUIRE(head.size() == 2);
      CHECK(head[0].get<double>() == Approx(0.0).margin(1e-6));
      CHECK(head[1].get<double>() > 0.0);
    }
  }
}

TEST_CASE("analyze reports attention shares against uniform attention", "[evaluators]") {
  Evaluator ev(SmallJob(), SmallWorkload());
  const AttentionAnalysis a = AnalyzeAttention(ev);
  REQUIRE(a.heads.size() == 4);
  CHECK(a.steps == std::vector<int64_t>{1, 2, 3});
  for (const HeadStructure& h : a.heads) {
    // 68 keys: 16 in the query's frame, 4 at its position across the 4 frames, 16 strided.
    CHECK(h.uniform_same_frame == Approx(16.0 / 68));
    CHECK(h.uniform_same_position == Approx(4.0 / 68));
    CHECK(h.uniform_strided == Approx(16.0 / 68));
    for (double share : {h.same_frame, h.same_position, h.strided}) {
      CHECK(share > 0.0);
      CHECK(share < 1.0);
    }
    CHECK_FALSE(h.arm_pick.empty());
  }
  const Json j = ToJson(a);
  CHECK(j["heads"].size() == 4);
  CHECK(FormatAnalysis(a).find("same_frame") != std::string::npos);
}

}  // namespace
}  // namespace sparsetune
