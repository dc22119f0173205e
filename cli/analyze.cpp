// `sparsetune analyze CONFIG [--json]`: per (layer, head), the share of attention mass on
// same-frame keys, same-position keys across frames and a strided key subset, against uniform
// attention, plus ARM's pick (RainFusion's recognition statistics; docs/workloads.md).
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/job_config.h"
#include "evaluators/analyze.h"
#include "evaluators/evaluator.h"

namespace sparsetune::cli {

namespace {

struct AnalyzeOptions {
  std::string config;  // job config naming the workload
  bool json = false;   // print one JSON object instead of the table
};

int RunAnalyze(const AnalyzeOptions& o) {
  const JobConfig config = LoadJobConfig(o.config);
  EvaluatorOptions options;
  options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  Evaluator evaluator(config, options);
  const AttentionAnalysis analysis = AnalyzeAttention(evaluator);
  if (o.json) {
    std::cout << ToJson(analysis).dump() << "\n";
  } else {
    std::cout << FormatAnalysis(analysis);
  }
  return 0;
}

}  // namespace

void AddAnalyzeCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<AnalyzeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "analyze",
      "Attention structure per (layer, head) from the dense run of the first calibration sample: "
      "share of attention mass on same-frame keys, same-position keys across frames and a "
      "strided key subset, against uniform attention, and ARM's pick.");
  cmd->add_option("CONFIG", options->config, "Job config (JSON) naming the workload")
      ->required();
  cmd->add_flag("--json", options->json, "Print one JSON object instead of the table");
  cmd->callback([options, &exit_code] { exit_code = RunAnalyze(*options); });
}

}  // namespace sparsetune::cli
