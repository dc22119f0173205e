// `sparsetune validate FILE [--config CONFIG]`: checks a job config, a train config or a schedule
// file; with --config, a schedule must also match the geometry of the config's workload.
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/workload.h"
#include "kernels/schedule.h"
#include "train/train_config.h"

namespace sparsetune::cli {

namespace {

struct ValidateOptions {
  std::string file;    // the file to check
  std::string config;  // optional job config whose workload geometry a schedule must match
};

int ValidateSchedule(const ValidateOptions& o) {
  const Schedule schedule = LoadSchedule(o.file);
  const ModelGeometry& m = schedule.model;
  if (!o.config.empty()) {
    const JobConfig job = LoadJobConfig(o.config);
    const std::unique_ptr<Workload> workload = MakeWorkload(job);
    CheckGeometryMatches(schedule, workload->geometry(), o.file);
  }
  std::cout << o.file << ": valid schedule v" << Schedule::kVersion << " for " << m.name << " ("
            << m.layers << " layers x " << m.heads << " heads x " << m.head_dim << ", grid "
            << m.grid[0] << "x" << m.grid[1] << "x" << m.grid[2] << " + " << m.text_tokens
            << " text, " << m.steps << " steps)";
  if (!o.config.empty()) std::cout << "; matches the workload of " << o.config;
  std::cout << "\n";
  return 0;
}

// A train config (configs/train-*.json) names a preset at the top level and has no workload.
bool LooksLikeTrainConfig(const Json& document) {
  return document.is_object() && document.contains("preset") && !document.contains("workload");
}

int ValidateTrainConfig(const ValidateOptions& o) {
  const TrainConfig t = LoadTrainConfig(o.file);
  std::cout << o.file << ": valid train config '" << t.name << "' (preset " << t.preset << ", "
            << t.steps << " steps of batch " << t.batch << " on " << t.device << ")\n";
  return 0;
}

int RunValidate(const ValidateOptions& o) {
  const Json document = LoadJsonFile(o.file);
  if (LooksLikeSchedule(document)) return ValidateSchedule(o);
  if (!o.config.empty()) {
    throw InputError(o.file + ": --config is for schedule files; this is not a schedule (no "
                              "\"format\": \"sparsetune.schedule\")");
  }
  if (LooksLikeTrainConfig(document)) return ValidateTrainConfig(o);
  const JobConfig job = LoadJobConfig(o.file);
  std::cout << o.file << ": valid job config '" << job.name << "' (workload " << job.workload.kind;
  if (job.workload.kind == "tiny-vdit") std::cout << "/" << job.workload.preset;
  if (job.workload.kind == "shape") std::cout << "/" << job.workload.shape;
  std::cout << ", strategy " << job.search.strategy << ", objective " << job.objective.metric
            << ")\n";
  return 0;
}

}  // namespace

void AddValidateCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ValidateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "validate",
      "Check a job config, a train config (a top-level \"preset\" and no \"workload\") or a "
      "schedule file (\"format\": \"sparsetune.schedule\"). "
      "Exit 0 when valid; exit 2 with one line naming the file and the offending field "
      "otherwise.");
  cmd->add_option("FILE", options->file, "Job config, train config or schedule file to check")
      ->required();
  cmd->add_option("--config", options->config,
                  "Job config whose workload geometry the schedule must match");
  cmd->callback([options, &exit_code] { exit_code = RunValidate(*options); });
}

}  // namespace sparsetune::cli
