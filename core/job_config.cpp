#include "core/job_config.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace sparsetune {

namespace {

std::vector<SampleSpec> ReadSamples(JsonReader& parent, const std::string& key, bool required) {
  std::vector<SampleSpec> out;
  if (!parent.has(key)) {
    if (required) parent.fail(key, "is required but missing");
    parent.find(key);
    return out;
  }
  for (JsonReader& s : parent.objects(key, required ? 1 : 0)) {
    SampleSpec spec;
    spec.class_id = s.integer("class", 0, 1 << 20);
    spec.seed = static_cast<uint64_t>(s.integer("seed", 0, int64_t{1} << 53));
    s.finish();
    out.push_back(spec);
  }
  return out;
}

void ReadWorkload(JsonReader r, JobConfig& job) {
  WorkloadConfig& w = job.workload;
  w.kind = r.choice("kind", {"tiny-vdit", "trace", "shape"});
  if (w.kind == "tiny-vdit") {
    w.preset = r.choice("preset", "cpu-tiny", {"cpu-tiny", "gpu-small"});
    w.weights = r.optional_path("weights");
    w.init_seed = static_cast<uint64_t>(r.integer("init_seed", 0, 0, int64_t{1} << 53));
    w.steps = r.integer("steps", 0, 0, 1000);
  } else if (w.kind == "trace") {
    w.trace = r.path("trace");
  } else {
    w.shape = r.choice("shape", {"wan2.1-1.3b-480p", "hunyuan-720p", "cogvideox-5b"});
    w.shape_layers = r.integer("layers", 1, 1, 1000);
    w.shape_steps = r.integer("steps", 1, 1, 1000);
  }
  // A shape workload measures latency only, so it needs no samples.
  const bool needs_samples = w.kind != "shape";
  w.calibration = ReadSamples(r, "calibration", needs_samples);
  w.heldout = ReadSamples(r, "heldout", false);
  r.finish();
}

void ReadDevice(JsonReader r, DeviceConfig& d) {
  d.device = r.choice("device", "cpu", {"cpu", "cuda"});
  d.dtype = r.choice("dtype", d.device == "cuda" ? "bfloat16" : "float32",
                     {"float32", "bfloat16", "float16"});
  if (d.device == "cpu" && d.dtype != "float32") {
    r.fail("dtype", "must be float32 on the cpu device (got \"" + d.dtype + "\")");
  }
  d.threads = r.integer("threads", 0, 0, 1024);
  r.finish();
}

void ReadLatency(JsonReader r, LatencyConfig& l) {
  l.warmup = r.integer("warmup", l.warmup, 0, 100);
  l.repeats = r.integer("repeats", l.repeats, 1, 1000);
  l.estimator = r.choice("estimator", "", {"min", "median"});
  l.pairing = r.choice("pairing", "", {"interleaved", "bracketed"});
  r.finish();
}

void ReadScheduleBase(JsonReader r, ScheduleBaseConfig& s) {
  s.block_size = r.integer("block_size", s.block_size, 1, 4096);
  s.token_order = r.choice("token_order", s.token_order, {"raster", "tiles"});
  if (r.has("tile")) {
    const auto t = r.integers("tile", 1, 1 << 16, 3, 3);
    s.tile = {t[0], t[1], t[2]};
  } else {
    r.find("tile");
  }
  s.first_frame_sink = r.boolean("first_frame_sink", s.first_frame_sink);
  s.mask_refresh = r.integer("mask_refresh", s.mask_refresh, 1, 1000);
  s.arm_refresh = r.integer("arm_refresh", s.arm_refresh, 1, 1000);
  r.finish();
}

void ReadSpace(JsonReader r, SearchSpaceConfig& s) {
  if (r.has("budgets")) s.budgets = r.numbers("budgets", 0.01, 1.0);
  else r.find("budgets");
  if (r.has("warmup_steps")) s.warmup_steps = r.integers("warmup_steps", 0, 1000, 1);
  else r.find("warmup_steps");
  if (r.has("patterns")) {
    s.patterns = r.strings("patterns");
    static const std::set<std::string> kKnown = {"dense",    "spatial",      "temporal",
                                                 "textural", "block_sparse", "auto"};
    std::set<std::string> seen;
    for (size_t i = 0; i < s.patterns.size(); ++i) {
      const std::string at = "patterns[" + std::to_string(i) + "]";
      if (kKnown.count(s.patterns[i]) == 0) {
        r.fail(at, "unknown pattern \"" + s.patterns[i] +
                       "\" (expected dense, spatial, temporal, textural, block_sparse or auto)");
      }
      if (!seen.insert(s.patterns[i]).second) r.fail(at, "pattern listed twice");
    }
  } else {
    r.find("patterns");
  }
  if (r.has("densities")) s.densities = r.numbers("densities", 0.001, 1.0);
  else r.find("densities");
  if (r.has("keeps")) s.keeps = r.numbers("keeps", 0.001, 1.0);
  else r.find("keeps");
  if (r.has("reuse_thresholds")) s.reuse_thresholds = r.numbers("reuse_thresholds", -1.0, 1.0);
  else r.find("reuse_thresholds");

  const auto uses = [&](const char* p) {
    return std::find(s.patterns.begin(), s.patterns.end(), p) != s.patterns.end();
  };
  const bool rainfusion = uses("spatial") || uses("temporal") || uses("textural");
  if (rainfusion && s.densities.empty()) {
    r.fail("densities", "must not be empty when spatial, temporal or textural patterns are searched");
  }
  if (uses("block_sparse") && s.keeps.empty()) {
    r.fail("keeps", "must not be empty when block_sparse is searched");
  }
  const bool patterns_vary = !(s.patterns.empty() || (s.patterns.size() == 1 && uses("dense")));
  const bool budgets_vary =
      std::any_of(s.budgets.begin(), s.budgets.end(), [](double b) { return b < 1.0; });
  if (!patterns_vary && !budgets_vary && s.reuse_thresholds.empty()) {
    r.fail("", "empty search space: no sparse pattern, no token budget below 1 and no reuse "
               "threshold to search (set search_space.patterns, budgets or reuse_thresholds)");
  }
  r.finish();
}

void ReadSearch(JsonReader r, SearchConfig& s) {
  s.strategy = r.choice("strategy", s.strategy, {"evolutionary", "nsga2", "random"});
  s.population = r.integer("population", s.population, 2, 100000);
  s.generations = r.integer("generations", s.generations, 0, 100000);
  s.seed = static_cast<uint64_t>(r.integer("seed", 0, 0, int64_t{1} << 53));
  s.mutation_rate = r.number("mutation_rate", s.mutation_rate, 0.0, 1.0);
  s.crossover_rate = r.number("crossover_rate", s.crossover_rate, 0.0, 1.0);
  s.tournament = r.integer("tournament", s.tournament, 1, 1000);
  s.elites = r.integer("elites", s.elites, 0, 100000);
  if (s.elites >= s.population) {
    r.fail("elites", "must be smaller than search.population (" + std::to_string(s.population) +
                         ")");
  }
  s.batch_size = r.integer("batch_size", s.batch_size, 0, 100000);
  r.finish();
}

void ReadObjective(JsonReader r, ObjectiveConfig& o) {
  o.metric = r.choice("metric", o.metric, {"psnr", "ssim"});
  if (r.has("min_speedup")) {
    // A speedup above 1000x cannot be reached by sparse attention on any model we support.
    o.min_speedup = r.number("min_speedup", 0.0, 1000.0);
    if (*o.min_speedup <= 0.0) r.fail("min_speedup", "must be > 0 (got 0)");
  } else {
    r.find("min_speedup");
  }
  if (r.has("max_latency_ms")) {
    o.max_latency_ms = r.number("max_latency_ms", 0.0, 1e9);
    if (*o.max_latency_ms <= 0.0) r.fail("max_latency_ms", "must be > 0 (got 0)");
  } else {
    r.find("max_latency_ms");
  }
  r.finish();
}

}  // namespace

