// `sparsetune bench evaluate CONFIG [--candidates N] [--seed S] [--json]`: how long one candidate
// evaluation of a job takes (calibration samples only, dense baselines cached), which bounds how
// long a search of that config runs. Candidates: the dense seed every --dense-every-th (its
// speedup checks the dense reference), uniform budget 0.5, uniform block-sparse, then random
// genomes of the config's search space; evaluated in batches of the job's batch size.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "search/operators.h"
#include "search/space.h"

namespace sparsetune::cli {

namespace {

struct BenchEvaluateOptions {
  std::string config;       // job config
  int64_t candidates = 12;  // candidates to time
  uint64_t seed = 0;        // seed of the random genomes
  bool json = false;        // one JSON object instead of a table
  int64_t dense_every = 4;  // every N-th candidate is the dense seed (0 = never)
};

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string NowUtc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int RunBenchEvaluate(const BenchEvaluateOptions& o) {
  const JobConfig config = LoadJobConfig(o.config);
  Evaluator evaluator(config);  // calibration samples only, as during a search
  const auto t_dense = std::chrono::steady_clock::now();
  const EvalResult dense = evaluator.dense_baseline();
  const double dense_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_dense).count();

  // The dense seed genome every `dense_every`-th candidate (0, N, 2N, ...): its measured speedup
  // should be 1 within noise, which checks the dense reference.
  const SearchSpace space(config, evaluator.model_geometry());
  std::vector<Genome> others = {space.UniformBudget(0.5)};
  const int64_t sparse = space.FindOption("block_sparse", 0.2);
  if (sparse >= 0) others.push_back(space.UniformHeads(sparse));
  std::mt19937_64 rng(o.seed);
  std::vector<Genome> genomes;
  size_t next_other = 0;
  for (int64_t i = 0; i < o.candidates; ++i) {
    if (o.dense_every > 0 && i % o.dense_every == 0) {
      genomes.push_back(space.Dense());
    } else if (next_other < others.size()) {
      genomes.push_back(others[next_other++]);
    } else {
      genomes.push_back(RandomGenome(space, rng));
    }
  }

  // Batches of the job's batch size, as a search evaluates them: the time per candidate includes
  // the dense reference measurements the evaluator interleaves.
  const size_t batch = static_cast<size_t>(
      config.search.batch_size > 0 ? config.search.batch_size : config.search.population);
  Json rows = Json::array();
  std::vector<double> seconds;  // per batch, divided by its candidates
  std::vector<double> dense_speedups;
  for (size_t first = 0; first < genomes.size(); first += std::max<size_t>(batch, 1)) {
    const size_t last = std::min(genomes.size(), first + std::max<size_t>(batch, 1));
    std::vector<Json> schedules;
    for (size_t i = first; i < last; ++i) {
      space.Normalize(&genomes[i]);
      schedules.push_back(space.ToSchedule(genomes[i]));
    }
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<EvalResult> results = evaluator.evaluate(schedules);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds.push_back(s / static_cast<double>(last - first));
    for (size_t i = first; i < last; ++i) {
      const EvalResult& r = results[i - first];
      const bool is_dense = genomes[i] == space.Dense();
      if (is_dense && r.ok) dense_speedups.push_back(r.speedup);
      rows.push_back({{"candidate", i},
                      {"dense", is_dense},
                      {"ok", r.ok},
                      {"speedup", std::isfinite(r.speedup) ? Json(r.speedup) : Json(nullptr)},
                      {"psnr", std::isfinite(r.psnr) ? Json(r.psnr) : Json(nullptr)},
                      {"latency_ms", r.latency_ms},
                      {"dense_latency_ms", r.dense_latency_ms},
                      {"repeat_ms", r.extra.value("repeat_ms", Json::array())},
                      {"dense_reference", r.extra.value("dense_reference", Json::object())}});
      if (!o.json) {
        std::fprintf(stderr, "candidate %zu%s: speedup %.3fx, PSNR %.2f dB%s\n", i,
                     is_dense ? " (dense)" : "", r.speedup, r.psnr, r.ok ? "" : " FAILED");
      }
    }
  }
  // Every dense reference the evaluator measured between the candidates (the same path as a
  // candidate): their spread is the timing noise every speedup above carries.
  Json references = Json::array();
  std::vector<double> reference_ms;
  for (const DenseReference& d : evaluator.dense_references()) {
    references.push_back({{"latency_ms", d.latency_ms},
                          {"repeat_ms", d.repeat_ms},
                          {"spread", d.spread},
                          {"after_candidates", d.after_candidates},
                          {"minor_faults", d.minor_faults},
                          {"interleaved", d.interleaved}});
    reference_ms.push_back(d.latency_ms);
  }
  const double ref_median = Median(reference_ms);
  const double ref_spread =
      (*std::max_element(reference_ms.begin(), reference_ms.end()) -
       *std::min_element(reference_ms.begin(), reference_ms.end())) / ref_median;
  const BuildInfo& b = GetBuildInfo();
  const Json out = {{"config", o.config},
                    {"cpu", CpuModel()},
                    {"threads", config.device.threads},
                    {"device", evaluator.device_name()},
                    {"commit", b.git_commit},
                    {"date", NowUtc()},
                    {"calibration_samples", config.workload.calibration.size()},
                    {"latency_warmup", config.latency.warmup},
                    {"latency_repeats", config.latency.repeats},
                    {"dense_baseline_s", dense_s},
                    {"dense_latency_ms", dense.latency_ms},
                    {"dense_start_warmup_ms", dense.extra.value("start_warmup_ms", Json::array())},
                    {"dense_references", references},
                    {"dense_reference_median_ms", ref_median},
                    {"dense_reference_spread", ref_spread},
                    {"batch_size", batch},
                    {"s_per_candidate", Median(seconds)},
                    {"max_s_per_candidate_batch",
                     *std::max_element(seconds.begin(), seconds.end())},
                    {"dense_candidate_speedups", dense_speedups},
                    {"dense_candidate_speedup_median",
                     dense_speedups.empty() ? Json(nullptr) : Json(Median(dense_speedups))},
                    {"candidates", rows}};
  if (o.json) {
    std::cout << out.dump() << "\n";
  } else {
    std::printf("%s on %s: dense baseline %.2f s (once), one candidate evaluation: %.2f s "
                "(median over batches of %zu, dense references included), %zu candidates; %zu "
                "dense references, median %.1f ms, spread %.1f%%; dense seed speedup median "
                "%.3fx over %zu\n",
                o.config.c_str(), evaluator.device_name().c_str(), dense_s, Median(seconds),
                batch, genomes.size(), reference_ms.size(), ref_median, 100.0 * ref_spread,
                dense_speedups.empty() ? 0.0 : Median(dense_speedups), dense_speedups.size());
  }
  return 0;
}

}  // namespace

void AddBenchEvaluateCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchEvaluateOptions>();
  CLI::App* bench = app.get_subcommand("bench");
  CLI::App* cmd = bench->add_subcommand(
      "evaluate",
      "Time one candidate evaluation of a job config (calibration samples only, dense baselines "
      "cached, as during a search) over the search's seeds and random candidates");
  cmd->add_option("CONFIG", o->config, "Job config")->required();
  cmd->add_option("--candidates", o->candidates, "Candidates to time")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  cmd->add_option("--dense-every", o->dense_every,
                  "Every N-th candidate is the dense seed, whose speedup should be 1 (0: none)")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the random candidates")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print one JSON object instead of a table");
  cmd->callback([o, &exit_code] { exit_code = RunBenchEvaluate(*o); });
}

}  // namespace sparsetune::cli
