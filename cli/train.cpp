// `sparsetune train CONFIG [--resume] [--steps N] [--stop-at N] [--time-limit S] [--out DIR]
// [--checkpoint-dir DIR] [--device cpu|cuda]`: trains a tiny-vdit preset on the prepared clips and
// writes the EMA weights (fp16 safetensors) and a model card (docs/training.md).
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace sparsetune::cli {

namespace {

struct TrainCliOptions {
  std::string config;          // train config (JSON)
  bool resume = false;         // continue from the checkpoint
  int64_t steps = 0;           // > 0 overrides the config's steps
  int64_t stop_at = 0;         // > 0 stops at this step (resume later)
  std::string out;             // overrides the config's out folder
  std::string checkpoint_dir;  // overrides the config's checkpoint folder
  std::string device;          // overrides the config's device
  double time_limit_s = -1;    // >= 0 overrides the config's time_limit_s (0 = none)
  std::string command;         // the command line as typed, for the model card
};

int RunTrain(const TrainCliOptions& o) {
  TrainConfig config = LoadTrainConfig(o.config);
  if (!o.out.empty()) config.out = o.out;
  if (!o.checkpoint_dir.empty()) config.checkpoint_dir = o.checkpoint_dir;
  if (!o.device.empty()) config.device = o.device;
  if (o.time_limit_s >= 0) config.time_limit_s = o.time_limit_s;
  TrainOptions options;
  options.resume = o.resume;
  options.steps = o.steps;
  options.stop_at = o.stop_at;
  options.command = "sparsetune train " + o.config;
  if (o.steps > 0) options.command += " --steps " + std::to_string(o.steps);
  if (!o.device.empty()) options.command += " --device " + o.device;
  if (o.time_limit_s >= 0) {
    std::ostringstream limit;
    limit << o.time_limit_s;
    options.command += " --time-limit " + limit.str();
  }
  options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  const TrainResult r = Train(config, options);
  std::cout << "weights: " << r.weights.string() << "\ncard: " << r.card.string()
            << "\nsteps: " << r.steps << "\nheld-out loss: " << r.heldout_loss
            << " (untrained " << r.untrained_heldout_loss << ")\n";
  return 0;
}

}  // namespace

void AddTrainCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<TrainCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a tiny-vdit preset on the real clips of datasets/prepare_clips.sh (rectified flow, "
      "AdamW, EMA, bf16 autocast on CUDA, random crops/strides/flips, class = clip). Prints a "
      "progress line (step, loss, it/s, ETA) and the held-out validation loss of the EMA weights "
      "periodically; checkpoints to the config's checkpoint_dir; writes <out>/<name>.safetensors "
      "(fp16 EMA weights) and the model card <out>/<name>.md/.json. Config fields: "
      "docs/training.md; examples: configs/train-cpu-tiny.json, configs/train-gpu-small.json.");
  cmd->add_option("CONFIG", options->config, "Train config (JSON)")->required();
  cmd->add_flag("--resume", options->resume,
                "Continue from the checkpoint in checkpoint_dir (same config and seed); the "
                "result equals an uninterrupted run on the same device");
  cmd->add_option("--steps", options->steps,
                  "Total optimizer steps, overriding the config (the learning-rate schedule "
                  "follows); the model card's reproduce command records it")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--stop-at", options->stop_at,
                  "Stop at this step, writing the checkpoint, weights and card as at the end; "
                  "--resume continues (splits a run over several sessions)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--out", options->out, "Folder for the weights and the model card");
  cmd->add_option("--checkpoint-dir", options->checkpoint_dir, "Folder for the checkpoint");
  cmd->add_option("--device", options->device, "cpu or cuda, overriding the config")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--time-limit", options->time_limit_s,
                  "Seconds of training before stopping (and writing everything), overriding the "
                  "config's time_limit_s; 0 = no limit")
      ->check(CLI::Range(0.0, 1e7));
  cmd->callback([options, &exit_code] { exit_code = RunTrain(*options); });
}

}  // namespace sparsetune::cli
