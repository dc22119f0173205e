// `sparsetune sample CONFIG --class C --seed S [--schedule FILE] [--scale N] -o out.png`: one video
// of the config's tiny-vdit workload (its weights, device and dtype), generated dense or under a
// schedule, written as a contact sheet PNG (frames side by side, left to right).
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/job_config.h"
#include "evaluators/tiny_vdit_workload.h"
#include "evaluators/workload.h"
#include "kernels/schedule.h"
#include "train/contact_sheet.h"

namespace sparsetune::cli {

namespace {

struct SampleOptions {
  std::string config;    // job config naming a tiny-vdit workload
  int64_t class_id = 0;  // conditioning class
  int64_t seed = 0;      // noise seed
  std::string schedule;  // schedule v1 file; empty = dense
  int64_t scale = 1;     // nearest-neighbour enlargement of every frame
  std::string output;    // PNG path
};

int RunSample(const SampleOptions& o) {
  const JobConfig config = LoadJobConfig(o.config);
  if (config.workload.kind != "tiny-vdit") {
    throw InputError(o.config + ": field 'workload.kind': sample needs a tiny-vdit workload (got '" +
                     config.workload.kind + "')");
  }
  if (config.device.threads > 0) torch::set_num_threads(static_cast<int>(config.device.threads));
  std::unique_ptr<Workload> workload = MakeWorkload(config);
  auto& tiny = dynamic_cast<TinyVditWorkload&>(*workload);
  std::optional<Schedule> schedule;
  if (!o.schedule.empty()) {
    schedule = LoadSchedule(o.schedule);
    CheckGeometryMatches(*schedule, workload->geometry(), o.schedule);
  }
  Runtime runtime(schedule ? *schedule : Schedule::Dense(workload->geometry()));
  const torch::Tensor video =
      SampleVideo(tiny.model(), SampleRequest{o.class_id, static_cast<uint64_t>(o.seed)}, runtime);
  const torch::Tensor sheet = ContactSheet(video, o.scale);
  WritePng(o.output, sheet);
  std::cerr << "wrote " << o.output << " (" << sheet.size(1) << "x" << sheet.size(0) << ", "
            << video.size(2) << " frames, class " << o.class_id << ", seed " << o.seed << ", "
            << (schedule ? o.schedule : std::string("dense")) << ")\n";
  return 0;
}

}  // namespace

void AddSampleCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<SampleOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sample",
      "Generate one video with the config's tiny-vdit workload (its weights, device, dtype) and "
      "write a contact sheet PNG: the frames side by side, left to right, white gaps between.");
  cmd->add_option("CONFIG", options->config, "Job config (JSON) naming a tiny-vdit workload")
      ->required();
  cmd->add_option("--class", options->class_id, "Conditioning class (for trained weights: the "
                  "clip's class_id in datasets/clips/index.json)")
      ->required()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--seed", options->seed, "Seed of the initial noise")
      ->required()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 53));
  cmd->add_option("--schedule", options->schedule,
                  "Schedule v1 file to generate under (default: dense attention)");
  cmd->add_option("--scale", options->scale, "Enlarge every frame N times (nearest neighbour)")
      ->check(CLI::Range(int64_t{1}, int64_t{16}));
  cmd->add_option("-o,--output", options->output, "PNG file to write")->required();
  cmd->callback([options, &exit_code] { exit_code = RunSample(*options); });
}

}  // namespace sparsetune::cli
