// The CUPTI profiler: Profiler::measure() over a CuptiSession (only with SPARSETUNE_WITH_CUPTI).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "profiler/cupti_api.h"
#include "profiler/profiler.h"

namespace sparsetune {

// Measures a region by the device activity CUPTI records while it runs:
//   one session per measure(); warm-up runs (recorded, then discarded);
//   per timed repeat: read CUPTI's clock, run the region, sync, forced flush, keep the records
//   (those that ended before the repeat began are stale leftovers and are dropped);
//   repeat_ns = device busy time: the union of the repeat's kernel/memcpy/memset intervals, so
//   kernels overlapping on several streams count once and host-side gaps between kernels do not
//   count at all (docs/profiler.md).
// CUPTI records every kernel of the process, so nothing else may run device work meanwhile.
class CuptiProfiler final : public Profiler {
 public:
  // `device_sync` waits for the device when measure() is given no sync of its own.
  CuptiProfiler(std::shared_ptr<CuptiApi> api, std::function<void()> device_sync);
  Measurement measure(const std::function<void()>& region, int warmup, int repeats,
                      const std::function<void()>& sync = {}) override;
  std::string source() const override { return "cupti"; }

 private:
  std::shared_ptr<CuptiApi> api_;
  std::function<void()> device_sync_;
};

// cudaDeviceSynchronize on the current device; RunError naming the CUDA error on failure.
void CudaDeviceSync();

}  // namespace sparsetune
