// `sparsetune evaluate CONFIG --schedule FILE [--json]`: one schedule on the config's workload:
// quality on the calibration and held-out samples, latency and speedup against dense measured in
// this process, and attention density.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/evaluator.h"
#include "kernels/schedule.h"

namespace sparsetune::cli {

namespace {

struct EvaluateOptions {
  std::string config;    // job config naming the workload
  std::string schedule;  // schedule v1 file to evaluate
  bool json = false;     // print one JSON object instead of the table
};

std::string Fixed(double x, int decimals, const char* unit = "") {
  if (!std::isfinite(x)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << x << unit;
  return s.str();
}

int RunEvaluate(const EvaluateOptions& o) {
  const JobConfig config = LoadJobConfig(o.config);
  const Schedule schedule = LoadSchedule(o.schedule);
  EvaluatorOptions options;
  options.heldout = true;
  options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  Evaluator evaluator(config, options);
  // A schedule for another model or resolution is bad input (exit 2), not a failed run.
  CheckGeometryMatches(schedule, evaluator.workload().geometry(), o.schedule);
  std::cerr << "evaluating " << o.schedule << " on " << evaluator.device_name() << "\n";
  const EvalResult dense = evaluator.dense_baseline();
  const EvalResult r = evaluator.evaluate_schedule(schedule);
  if (!r.ok) throw RunError(o.schedule + ": evaluation failed: " + r.error);
  if (o.json) {
    Json out = ToJson(r);
    out["schedule"] = o.schedule;
    out["config"] = o.config;
    out["device"] = evaluator.device_name();
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << "schedule " << o.schedule << " on " << evaluator.workload().geometry().name << " ("
            << evaluator.device_name() << ")\n";
  auto row = [](const std::string& name, const std::string& value) {
    std::cout << "  " << std::left << std::setw(22) << name << value << "\n";
  };
  row("psnr (calibration)", Fixed(r.psnr, 2, " dB"));
  row("ssim (calibration)", Fixed(r.ssim, 4));
  row("psnr (held-out)", Fixed(r.psnr_heldout, 2, " dB"));
  row("ssim (held-out)", Fixed(r.ssim_heldout, 4));
  row("latency", Fixed(r.latency_ms, 2, " ms") + " (" + r.latency_source + ", spread " +
                     Fixed(100 * r.latency_spread, 1, "%") + ")");
  row("dense latency", Fixed(dense.latency_ms, 2, " ms"));
  row("speedup", Fixed(r.speedup, 2, "x"));
  row("attention density", Fixed(r.density, 3));
  row("token density", Fixed(r.token_density, 3));
  return 0;
}

}  // namespace

void AddEvaluateCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<EvaluateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "evaluate",
      "Evaluate one schedule on the config's workload: PSNR/SSIM against dense on the calibration "
      "and held-out samples, latency and speedup against dense measured in this process, and "
      "attention density. Progress goes to stderr.");
  cmd->add_option("CONFIG", options->config, "Job config (JSON) naming the workload")
      ->required();
  cmd->add_option("--schedule", options->schedule, "Schedule v1 file to evaluate")->required();
  cmd->add_flag("--json", options->json,
                "Print one JSON object (psnr, ssim, psnr_heldout, ssim_heldout, latency_ms, "
                "dense_latency_ms, speedup, density, ...) instead of the table");
  cmd->callback([options, &exit_code] { exit_code = RunEvaluate(*options); });
}

}  // namespace sparsetune::cli