JobConfig ParseJobConfig(const Json& document, const std::string& source,
                         const std::filesystem::path& base_dir) {
  JsonReader root(document, source, "", base_dir);
  JobConfig job;
  job.source = source;
  job.raw = document;
  job.name = root.string("name", std::filesystem::path(source).stem().string());
  if (job.name.empty()) root.fail("name", "must not be empty");
  ReadWorkload(root.object("workload"), job);
  if (auto d = root.optional_object("device")) ReadDevice(*d, job.device);
  if (auto l = root.optional_object("latency")) ReadLatency(*l, job.latency);
  if (auto s = root.optional_object("schedule")) ReadScheduleBase(*s, job.schedule);
  if (auto s = root.optional_object("search_space")) ReadSpace(*s, job.space);
  if (auto s = root.optional_object("search")) ReadSearch(*s, job.search);
  if (auto o = root.optional_object("objective")) ReadObjective(*o, job.objective);
  if (auto p = root.optional_path("store")) {
    job.store = *p;
  } else {
    job.store = "results/sparsetune.sqlite";
  }
  root.finish();
  return job;
}

JobConfig LoadJobConfig(const std::filesystem::path& path) {
  const Json document = LoadJsonFile(path);
  std::filesystem::path base = path.parent_path();
  if (base.empty()) base = ".";
  return ParseJobConfig(document, path.string(), base);
}

}  // namespace sparsetune
