// The job config: one JSON file that names a workload, a search space, a strategy, an objective
// and a constraint (ARCHITECTURE.md, "The loop"). Every subcommand that reads a config (`run`,
// `evaluate`, `profile`, `analyze`, `validate --config`, `train`, `sample`) goes through
// LoadJobConfig, so unknown keys, wrong types and out-of-range values are rejected the same way.
// The reference for users is docs/config.md; keep it in step with this file.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace sparsetune {

// One generated video: the class it is conditioned on and the seed of its initial noise.
struct SampleSpec {
  int64_t class_id = 0;  // class label (tiny-vdit: index into the model's classes)
  uint64_t seed = 0;     // seed of the initial noise
};

// What is evaluated: a model run end to end, captured traces, or a shape for latency only.
struct WorkloadConfig {
  std::string kind = "tiny-vdit";  // "tiny-vdit" | "trace" | "shape"
  // tiny-vdit: size preset, "cpu-tiny" or "gpu-small".
  std::string preset = "cpu-tiny";
  // tiny-vdit: safetensors weights; absent means random initialisation from init_seed.
  std::optional<std::filesystem::path> weights;
  uint64_t init_seed = 0;  // tiny-vdit: seed of the random initialisation when no weights
  int64_t steps = 0;       // tiny-vdit: sampler steps; 0 = the preset's default
  // trace: the manifest JSON of captured q/k/v (docs/trace-format.md).
  std::optional<std::filesystem::path> trace;
  // shape: a named real model attention shape ("wan2.1-1.3b-480p", "hunyuan-720p",
  // "cogvideox-5b"); latency only.
  std::string shape;
  int64_t shape_layers = 1;  // shape: attention calls (layers) timed per step
  int64_t shape_steps = 1;   // shape: steps timed
  std::vector<SampleSpec> calibration;  // samples the search optimises quality on
  std::vector<SampleSpec> heldout;      // samples reported separately, never optimised on
};

// Where and how the workload runs.
struct DeviceConfig {
  std::string device = "cpu";     // "cpu" | "cuda"
  std::string dtype = "float32";  // "float32" | "bfloat16" | "float16" (cuda only for 16-bit)
  int64_t threads = 0;            // CPU threads for libtorch; 0 = all cores
};

// How latency is measured (wall clock on CPU, CUPTI kernel time on CUDA).
struct LatencyConfig {
  int64_t warmup = 1;   // untimed runs before measuring
  int64_t repeats = 3;  // timed runs, summarised by `estimator`
  // "min" | "median" of the timed repeats; empty (key absent) = by source: min on the wall
  // clock (interference only adds time), median on CUPTI device time (docs/workloads.md).
  std::string estimator;
  // How a candidate's dense latency is measured: "interleaved" (dense generations alternate with
  // the candidate's timed repeats, D C C D D C ..., so the same seconds of machine state time
  // both) or "bracketed" (dense reference measurements before and after every few candidates);
  // empty (key absent) = interleaved on the wall clock, bracketed on CUPTI (docs/workloads.md).
  std::string pairing;
};

// Fixed (not searched) parts of every candidate schedule.
struct ScheduleBaseConfig {
  int64_t block_size = 32;                // tokens per attention block
  std::string token_order = "tiles";      // "raster" | "tiles"
  std::array<int64_t, 3> tile = {1, 4, 4};  // tile [frames, height, width] in tokens
  bool first_frame_sink = true;           // block_sparse: first-frame rows/cols dense
  int64_t mask_refresh = 2;               // block_sparse: recompute the mask every N steps
  int64_t arm_refresh = 4;                // auto: re-run ARM's recognition every N steps
};

// The search space: which genes exist and which values each may take.
struct SearchSpaceConfig {
  // Astraea per-step token budgets (fraction of tokens computed); empty = budgets fixed at 1.
  std::vector<double> budgets = {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
  // Choices for the number of dense warm-up steps.
  std::vector<int64_t> warmup_steps = {2, 3, 4};
  // Per-(layer, head) patterns: any of dense, spatial, temporal, textural, block_sparse, auto.
  std::vector<std::string> patterns = {"dense", "spatial", "temporal", "textural", "block_sparse"};
  // Densities of the RainFusion patterns (fraction of key blocks).
  std::vector<double> densities = {0.15, 0.25, 0.4};
  // Keep ratios of block_sparse (fraction of key blocks kept per query block).
  std::vector<double> keeps = {0.1, 0.2, 0.3, 0.5};
  // TimeRipple reuse thresholds per step (cosine similarity); empty = TimeRipple not searched.
  std::vector<double> reuse_thresholds;
};

// The search strategy and its tunables.
struct SearchConfig {
  std::string strategy = "evolutionary";  // "evolutionary" | "nsga2" | "random"
  int64_t population = 16;     // candidates per generation
  int64_t generations = 6;     // generations after the seeded initial population
  uint64_t seed = 0;           // seed of every random choice of the search
  double mutation_rate = 0.1;  // per-gene mutation probability
  double crossover_rate = 0.9; // probability that a child is a crossover of two parents
  int64_t tournament = 3;      // tournament size for parent selection
  int64_t elites = 2;          // best feasible candidates copied to the next generation
  int64_t batch_size = 0;      // candidates proposed per batch; 0 = population
};

// What quality means and which candidates are allowed.
struct ObjectiveConfig {
  std::string metric = "psnr";           // "psnr" | "ssim", on calibration samples
  std::optional<double> min_speedup;     // feasible when speedup >= this
  std::optional<double> max_latency_ms;  // feasible when latency <= this (ms)
};

struct JobConfig {
  std::string name;                  // job name shown in the store
  std::filesystem::path source;      // the config file it was read from
  Json raw;                          // the config as written (stored with the job)
  WorkloadConfig workload;
  DeviceConfig device;
  LatencyConfig latency;
  ScheduleBaseConfig schedule;
  SearchSpaceConfig space;
  SearchConfig search;
  ObjectiveConfig objective;
  std::filesystem::path store;       // SQLite store path (default results/sparsetune.sqlite)
};

// Reads and validates a job config. Throws InputError naming the file and the field.
JobConfig LoadJobConfig(const std::filesystem::path& path);
// Same, from an already parsed document; `source` names it in messages, relative paths resolve
// against `base_dir`.
JobConfig ParseJobConfig(const Json& document, const std::string& source,
                         const std::filesystem::path& base_dir);

}  // namespace sparsetune
