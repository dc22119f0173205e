// A CuptiApi that plays CUPTI without a GPU: "device work" is written as real CUPTI activity
// records (CuptiKernelRecord, ...) into buffers obtained through the registered buffer-requested
// callback, and handed back through the buffer-completed callback when full or flushed, like
// CUPTI does. The session's trampolines and ParseActivityBuffer thus run their real code paths.
#pragma once

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "profiler/cupti_api.h"

namespace sparsetune::test {

class FakeCuptiApi : public CuptiApi {
 public:
  // ---- knobs ----
  CUpti_ActivityKind fail_enable = CUPTI_ACTIVITY_KIND_INVALID;  // enabling this kind fails
  CUptiResult fail_flush = CUPTI_SUCCESS;      // flush_all returns this when not success
  size_t dropped_per_buffer = 0;               // reported once per completed buffer
  bool complete_full_buffers_on_thread = false;  // hand full buffers back from another thread
  uint32_t version = CUPTI_API_VERSION;        // what get_version reports
  bool refuse_attributes = false;              // set_attribute fails
  uint64_t clock_ns = 1'700'000'000'000'000'000ull;  // CUPTI's clock; advanced by emitted work

  // ---- what happened ----
  std::vector<std::string> calls;  // "zeroed V", "enable KIND", "disable KIND", "register",
                                   // "flush F"
  int buffers_requested = 0;
  int buffers_completed = 0;
  int dirty_buffers = 0;  // buffers handed over not zero-filled though CUPTI was told they are

  // ---- device work ----
  // A kernel of `duration_ns` that starts now on the fake clock; the clock moves past its end.
  void EmitKernel(const std::string& mangled_name, uint64_t duration_ns, uint32_t stream = 7) {
    EmitKernelAt(mangled_name, clock_ns, clock_ns + duration_ns, stream);
    clock_ns += duration_ns + 500;  // launch gap
  }
  // A kernel with explicit timestamps (0 = untimed); the clock is left alone.
  void EmitKernelAt(const std::string& mangled_name, uint64_t start, uint64_t end,
                    uint32_t stream = 7) {
    CuptiKernelRecord r;
    std::memset(&r, 0, sizeof(r));
    r.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    r.start = start;
    r.end = end;
    r.deviceId = 0;
    r.streamId = stream;
    r.correlationId = ++correlation_;
    names_.push_back(mangled_name);
    r.name = names_.back().c_str();
    Append(&r, sizeof(r));
  }
  void EmitMemcpy(uint8_t copy_kind, uint64_t bytes, uint64_t duration_ns) {
    CuptiMemcpyRecord r;
    std::memset(&r, 0, sizeof(r));
    r.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
    r.copyKind = copy_kind;
    r.bytes = bytes;
    r.start = clock_ns;
    r.end = clock_ns + duration_ns;
    r.streamId = 7;
    r.correlationId = ++correlation_;
    clock_ns += duration_ns + 500;
    Append(&r, sizeof(r));
  }
  void EmitMemset(uint64_t bytes, uint64_t duration_ns) {
    CuptiMemsetRecord r;
    std::memset(&r, 0, sizeof(r));
    r.kind = CUPTI_ACTIVITY_KIND_MEMSET;
    r.bytes = bytes;
    r.start = clock_ns;
    r.end = clock_ns + duration_ns;
    r.streamId = 7;
    r.correlationId = ++correlation_;
    clock_ns += duration_ns + 500;
    Append(&r, sizeof(r));
  }
  // A runtime-API record, a kind the profiler does not read.
  void EmitRuntimeApi() {
    CUpti_ActivityAPI r;
    std::memset(&r, 0, sizeof(r));
    r.kind = CUPTI_ACTIVITY_KIND_RUNTIME;
    r.start = clock_ns;
    r.end = clock_ns + 100;
    Append(&r, sizeof(r));
  }

