// RAII CUPTI Activity API session: activity buffers, the static buffer callbacks, record parsing.
//
// Only built with SPARSETUNE_WITH_CUPTI. Shape (after Kineto's libkineto):
//
//   CuptiSession(api)  prepares zeroed spare buffers, registers on_buffer_requested / on_buffer_completed (static trampolines),
//                      enables CONCURRENT_KERNEL, MEMCPY, MEMSET activity
//   CUPTI              asks for an empty ActivityBuffer, fills it, hands it back completed
//                      (from its own worker thread, or from the thread that calls flush())
//   on_buffer_completed  parses the buffer into KernelRecords of the one active session and
//                      adds the dropped-record count CUPTI reports
//   flush() / stop()   forced flush (all records of finished work arrive before it returns);
//                      stop() also disables the kinds; the destructor stops
//
// One session at a time per process (CUPTI's callbacks are process-wide); a second one throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "profiler/cupti_api.h"
#include "profiler/profiler.h"

namespace sparsetune {

// A block of memory handed to CUPTI for activity records: 8-byte aligned (CUPTI's
// ACTIVITY_RECORD_ALIGNMENT), zero-filled (the session tells CUPTI that its buffers come zeroed,
// see cupti_session.cpp), owned here, move-only so exactly one owner frees it.
class ActivityBuffer {
 public:
  ActivityBuffer() = default;
  // Allocates `bytes` (rounded up to a multiple of 8), zero-filled; throws std::bad_alloc when
  // it cannot.
  explicit ActivityBuffer(size_t bytes);
  ActivityBuffer(ActivityBuffer&&) noexcept = default;
  ActivityBuffer& operator=(ActivityBuffer&&) noexcept = default;
  ActivityBuffer(const ActivityBuffer&) = delete;
  ActivityBuffer& operator=(const ActivityBuffer&) = delete;

  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

// What one completed buffer held.
struct ParsedActivity {
  std::vector<KernelRecord> records;  // kernels, memcpys and memsets, in buffer order
  int64_t untimed = 0;      // kernel/memcpy/memset records with a zero timestamp (no time known)
  int64_t other_kinds = 0;  // records of kinds the profiler does not read
  std::string error;        // non-empty when CUPTI stopped the walk with an error
};

// Walks a completed buffer with api.get_next_record() and converts kernel (CuptiKernelRecord),
// memcpy and memset records. Kernel names are demangled and categorised (KernelCategory).
ParsedActivity ParseActivityBuffer(CuptiApi& api, uint8_t* buffer, size_t valid_bytes);

class CuptiSession {
 public:
  static constexpr size_t kDefaultBufferBytes = size_t{8} << 20;

  // Prepares zeroed spare buffers, tells CUPTI its buffers come zeroed, registers the buffer
  // callbacks and enables CONCURRENT_KERNEL, MEMCPY and MEMSET activity.
  // Throws RunError, naming the CUPTI call and its result, when a call fails (kinds already
  // enabled are disabled again) or when another session is active. `api` must outlive it.
  explicit CuptiSession(CuptiApi& api, size_t buffer_bytes = kDefaultBufferBytes);
  // stop(), with errors ignored.
  ~CuptiSession();
  // Neither copyable nor movable: the static callbacks hold this object's address.
  CuptiSession(const CuptiSession&) = delete;
  CuptiSession& operator=(const CuptiSession&) = delete;

  // Forced flush: every buffer, complete or not, is handed back before it returns. Synchronise
  // the device first, or records of unfinished work come back without end timestamps. Then
  // refills the pool of zeroed spare buffers, so that CUPTI finds one ready during the next
  // measured region instead of waiting for an allocation on the launching thread.
  void flush();
  // Flushes, disables the activity kinds and detaches from the callbacks. Idempotent. Throws
  // RunError when a CUPTI call failed (the session is stopped anyway).
  void stop();
  bool running() const { return running_; }

  // Records delivered since the last call, in delivery order (their `repeat` is 0).
  std::vector<KernelRecord> take_records();
  // Records CUPTI reported dropped so far (no buffer space), summed over completed buffers.
  int64_t dropped_records() const;
  // Records delivered without timestamps so far (CUPTI lacked device memory for them).
  int64_t untimed_records() const;
  // One line per problem seen while parsing (a CUPTI error mid-buffer, a version mismatch).
  std::vector<std::string> warnings() const;
  // CUPTI's current timestamp (ns, the clock of the records). Throws RunError on failure.
  uint64_t timestamp();

 private:
  static void CUPTIAPI on_buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records);
  static void CUPTIAPI on_buffer_completed(CUcontext context, uint32_t stream_id, uint8_t* buffer,
                                         size_t size, size_t valid_bytes);
  // Parses a completed buffer into this session. Called with the shared mutex held.
  void consume(uint8_t* buffer, size_t valid_bytes, CUcontext context, uint32_t stream_id);
  void detach();

  CuptiApi& api_;
  size_t buffer_bytes_;
  std::vector<CUpti_ActivityKind> enabled_;  // in the order enabled; disabled in reverse
  bool running_ = false;                     // only touched by the owning thread
  // Written by on_buffer_completed, which CUPTI may call from its own thread: guarded by the
  // process-wide mutex in cupti_session.cpp.
  std::vector<KernelRecord> records_;
  int64_t dropped_ = 0;
  int64_t untimed_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace sparsetune
