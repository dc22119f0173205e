// MakeProfiler: CUPTI where it can be used, the wall clock otherwise, with the reason.
#include "profiler/profiler.h"

#include "core/error.h"

#if SPARSETUNE_WITH_CUPTI
#include <cuda_runtime_api.h>

#include "profiler/cupti_profiler.h"
#include "profiler/cupti_session.h"
#endif

namespace sparsetune {

std::unique_ptr<Profiler> MakeProfiler(bool want_device, std::string* why) {
  std::string reason;
  std::unique_ptr<Profiler> profiler;
  if (!want_device) {
    reason = "device profiling not requested";
  } else {
#if SPARSETUNE_WITH_CUPTI
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear it, so it is not reported by the next unrelated CUDA call
      reason = std::string("no CUDA device: ") + cudaGetErrorString(status);
    } else if (count == 0) {
      reason = "no CUDA device: cudaGetDeviceCount found none";
    } else {
      std::shared_ptr<CuptiApi> api = MakeRealCuptiApi();
      try {
        // A short session proves CUPTI can enable activity here (it cannot, e.g., without
        // profiling permission or under another CUPTI client).
        CuptiSession probe(*api);
        probe.stop();
        profiler = std::make_unique<CuptiProfiler>(api, CudaDeviceSync);
      } catch (const Error& e) {
        reason = std::string("CUPTI unavailable: ") + e.what();
      }
    }
#else
    reason = "built without CUPTI (SPARSETUNE_WITH_CUPTI is off)";
#endif
  }
  if (!profiler) profiler = MakeWallClockProfiler();
  if (why != nullptr) *why = reason;
  return profiler;
}

}  // namespace sparsetune
