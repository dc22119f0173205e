// A thin, mockable wrapper over the CUPTI Activity API calls the profiler uses.
//
// Only built with SPARSETUNE_WITH_CUPTI (it needs cupti.h). The session (cupti_session.h) talks to
// CUPTI only through this class, so tests subclass it and feed hand-built activity records through
// the real buffer callbacks and parsing path without a GPU. Methods return CUPTI's status codes
// unchanged; the session turns failures into RunErrors with result_string().
#pragma once

#include <cupti.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace sparsetune {

// The activity record structs of the CUPTI this is compiled against. CUPTI fills buffers with the
// newest struct version its header declares; CUDA 13's cupti_activity.h declares
// CUpti_ActivityKernel10, CUpti_ActivityMemcpy6 and CUpti_ActivityMemset4 (older versions moved
// to cupti_activity_deprecated.h). A newer toolkit may add versions: check the header and update
// these aliases together with the static_assert.
static_assert(CUPTI_API_VERSION >= 130000 && CUPTI_API_VERSION < 140000,
              "sparsetune's CUPTI record aliases are written for CUDA 13 (CUPTI API 13.x); check "
              "cupti_activity.h for the current CUpti_ActivityKernel/Memcpy/Memset versions");
using CuptiKernelRecord = CUpti_ActivityKernel10;
using CuptiMemcpyRecord = CUpti_ActivityMemcpy6;
using CuptiMemsetRecord = CUpti_ActivityMemset4;

class CuptiApi {
 public:
  virtual ~CuptiApi() = default;
  virtual CUptiResult activity_enable(CUpti_ActivityKind kind) = 0;
  virtual CUptiResult activity_disable(CUpti_ActivityKind kind) = 0;
  // Registers the buffer callbacks (cuptiActivityRegisterCallbacks).
  virtual CUptiResult register_callbacks(CUpti_BuffersCallbackRequestFunc requested,
                                         CUpti_BuffersCallbackCompleteFunc completed) = 0;
  // cuptiActivitySetAttribute.
  virtual CUptiResult set_attribute(CUpti_ActivityAttribute attribute, size_t* value_size,
                                    void* value) = 0;
  // cuptiActivityFlushAll; with CUPTI_ACTIVITY_FLAG_FLUSH_FORCED also incomplete buffers.
  virtual CUptiResult flush_all(uint32_t flag) = 0;
  // cuptiActivityGetNextRecord: *record nullptr on input gives the first record.
  virtual CUptiResult get_next_record(uint8_t* buffer, size_t valid_bytes,
                                      CUpti_Activity** record) = 0;
  // cuptiActivityGetNumDroppedRecords: records dropped since the last call.
  virtual CUptiResult get_num_dropped_records(CUcontext context, uint32_t stream_id,
                                              size_t* dropped) = 0;
  // cuptiGetTimestamp: ns, the clock activity records are stamped with.
  virtual CUptiResult get_timestamp(uint64_t* timestamp_ns) = 0;
  // cuptiGetVersion: the CUPTI API version of the library loaded at run time.
  virtual CUptiResult get_version(uint32_t* version) = 0;
  // cuptiGetResultString, or "CUPTI error N" when CUPTI has no string for it.
  virtual std::string result_string(CUptiResult result) = 0;
};

// The implementation over libcupti.
std::unique_ptr<CuptiApi> MakeRealCuptiApi();

}  // namespace sparsetune
