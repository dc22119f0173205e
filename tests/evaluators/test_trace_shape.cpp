#include <cmath>
#include <fstream>

#include "datasets/tensor_io.h"
#include "evaluators/evaluator.h"
#include "evaluators/shape_workload.h"
#include "evaluators/trace_workload.h"
#include "tests/catch.h"
#include "tests/evaluators/evaluators_test_util.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

using test::InputErrorOf;
using test::SmallJob;
using test::UniformSchedule;

ModelGeometry TraceGeometry() {
  ModelGeometry g;
  g.name = "traced-model";
  g.layers = 2;
  g.heads = 2;
  g.head_dim = 8;
  g.grid = {2, 4, 4};
  g.text_tokens = 2;
  g.text_position = TextPosition::kFront;
  g.steps = 3;
  g.rope_split = RopeSplitFor(8);
  return g;
}

// Writes a trace of every (step, layer) of sample 0 and step 2 of sample 1; returns the manifest.
Json WriteTrace(const std::filesystem::path& dir) {
  const ModelGeometry g = TraceGeometry();
  torch::manual_seed(21);
  std::map<std::string, torch::Tensor> tensors;
  Json calls = Json::array();
  for (int sample = 0; sample < 2; ++sample) {
    for (int64_t step = sample == 0 ? 0 : 2; step < g.steps; ++step) {
      for (int64_t layer = 0; layer < g.layers; ++layer) {
        const std::string key = "s" + std::to_string(sample) + "_t" + std::to_string(step) +
                                "_l" + std::to_string(layer);
        for (const char* part : {"q", "k", "v"}) {
          tensors[key + "." + part] = torch::randn({1, g.heads, g.tokens(), g.head_dim});
        }
        calls.push_back({{"sample", sample}, {"step", step}, {"layer", layer},
                         {"file", "calls.safetensors"}, {"q", key + ".q"}, {"k", key + ".k"},
                         {"v", key + ".v"}});
      }
    }
  }
  SaveTensors(dir / "calls.safetensors", tensors);
  return {{"format", "sparsetune.trace"},
          {"version", 1},
          {"model", ModelGeometryToJson(g)},
          {"calls", calls}};
}

std::string LoadError(const std::filesystem::path& dir, const Json& manifest) {
  SaveJsonFile(dir / "bad.json", manifest);
  return InputErrorOf([&] { TraceWorkload(dir / "bad.json", torch::TensorOptions()); });
}

TEST_CASE("a trace workload loads and scores attention outputs", "[evaluators]") {
  test::TempDir dir;
  SaveJsonFile(dir / "trace.json", WriteTrace(dir.path()));
  auto workload = std::make_unique<TraceWorkload>(dir / "trace.json", torch::TensorOptions());
  CHECK(workload->geometry() == TraceGeometry());
  CHECK(workload->calls().at(0).size() == 6);
  CHECK(workload->calls().at(1).size() == 2);
  CHECK(workload->capture_steps() == std::vector<int64_t>{0, 1, 2});

  JobConfig job = SmallJob();
  job.workload.calibration = {SampleSpec{0, 0}};
  job.workload.heldout = {SampleSpec{1, 0}};
  EvaluatorOptions options;
  options.heldout = true;
  Evaluator ev(job, std::move(workload), options);
  const ModelGeometry g = TraceGeometry();
  const EvalResult dense = ev.evaluate_schedule(UniformSchedule(g, HeadPattern{}, 0));
  REQUIRE(dense.ok);
  CHECK(dense.psnr == 100.0);
  CHECK(std::isnan(dense.ssim));
  CHECK(dense.psnr_heldout == 100.0);

  HeadPattern sparse;
  sparse.pattern = PatternKind::kBlockSparse;
  sparse.keep = 0.3;
  sparse.first_frame_sink = false;  // with 2 frames, a dense first frame would leave little sparse
  const EvalResult r = ev.evaluate_schedule(UniformSchedule(g, sparse, 1));
  REQUIRE(r.ok);
  CHECK(std::isfinite(r.psnr));
  CHECK(r.psnr < 100.0);
  CHECK(r.density < 1.0);
  const Json& sample = r.extra["samples"][0];
  CHECK(sample["head_rel_l2"].size() == 2);
  CHECK(sample["head_cosine"].size() == 2);

  // A sample id the trace does not hold is a failed evaluation naming it.
  JobConfig missing = job;
  missing.workload.calibration = {SampleSpec{5, 0}};
  Evaluator ev_missing(missing,
                       std::make_unique<TraceWorkload>(dir / "trace.json", torch::TensorOptions()));
  const EvalResult m = ev_missing.evaluate_schedule(UniformSchedule(g, HeadPattern{}, 0));
  CHECK_FALSE(m.ok);
  CHECK(m.error.find("no calls for sample 5") != std::string::npos);
}

TEST_CASE("an ssim objective is rejected for attention-output workloads", "[evaluators]") {
  test::TempDir dir;
  SaveJsonFile(dir / "trace.json", WriteTrace(dir.path()));
  JobConfig job = SmallJob();
  job.objective.metric = "ssim";
  const std::string msg = InputErrorOf([&] {
    Evaluator(job, std::make_unique<TraceWorkload>(dir / "trace.json", torch::TensorOptions()));
  });
  CHECK(msg.find("objective.metric") != std::string::npos);
}

