// `sparsetune bench evaluate CONFIG [--candidates N] [--seed S] [--json]`: how long one candidate
// evaluation of a job takes (calibration samples only, dense baselines cached), which bounds how
// long a search of that config runs. Candidates are the seeds a search starts from (dense,
// uniform budgets, uniform block-sparse) plus random genomes of the config's search space.
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

  const SearchSpace space(config, evaluator.model_geometry());
  std::vector<Genome> genomes = {space.Dense(), space.UniformBudget(0.5)};
  const int64_t sparse = space.FindOption("block_sparse", 0.2);
  if (sparse >= 0) genomes.push_back(space.UniformHeads(sparse));
  std::mt19937_64 rng(o.seed);
  while (static_cast<int64_t>(genomes.size()) < o.candidates) {
    genomes.push_back(RandomGenome(space, rng));
  }
  genomes.resize(static_cast<size_t>(o.candidates));

  Json rows = Json::array();
  std::vector<double> seconds;
  for (size_t i = 0; i < genomes.size(); ++i) {
    space.Normalize(&genomes[i]);
    const Json schedule = space.ToSchedule(genomes[i]);
    const auto t0 = std::chrono::steady_clock::now();
    const EvalResult r = evaluator.evaluate({schedule}).front();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds.push_back(s);
    rows.push_back({{"candidate", i},
                    {"seconds", s},
                    {"ok", r.ok},
                    {"speedup", std::isfinite(r.speedup) ? Json(r.speedup) : Json(nullptr)},
                    {"psnr", std::isfinite(r.psnr) ? Json(r.psnr) : Json(nullptr)}});
    if (!o.json) {
      std::fprintf(stderr, "candidate %zu: %.2f s (speedup %.2fx, PSNR %.2f dB)%s\n", i, s,
                   r.speedup, r.psnr, r.ok ? "" : " FAILED");
    }
  }
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
                    {"median_s_per_candidate", Median(seconds)},
                    {"max_s_per_candidate", *std::max_element(seconds.begin(), seconds.end())},
                    {"candidates", rows}};
  if (o.json) {
    std::cout << out.dump() << "\n";
  } else {
    std::printf("%s on %s: dense baseline %.2f s (once), one candidate evaluation: median %.2f s, "
                "max %.2f s over %zu candidates\n",
                o.config.c_str(), evaluator.device_name().c_str(), dense_s, Median(seconds),
                out["max_s_per_candidate"].get<double>(), seconds.size());
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
  cmd->add_option("--seed", o->seed, "Seed of the random candidates")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print one JSON object instead of a table");
  cmd->callback([o, &exit_code] { exit_code = RunBenchEvaluate(*o); });
}

}  // namespace sparsetune::cli
