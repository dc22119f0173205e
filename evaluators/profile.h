// Profiling one generation of a workload: the `sparsetune profile` command's library part.
//
//   Evaluator ev(LoadJobConfig("configs/gpu-small.json"));
//   ProfileReport p = ProfileGeneration(ev, ProfileOptions{});   // dense, config's warm-up/repeats
//   std::cout << ProfileToJson(p, 10).dump();
//
// The first calibration sample (the shape workload's synthetic sample when there is none) is
// generated warm-up + repeats times under one Runtime, through MakeProfiler(device is cuda):
// CUPTI device busy time and per-kernel records on a GPU, one wall-clock "region" row per repeat
// otherwise. docs/gpu.md describes the output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/eval_result.h"
#include "evaluators/evaluator.h"
#include "kernels/runtime.h"
#include "kernels/schedule.h"
#include "profiler/overhead.h"
#include "profiler/profiler.h"

namespace sparsetune {

struct ProfileOptions {
  std::optional<Schedule> schedule;  // run under this schedule; empty = dense (base schedule)
  std::string schedule_name = "dense";  // how the report names the schedule (file path)
  int warmup = -1;                   // untimed generations first; < 0 = the config's latency.warmup
  int repeats = -1;                  // timed generations; < 1 = the config's latency.repeats
};

struct ProfileReport {
  std::string workload;          // geometry name, e.g. "tiny-vdit/gpu-small"
  std::string device;            // Evaluator::device_name()
  std::string schedule;          // ProfileOptions::schedule_name
  SampleSpec sample;             // the generated sample
  int warmup = 0;                // untimed generations run
  int repeats = 0;               // timed generations run
  std::string fallback;          // why the wall clock was used on a cuda config; empty otherwise
  Measurement measurement;       // the profiler's result (source, per-repeat time, records)
  std::vector<KernelTime> categories;  // per-category totals over all timed repeats
  AttentionStats stats;          // attention work of one generation
};

// Runs the profile. InputError for a schedule whose geometry does not match the workload or for
// warm-up/repeats out of range; exceptions of the run itself propagate.
ProfileReport ProfileGeneration(Evaluator& evaluator, const ProfileOptions& options);

// CUPTI's overhead on one generation of the workload (profiler/overhead.h): `rounds` rounds of
// `repeats` plain and `repeats` traced generations after `warmup` untimed ones, each timed with
// CUDA events. Needs a cuda config, a device and CUPTI; RunError otherwise, InputError for a
// schedule that does not match or for counts out of range.
OverheadReport ProfileOverhead(Evaluator& evaluator, const ProfileOptions& options, int rounds);

// The report as JSON: the summary, "categories" (all) and "kernels" (the `top_kernels` longest by
// total time; all when top_kernels < 0). Times in ms, per_generation_ms = total / repeats.
Json ProfileToJson(const ProfileReport& report, int top_kernels);

}  // namespace sparsetune
