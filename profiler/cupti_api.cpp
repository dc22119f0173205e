// CuptiApi over libcupti: each method is the one CUPTI call it names.
#include "profiler/cupti_api.h"

namespace sparsetune {
namespace {

class RealCuptiApi final : public CuptiApi {
 public:
  CUptiResult activity_enable(CUpti_ActivityKind kind) override { return cuptiActivityEnable(kind); }
  CUptiResult activity_disable(CUpti_ActivityKind kind) override {
    return cuptiActivityDisable(kind);
  }
  CUptiResult register_callbacks(CUpti_BuffersCallbackRequestFunc requested,
                                 CUpti_BuffersCallbackCompleteFunc completed) override {
    return cuptiActivityRegisterCallbacks(requested, completed);
  }
  CUptiResult set_attribute(CUpti_ActivityAttribute attribute, size_t* value_size,
                            void* value) override {
    return cuptiActivitySetAttribute(attribute, value_size, value);
  }
  CUptiResult flush_all(uint32_t flag) override { return cuptiActivityFlushAll(flag); }
  CUptiResult get_next_record(uint8_t* buffer, size_t valid_bytes,
                              CUpti_Activity** record) override {
    return cuptiActivityGetNextRecord(buffer, valid_bytes, record);
  }
  CUptiResult get_num_dropped_records(CUcontext context, uint32_t stream_id,
                                      size_t* dropped) override {
    return cuptiActivityGetNumDroppedRecords(context, stream_id, dropped);
  }
  CUptiResult get_timestamp(uint64_t* timestamp_ns) override {
    return cuptiGetTimestamp(timestamp_ns);
  }
  CUptiResult get_version(uint32_t* version) override { return cuptiGetVersion(version); }
  std::string result_string(CUptiResult result) override {
    const char* text = nullptr;
    if (cuptiGetResultString(result, &text) == CUPTI_SUCCESS && text != nullptr) return text;
    return "CUPTI error " + std::to_string(static_cast<int>(result));
  }
};

}  // namespace

std::unique_ptr<CuptiApi> MakeRealCuptiApi() { return std::make_unique<RealCuptiApi>(); }

}  // namespace sparsetune