  // ---- CuptiApi ----
  CUptiResult activity_enable(CUpti_ActivityKind kind) override {
    calls.push_back("enable " + std::to_string(kind));
    return kind == fail_enable ? CUPTI_ERROR_NOT_COMPATIBLE : CUPTI_SUCCESS;
  }
  CUptiResult activity_disable(CUpti_ActivityKind kind) override {
    calls.push_back("disable " + std::to_string(kind));
    return CUPTI_SUCCESS;
  }
  CUptiResult register_callbacks(CUpti_BuffersCallbackRequestFunc requested,
                                 CUpti_BuffersCallbackCompleteFunc completed) override {
    calls.push_back("register");
    requested_ = requested;
    completed_ = completed;
    return requested && completed ? CUPTI_SUCCESS : CUPTI_ERROR_INVALID_PARAMETER;
  }
  CUptiResult set_attribute(CUpti_ActivityAttribute attribute, size_t* value_size,
                            void* value) override {
    if (refuse_attributes || attribute != CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER ||
        *value_size != 1) {
      return CUPTI_ERROR_INVALID_PARAMETER;
    }
    zeroed_buffers_ = *static_cast<uint8_t*>(value) != 0;
    calls.push_back("zeroed " + std::to_string(zeroed_buffers_ ? 1 : 0));
    return CUPTI_SUCCESS;
  }
  CUptiResult flush_all(uint32_t flag) override {
    calls.push_back("flush " + std::to_string(flag));
    if (fail_flush != CUPTI_SUCCESS) return fail_flush;
    // Like CUPTI's flush: delivered on the calling thread before returning.
    if (buffer_ != nullptr) Complete(false);
    return CUPTI_SUCCESS;
  }
  CUptiResult get_next_record(uint8_t* buffer, size_t valid_bytes,
                              CUpti_Activity** record) override {
    uint8_t* next = buffer;
    if (*record != nullptr) {
      next = reinterpret_cast<uint8_t*>(*record) + SizeOf((*record)->kind);
    }
    if (next >= buffer + valid_bytes) return CUPTI_ERROR_MAX_LIMIT_REACHED;
    *record = reinterpret_cast<CUpti_Activity*>(next);
    return CUPTI_SUCCESS;
  }
  CUptiResult get_num_dropped_records(CUcontext, uint32_t, size_t* dropped) override {
    *dropped = dropped_per_buffer;
    return CUPTI_SUCCESS;
  }
  CUptiResult get_timestamp(uint64_t* timestamp_ns) override {
    *timestamp_ns = clock_ns;
    return CUPTI_SUCCESS;
  }
  CUptiResult get_version(uint32_t* out) override {
    *out = version;
    return CUPTI_SUCCESS;
  }
  std::string result_string(CUptiResult result) override {
    return "FAKE_CUPTI_ERROR_" + std::to_string(static_cast<int>(result));
  }

 private:
  static size_t SizeOf(CUpti_ActivityKind kind) {
    switch (kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: return sizeof(CuptiKernelRecord);
      case CUPTI_ACTIVITY_KIND_MEMCPY: return sizeof(CuptiMemcpyRecord);
      case CUPTI_ACTIVITY_KIND_MEMSET: return sizeof(CuptiMemsetRecord);
      default: return sizeof(CUpti_ActivityAPI);
    }
  }

  void Append(const void* record, size_t size) {
    if (buffer_ != nullptr && used_ + size > size_) Complete(complete_full_buffers_on_thread);
    if (buffer_ == nullptr) {
      size_t max_records = 0;
      requested_(&buffer_, &size_, &max_records);
      ++buffers_requested;
      used_ = 0;
      if (buffer_ == nullptr || size_ < size) {
        buffer_ = nullptr;
        return;  // CUPTI drops the record
      }
      if (zeroed_buffers_ && std::any_of(buffer_, buffer_ + size_, [](uint8_t b) { return b; })) {
        ++dirty_buffers;
      }
    }
    std::memcpy(buffer_ + used_, record, size);
    used_ += size;
  }

  void Complete(bool on_thread) {
    uint8_t* buffer = buffer_;
    const size_t size = size_;
    const size_t used = used_;
    buffer_ = nullptr;
    used_ = 0;
    ++buffers_completed;
    if (on_thread) {
      std::thread worker([=] { completed_(nullptr, 0, buffer, size, used); });
      worker.join();
    } else {
      completed_(nullptr, 0, buffer, size, used);
    }
  }

  CUpti_BuffersCallbackRequestFunc requested_ = nullptr;
  CUpti_BuffersCallbackCompleteFunc completed_ = nullptr;
  uint8_t* buffer_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
  uint32_t correlation_ = 0;
  bool zeroed_buffers_ = false;
  std::deque<std::string> names_;  // kernel names outlive the records pointing at them
};

}  // namespace sparsetune::test
