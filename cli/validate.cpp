// `sparsetune validate FILE [--config CONFIG]`: checks a job config or a schedule file.
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/job_config.h"

namespace sparsetune::cli {

namespace {

struct ValidateOptions {
  std::string file;    // the file to check
  std::string config;  // optional job config whose workload geometry a schedule must match
};

int RunValidate(const ValidateOptions& o) {
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
      "Check a job config or a schedule file. Exit 0 when valid; exit 2 with one line naming the "
      "file and the offending field otherwise.");
  cmd->add_option("FILE", options->file, "Job config (JSON) or schedule file to check")
      ->required();
  cmd->add_option("--config", options->config,
                  "Job config whose workload geometry the schedule must match");
  cmd->callback([options, &exit_code] { exit_code = RunValidate(*options); });
}

}  // namespace sparsetune::cli
