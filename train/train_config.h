// Config of one `sparsetune train` run (configs/train-*.json; fields and defaults in
// docs/training.md). Read strictly: unknown keys and out-of-range values are InputErrors naming the
// file and the field. Relative paths are resolved against the config file's folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace sparsetune {

struct TrainConfig {
  std::filesystem::path source;          // the config file (for messages)
  std::string name = "cpu-tiny";         // run name: weights <out>/<name>.safetensors, card <name>.md
  std::string preset = "cpu-tiny";       // tiny-vdit preset: "cpu-tiny" | "gpu-small"
  std::filesystem::path clips;           // folder with index.json from datasets/prepare_clips.sh
  std::filesystem::path out;             // where the EMA weights and the model card are written
  std::filesystem::path checkpoint_dir;  // checkpoints for --resume (git-ignored place)
  std::string device = "cpu";            // "cpu" | "cuda"
  int64_t threads = 0;                   // CPU threads for libtorch; 0 = all cores
  bool bf16 = true;                      // bf16 autocast on CUDA (ignored on CPU)
  uint64_t seed = 0;                     // seed of batches, crops, noise and timesteps
  uint64_t init_seed = 0;                // seed of the model's initial weights
  int64_t steps = 1000;                  // optimizer steps in all
  int64_t batch = 16;                    // clips windows per step
  double lr = 3e-4;                      // peak AdamW learning rate
  double min_lr_ratio = 0.1;             // cosine decay ends at lr * min_lr_ratio
  int64_t warmup_steps = 100;            // linear learning-rate warm-up, steps
  double weight_decay = 0.01;            // AdamW decoupled weight decay
  double beta1 = 0.9;                    // AdamW first-moment decay
  double beta2 = 0.99;                   // AdamW second-moment decay
  double grad_clip = 1.0;                // clip of the global gradient L2 norm; 0 = off
  double ema_decay = 0.999;              // EMA of the weights (with a 1 - (1+s)/(10+s) warm-up)
  double heldout_fraction = 0.2;         // last part of every clip kept for validation, (0, 0.5]
  std::vector<int64_t> frame_strides = {1};  // temporal strides drawn per window (frames skipped)
  double crop_min = 0.6;                 // smallest square crop side, as a fraction of the frame
  double crop_max = 1.0;                 // largest square crop side, fraction of the frame
  bool flip = true;                      // random horizontal flips
  double image_fraction = 0.0;           // share of samples that are T unrelated stills, [0, 1)
  double pan_fraction = 0.0;             // share of video windows whose crop pans over time, [0, 1]
  std::string timesteps = "logit-normal";  // t sampling: "logit-normal" (SD3) | "uniform"
  int64_t val_every = 250;               // steps between validation losses; 0 = only at the ends
  int64_t val_windows = 4;               // held-out windows per clip in the validation set
  int64_t log_every = 50;                // steps between progress lines
  int64_t checkpoint_every = 500;        // steps between checkpoints; 0 = only at the end
  double time_limit_s = 0;               // stop (and write everything) after this; 0 = none
};

// Reads a train config; InputError naming the file and field on any problem.
TrainConfig LoadTrainConfig(const std::filesystem::path& path);

}  // namespace sparsetune
