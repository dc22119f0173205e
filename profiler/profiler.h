// Latency measurement of a region of work (one generation, one attention call, ...).
//
// Two implementations behind one interface: CUPTI kernel profiling on a CUDA device (the device
// busy time of the kernels, memcpys and memsets recorded by the Activity API inside the region),
// and wall clock where CUPTI or a device is absent. A Measurement says which one produced it.
// The CUPTI session (cupti_session.h), the mockable CUPTI wrapper (cupti_api.h), the CUPTI
// profiler (cupti_profiler.h) and the Chrome-trace export live beside this file
// (docs/profiler.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/eval_result.h"

namespace sparsetune {

// One kernel launch (or, on the wall clock, one timed repeat) as recorded.
struct KernelRecord {
  std::string name;       // demangled kernel name, or the region name on the wall clock
  std::string category;   // see KernelCategory()
  int64_t start_ns = 0;   // device timestamp (CUPTI) or steady clock
  int64_t end_ns = 0;
  int64_t repeat = 0;     // index of the timed repeat it belongs to
  uint32_t stream = 0;
  uint32_t device = 0;
  int64_t correlation = 0;
  bool is_memcpy = false;
  int64_t bytes = 0;      // memcpy/memset bytes
};

struct Measurement {
  std::string source;              // "cupti" | "wall_clock"
  std::vector<double> repeat_ns;   // per timed repeat: device busy time, the length of the union
                                   // of its records' [start, end) intervals (CUPTI), or wall time
  double median_ns = 0;            // median of repeat_ns
  double spread = 0;               // (max - min) / median of repeat_ns
  std::vector<KernelTime> kernels; // per kernel, aggregated over all timed repeats
  std::vector<KernelRecord> records;  // raw records of the timed repeats (for Chrome traces)
  int64_t dropped_records = 0;     // records CUPTI reported dropped or delivered without
                                   // timestamps (0 on the wall clock)
  std::vector<std::string> warnings;  // one line each: dropped records, empty repeats, ...
};

class Profiler {
 public:
  virtual ~Profiler() = default;
  // Runs `region` warmup + repeats times and measures the timed repeats. `sync` is called after
  // each run to wait for the device (no-op on CPU). Exceptions from `region` propagate.
  virtual Measurement measure(const std::function<void()>& region, int warmup, int repeats,
                              const std::function<void()>& sync = {}) = 0;
  // "cupti" or "wall_clock".
  virtual std::string source() const = 0;
};

// Category of a kernel from its name: "attention", "mask", "gather_scatter", "gemm" or "other".
std::string KernelCategory(const std::string& kernel_name);

// Per-kernel aggregation (launches, total, mean, min, median) of records, sorted by total time.
std::vector<KernelTime> AggregateKernels(const std::vector<KernelRecord>& records);
// Per-category totals of the same, as KernelTime rows named after the category.
std::vector<KernelTime> AggregateCategories(const std::vector<KernelTime>& kernels);

// The wall-clock profiler (always available).
std::unique_ptr<Profiler> MakeWallClockProfiler();
// CUPTI when compiled in and `want_device` is true and a CUDA device is present; otherwise the
// wall clock. `why` (optional) receives a one-line reason when it fell back.
std::unique_ptr<Profiler> MakeProfiler(bool want_device, std::string* why = nullptr);

// Writes records as Chrome trace JSON (Perfetto / chrome://tracing): one complete ("X") event per
// record, ts and dur in microseconds since the earliest record, pid = device, tid = stream, plus
// process/thread name metadata ("M") events.
Json ChromeTrace(const std::vector<KernelRecord>& records, const std::string& process_name);

// Demangles an Itanium C++ ABI name ("_Z..."); other names come back unchanged.
std::string DemangleKernelName(const std::string& name);

// Median of `values` (even count: mean of the two middle values); 0 for none.
double Median(std::vector<double> values);

// Throws InputError for warmup < 0 or repeats < 1, RunError for an empty region; every
// Profiler::measure() starts with it.
void CheckMeasureArguments(const std::function<void()>& region, int warmup, int repeats);

// The Measurement of `repeats` timed repeats from their records (each tagged with its repeat):
// repeat_ns as the union of record intervals per repeat, median, spread, per-kernel aggregation.
// Both profilers finish through this, so the two sources are summarised the same way.
Measurement SummarizeRecords(const std::string& source, std::vector<KernelRecord> records,
                             int repeats);

}  // namespace sparsetune
