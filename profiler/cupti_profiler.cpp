// CuptiProfiler (cupti_profiler.h).
#include "profiler/cupti_profiler.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "core/error.h"
#include "profiler/cupti_session.h"

namespace sparsetune {

CuptiProfiler::CuptiProfiler(std::shared_ptr<CuptiApi> api, std::function<void()> device_sync)
    : api_(std::move(api)), device_sync_(std::move(device_sync)) {}

Measurement CuptiProfiler::measure(const std::function<void()>& region, int warmup, int repeats,
                                   const std::function<void()>& sync) {
  CheckMeasureArguments(region, warmup, repeats);
  const std::function<void()>& wait = sync ? sync : device_sync_;
  CuptiSession session(*api_);
  // Warm-up runs under the session too, so CUPTI's own first-use costs land there.
  for (int i = 0; i < warmup; ++i) {
    region();
    if (wait) wait();
  }
  session.flush();
  session.take_records();

  std::vector<KernelRecord> records;
  int64_t stale = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto begin = static_cast<int64_t>(session.timestamp());
    region();
    if (wait) wait();
    session.flush();
    for (KernelRecord& r : session.take_records()) {
      if (r.end_ns < begin) {
        ++stale;
        continue;
      }
      r.repeat = i;
      records.push_back(std::move(r));
    }
  }
  session.stop();

  Measurement m = SummarizeRecords(source(), std::move(records), repeats);
  m.dropped_records = session.dropped_records() + session.untimed_records();
  if (session.dropped_records() > 0) {
    m.warnings.push_back("CUPTI dropped " + std::to_string(session.dropped_records()) +
                         " activity records (buffer space): times are too low");
  }
  if (session.untimed_records() > 0) {
    m.warnings.push_back(std::to_string(session.untimed_records()) +
                         " activity records came without timestamps and were left out");
  }
  if (stale > 0) {
    m.warnings.push_back(std::to_string(stale) +
                         " records ended before their repeat began and were left out");
  }
  for (std::string& w : session.warnings()) m.warnings.push_back(std::move(w));
  return m;
}

void CudaDeviceSync() {
  const cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess) {
    throw RunError(std::string("cudaDeviceSynchronize: ") + cudaGetErrorString(status));
  }
}

}  // namespace sparsetune
