// The wall-clock profiler: steady_clock around region + sync, one record per timed repeat.
#include <chrono>

#include "core/error.h"
#include "profiler/profiler.h"

namespace sparsetune {
namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class WallClockProfiler final : public Profiler {
 public:
  Measurement measure(const std::function<void()>& region, int warmup, int repeats,
                      const std::function<void()>& sync) override {
    CheckMeasureArguments(region, warmup, repeats);
    for (int i = 0; i < warmup; ++i) {
      region();
      if (sync) sync();
    }
    std::vector<KernelRecord> records;
    records.reserve(static_cast<size_t>(repeats));
    for (int i = 0; i < repeats; ++i) {
      KernelRecord r;
      r.name = "region";
      r.category = "wall";
      r.repeat = i;
      r.start_ns = SteadyNowNs();
      region();
      if (sync) sync();
      r.end_ns = SteadyNowNs();
      records.push_back(std::move(r));
    }
    return SummarizeRecords(source(), std::move(records), repeats);
  }

  std::string source() const override { return "wall_clock"; }
};

}  // namespace

void CheckMeasureArguments(const std::function<void()>& region, int warmup, int repeats) {
  if (!region) throw RunError("profiler: measure() needs a region to run");
  if (warmup < 0) {
    throw InputError("profiler: warmup must be >= 0 (got " + std::to_string(warmup) + ")");
  }
  if (repeats < 1) {
    throw InputError("profiler: repeats must be >= 1 (got " + std::to_string(repeats) + ")");
  }
}

std::unique_ptr<Profiler> MakeWallClockProfiler() { return std::make_unique<WallClockProfiler>(); }

}  // namespace sparsetune
