// `sparsetune train`: trains a tiny-vdit preset on the prepared real clips with the rectified-flow
// objective and writes the EMA weights (fp16 safetensors) with a model card.
//
//   x_t = (1 - t) x_0 + t e,  e ~ N(0, I),  target velocity e - x_0  (what SampleVideo integrates)
//   loss = mean squared error of TinyVdit::velocity(x_t, t, class) against the target
//
// Data: every clip is its own class; the last `heldout_fraction` of each clip's frames is never
// trained on. Training windows are random in time (start, stride) and space (square crop, resized
// to the preset's size, optional horizontal flip). Validation: a fixed set of held-out windows
// (full frame, evenly spaced starts) at fixed t in {0.1, 0.3, 0.5, 0.7, 0.9} and fixed noise,
// scored with the EMA weights. Every random draw of step s comes from a generator seeded by
// (seed, s), so a resumed run continues exactly as the uninterrupted one would (same device).
// AdamW with linear warm-up then cosine decay, global-norm gradient clipping, bf16 autocast on
// CUDA. docs/training.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "train/train_config.h"

namespace sparsetune {

struct TrainOptions {
  bool resume = false;      // continue from config.checkpoint_dir (RunError when there is none)
  int64_t steps = 0;        // > 0: overrides config.steps (the learning-rate schedule included)
  int64_t stop_at = 0;      // > 0: stop at this step (checkpoint, weights, card written); --resume
                            // goes on from there, e.g. to split a run over several device calls
  std::string command;      // the command line, recorded in the model card
  std::function<void(const std::string&)> progress;  // progress lines; null = quiet
};

struct TrainResult {
  int64_t steps = 0;                 // optimizer steps done in all (resumed runs included)
  int64_t planned_steps = 0;         // steps the learning-rate schedule was made for
  bool time_limited = false;         // stopped by time_limit_s before planned_steps
  double wall_s = 0;                 // seconds of this process's training loop
  double train_loss = 0;             // mean training loss (raw weights) of the last log window
  double train_windows_loss = 0;     // EMA weights on fixed training windows (validation protocol)
  double heldout_loss = 0;           // EMA weights on the held-out validation set
  double untrained_heldout_loss = 0;  // held-out loss at step 0 (adaLN-Zero start)
  double random_init_heldout_loss = 0;  // held-out loss of the random init tests use (init_seed)
  std::vector<std::pair<int64_t, double>> heldout_history;  // (step, held-out loss)
  std::filesystem::path weights;     // <out>/<name>.safetensors (fp16 EMA weights)
  std::filesystem::path card;        // <out>/<name>.md (and <name>.json)
  std::string device;                // device the run used, in words
};

// Runs (or resumes) the training `config` describes. InputError for bad data or config, RunError
// for failures while training (a non-finite loss included).
TrainResult Train(const TrainConfig& config, const TrainOptions& options);

}  // namespace sparsetune