TEST_CASE("malformed traces are rejected with clear errors", "[evaluators]") {
  test::TempDir dir;
  const Json good = WriteTrace(dir.path());

  CHECK(InputErrorOf([&] { TraceWorkload(dir / "absent.json", torch::TensorOptions()); })
            .find("absent.json") != std::string::npos);

  Json m = good;
  m["format"] = "sparsetune.schedule";
  CHECK(LoadError(dir.path(), m).find("field 'format'") != std::string::npos);

  m = good;
  m["extra"] = 1;
  CHECK(LoadError(dir.path(), m).find("extra") != std::string::npos);

  m = good;
  m["calls"][0]["colour"] = "red";
  CHECK(LoadError(dir.path(), m).find("colour") != std::string::npos);

  m = good;
  m["calls"][1]["file"] = "nowhere.safetensors";
  std::string msg = LoadError(dir.path(), m);
  CHECK(msg.find("calls[1].file") != std::string::npos);
  CHECK(msg.find("no such file") != std::string::npos);

  m = good;
  m["calls"][0]["q"] = "nope";
  CHECK(LoadError(dir.path(), m).find("tensor 'nope' is not in") != std::string::npos);

  m = good;
  m["model"]["heads"] = 4;
  msg = LoadError(dir.path(), m);
  CHECK(msg.find("has shape") != std::string::npos);
  CHECK(msg.find("[B, 4, 34, 8]") != std::string::npos);

  m = good;
  m["calls"][0]["step"] = 3;
  CHECK(LoadError(dir.path(), m).find("calls[0].step") != std::string::npos);

  m = good;
  m["calls"][1]["layer"] = 0;
  CHECK(LoadError(dir.path(), m).find("duplicate call") != std::string::npos);

  m = good;
  m["calls"] = Json::array();
  CHECK(LoadError(dir.path(), m).find("calls") != std::string::npos);

  m = good;
  m.erase("model");
  CHECK(LoadError(dir.path(), m).find("model") != std::string::npos);
}

TEST_CASE("named shapes have the real models' attention geometry", "[evaluators]") {
  const ModelGeometry wan = ShapeGeometry("wan2.1-1.3b-480p", 2, 3);
  CHECK(wan.heads == 12);
  CHECK(wan.head_dim == 128);
  CHECK(wan.video_tokens() == 32760);
  CHECK(wan.text_tokens == 0);
  CHECK(wan.rope_split == std::array<int64_t, 3>{44, 42, 42});
  CHECK(wan.layers == 2);
  CHECK(wan.steps == 3);
  const ModelGeometry hunyuan = ShapeGeometry("hunyuan-720p", 1, 1);
  CHECK(hunyuan.heads == 24);
  CHECK(hunyuan.video_tokens() == 118800);
  CHECK(hunyuan.text_tokens == 256);
  CHECK(hunyuan.text_position == TextPosition::kBack);
  const ModelGeometry cog = ShapeGeometry("cogvideox-5b", 1, 1);
  CHECK(cog.heads == 48);
  CHECK(cog.head_dim == 64);
  CHECK(cog.video_tokens() == 17550);
  CHECK(cog.text_tokens == 226);
  CHECK(cog.text_position == TextPosition::kFront);
  CHECK(InputErrorOf([] { ShapeGeometry("sora", 1, 1); }).find("unknown shape 'sora'") !=
        std::string::npos);
}

TEST_CASE("a shape workload runs seeded q/k/v through the runtime", "[evaluators]") {
  // The named shapes are meant for CUDA; the same workload at a small geometry runs here.
  ModelGeometry g = TraceGeometry();
  g.name = "small-shape";
  JobConfig job = SmallJob("shape");
  REQUIRE(job.workload.calibration.empty());
  Evaluator ev(job, std::make_unique<ShapeWorkload>(g, torch::TensorOptions()));
  const EvalResult dense = ev.evaluate_schedule(UniformSchedule(g, HeadPattern{}, 0));
  REQUIRE(dense.ok);
  CHECK(dense.psnr == 100.0);
  CHECK(std::isnan(dense.ssim));
  CHECK(dense.latency_ms > 0);
  HeadPattern sparse;
  sparse.pattern = PatternKind::kSpatial;
  sparse.density = 0.25;
  const EvalResult r = ev.evaluate_schedule(UniformSchedule(g, sparse, 1));
  REQUIRE(r.ok);
  CHECK(r.psnr < 100.0);
  CHECK(r.density < 1.0);

  ShapeWorkload w(g, torch::TensorOptions());
  const std::vector<CapturedCall> calls = w.capture(SampleSpec{}, w.capture_steps());
  REQUIRE(calls.size() == 2);
  CHECK(calls[0].q.abs().min().item<double>() > 0.0);
  CHECK_FALSE(torch::equal(calls[0].q, calls[0].k));
}

}  // namespace
}  // namespace sparsetune
