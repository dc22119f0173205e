// CUPTI session, buffer trampolines and record parsing (cupti_session.h).
#include "profiler/cupti_session.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "core/error.h"

namespace sparsetune {
namespace {

constexpr size_t kRecordAlignment = 8;  // ACTIVITY_RECORD_ALIGNMENT in cupti_common.h
// Completed buffers kept, zeroed, for reuse. Buffers must be ready before the measured region:
// a buffer requested during it is taken on the launching thread, between two kernel launches.
// On an H200, making and zeroing an 8 MiB buffer there (CUPTI zeroes buffers itself unless told
// they come zeroed) delayed the next launch by ~0.4 ms and serialised two kernels meant to
// overlap on two streams. flush() tops the pool up again (it runs between measured regions), since
// CUPTI may keep buffers it was handed rather than return them on every flush.
constexpr size_t kSpareBuffers = 3;

size_t RoundUp(size_t bytes) {
  return (bytes + kRecordAlignment - 1) / kRecordAlignment * kRecordAlignment;
}

// State the static CUPTI callbacks share with the sessions. Lock rules:
//  * `mutex` guards every field here and the record fields of the active session;
//  * it is held while a completed buffer is parsed (get_next_record and
//    get_num_dropped_records never call back into us), so a session cannot be detached halfway
//    through a delivery;
//  * it is never held across flush_all(): CUPTI may run on_buffer_completed on the flushing
//    thread itself, which would then deadlock on it.
// Allocated once and never freed: CUPTI can deliver buffers from its exit handler, after static
// destructors would have run.
struct SharedState {
  std::mutex mutex;
  CuptiSession* active = nullptr;
  std::unordered_map<uint8_t*, ActivityBuffer> outstanding;  // handed to CUPTI, not yet back
  std::vector<ActivityBuffer> spare;
  size_t buffer_bytes = CuptiSession::kDefaultBufferBytes;
};

SharedState& Shared() {
  static SharedState* state = new SharedState;
  return *state;
}

// Tops the spare pool up to kSpareBuffers zeroed buffers of `bytes`; spares of another size
// (an earlier session's) are freed. Allocates outside the lock.
void PrepareSpares(size_t bytes) {
  SharedState& shared = Shared();
  size_t missing = 0;
  {
    std::lock_guard<std::mutex> lock(shared.mutex);
    auto& spare = shared.spare;
    spare.erase(std::remove_if(spare.begin(), spare.end(),
                               [&](const ActivityBuffer& b) { return b.size() != bytes; }),
                spare.end());
    missing = spare.size() < kSpareBuffers ? kSpareBuffers - spare.size() : 0;
  }
  std::vector<ActivityBuffer> fresh;
  for (size_t i = 0; i < missing; ++i) fresh.emplace_back(bytes);
  std::lock_guard<std::mutex> lock(shared.mutex);
  for (ActivityBuffer& b : fresh) shared.spare.push_back(std::move(b));
}

const char* MemcpyKindName(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOA: return "memcpy HtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOH: return "memcpy AtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOA: return "memcpy AtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOD: return "memcpy AtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOA: return "memcpy DtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "memcpy HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "memcpy PtoP";
    default: return "memcpy";
  }
}

const char* KindName(CUpti_ActivityKind kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: return "CONCURRENT_KERNEL";
    case CUPTI_ACTIVITY_KIND_MEMCPY: return "MEMCPY";
    case CUPTI_ACTIVITY_KIND_MEMSET: return "MEMSET";
    default: return "activity kind";
  }
}

// Fills the fields every record kind shares; false when the record has no timestamps.
bool SetTimes(uint64_t start, uint64_t end, KernelRecord* out) {
  if (start == 0 || end == 0) return false;
  out->start_ns = static_cast<int64_t>(start);
  out->end_ns = static_cast<int64_t>(end);
  return true;
}

}  // namespace

ActivityBuffer::ActivityBuffer(size_t bytes) {
  const size_t rounded = RoundUp(bytes == 0 ? 1 : bytes);
  void* p = std::aligned_alloc(kRecordAlignment, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  data_.reset(static_cast<uint8_t*>(p));
  size_ = rounded;
}

ParsedActivity ParseActivityBuffer(CuptiApi& api, uint8_t* buffer, size_t valid_bytes) {
  ParsedActivity parsed;
  if (buffer == nullptr || valid_bytes == 0) return parsed;
  CUpti_Activity* record = nullptr;
  while (true) {
    const CUptiResult status = api.get_next_record(buffer, valid_bytes, &record);
    if (status == CUPTI_ERROR_MAX_LIMIT_REACHED) break;
    if (status != CUPTI_SUCCESS) {
      parsed.error = "cuptiActivityGetNextRecord: " + api.result_string(status);
      break;
    }
    KernelRecord out;
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_KERNEL:
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CuptiKernelRecord*>(record);
        if (!SetTimes(k->start, k->end, &out)) {
          ++parsed.untimed;
          continue;
        }
        out.name = DemangleKernelName(k->name != nullptr ? k->name : "<unnamed kernel>");
        out.stream = k->streamId;
        out.device = k->deviceId;
        out.correlation = k->correlationId;
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CuptiMemcpyRecord*>(record);
        if (!SetTimes(m->start, m->end, &out)) {
          ++parsed.untimed;
          continue;
        }
        out.name = MemcpyKindName(m->copyKind);
        out.stream = m->streamId;
        out.device = m->deviceId;
        out.correlation = m->correlationId;
        out.is_memcpy = true;
        out.bytes = static_cast<int64_t>(m->bytes);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CuptiMemsetRecord*>(record);
        if (!SetTimes(m->start, m->end, &out)) {
          ++parsed.untimed;
          continue;
        }
        out.name = "memset";
        out.stream = m->streamId;
        out.device = m->deviceId;
        out.correlation = m->correlationId;
        out.is_memcpy = true;
        out.bytes = static_cast<int64_t>(m->bytes);
        break;
      }
      default:
        ++parsed.other_kinds;
        continue;
    }
    out.category = KernelCategory(out.name);
    parsed.records.push_back(std::move(out));
  }
  return parsed;
}

CuptiSession::CuptiSession(CuptiApi& api, size_t buffer_bytes)
    : api_(api), buffer_bytes_(buffer_bytes) {
  // Before attaching: once active, warnings_ belongs to the callbacks' mutex.
  uint32_t version = 0;
  if (api_.get_version(&version) == CUPTI_SUCCESS && version != CUPTI_API_VERSION) {
    // Record layouts are those of the headers; a different library may lay them out otherwise.
    warnings_.push_back("CUPTI API version at run time is " + std::to_string(version) +
                        ", the headers are " + std::to_string(CUPTI_API_VERSION) +
                        ": kernel record layout may differ");
  }
  {
    std::lock_guard<std::mutex> lock(Shared().mutex);
    if (Shared().active != nullptr) {
      throw RunError("CUPTI: another profiling session is active (one at a time per process)");
    }
    Shared().active = this;
    Shared().buffer_bytes = RoundUp(buffer_bytes_);
  }
  PrepareSpares(RoundUp(buffer_bytes_));
  std::string failure;
  // Our buffers come zeroed (ActivityBuffer, recycling in on_buffer_completed), so CUPTI need
  // not zero them on the launching thread. If CUPTI refuses, it zeroes them itself: slower
  // launches while buffers are handed out, not wrong records.
  uint8_t zeroed = 1;
  size_t zeroed_size = sizeof(zeroed);
  if (api_.set_attribute(CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER, &zeroed_size, &zeroed) !=
      CUPTI_SUCCESS) {
    std::lock_guard<std::mutex> lock(Shared().mutex);
    warnings_.push_back("CUPTI would not take zeroed buffers: launches may stall while it zeroes them");
  }
  CUptiResult status = api_.register_callbacks(&CuptiSession::on_buffer_requested,
                                               &CuptiSession::on_buffer_completed);
  if (status != CUPTI_SUCCESS) {
    failure = "cuptiActivityRegisterCallbacks: " + api_.result_string(status);
  }
  for (CUpti_ActivityKind kind : {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                  CUPTI_ACTIVITY_KIND_MEMSET}) {
    if (!failure.empty()) break;
    status = api_.activity_enable(kind);
    if (status != CUPTI_SUCCESS) {
      failure = std::string("cuptiActivityEnable(") + KindName(kind) +
                "): " + api_.result_string(status);
    } else {
      enabled_.push_back(kind);
    }
  }
  if (!failure.empty()) {
    for (auto it = enabled_.rbegin(); it != enabled_.rend(); ++it) api_.activity_disable(*it);
    enabled_.clear();
    detach();
    throw RunError("CUPTI: " + failure);
  }
  running_ = true;
}

CuptiSession::~CuptiSession() {
  try {
    stop();
  } catch (const Error&) {
    // A destructor must not throw; stop() has detached the session before reporting.
  }
}

void CuptiSession::flush() {
  // Not under the shared mutex: CUPTI may deliver buffers on this thread (see SharedState).
  const CUptiResult status = api_.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  if (status != CUPTI_SUCCESS) {
    throw RunError("CUPTI: cuptiActivityFlushAll: " + api_.result_string(status));
  }
  PrepareSpares(RoundUp(buffer_bytes_));
}

void CuptiSession::stop() {
  if (!running_) return;
  running_ = false;
  std::string failure;
  // Forced flush first so records of finished work reach this session, then disable; the
  // shared mutex is not held here (see SharedState).
  CUptiResult status = api_.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  if (status != CUPTI_SUCCESS) failure = "cuptiActivityFlushAll: " + api_.result_string(status);
  for (auto it = enabled_.rbegin(); it != enabled_.rend(); ++it) {
    status = api_.activity_disable(*it);
    if (status != CUPTI_SUCCESS && failure.empty()) {
      failure = std::string("cuptiActivityDisable(") + KindName(*it) +
                "): " + api_.result_string(status);
    }
  }
  enabled_.clear();
  detach();
  if (!failure.empty()) throw RunError("CUPTI: " + failure);
}

void CuptiSession::detach() {
  std::lock_guard<std::mutex> lock(Shared().mutex);
  if (Shared().active == this) Shared().active = nullptr;
}

std::vector<KernelRecord> CuptiSession::take_records() {
  std::lock_guard<std::mutex> lock(Shared().mutex);
  std::vector<KernelRecord> out;
  out.swap(records_);
  return out;
}

int64_t CuptiSession::dropped_records() const {
  std::lock_guard<std::mutex> lock(Shared().mutex);
  return dropped_;
}

int64_t CuptiSession::untimed_records() const {
  std::lock_guard<std::mutex> lock(Shared().mutex);
  return untimed_;
}

std::vector<std::string> CuptiSession::warnings() const {
  std::lock_guard<std::mutex> lock(Shared().mutex);
  return warnings_;
}

uint64_t CuptiSession::timestamp() {
  uint64_t ts = 0;
  const CUptiResult status = api_.get_timestamp(&ts);
  if (status != CUPTI_SUCCESS) {
    throw RunError("CUPTI: cuptiGetTimestamp: " + api_.result_string(status));
  }
  return ts;
}

void CUPTIAPI CuptiSession::on_buffer_requested(uint8_t** buffer, size_t* size,
                                                size_t* max_records) {
  // Called by CUPTI from whichever thread needs buffer space. Must not throw into CUPTI: when
  // no memory is to be had it gets no buffer and counts the records it drops.
  *buffer = nullptr;
  *size = 0;
  *max_records = 0;  // as many records as fit
  SharedState& shared = Shared();
  ActivityBuffer block;
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(shared.mutex);
    bytes = shared.buffer_bytes;
    // Reuse only a spare of the size the session asked for.
    if (!shared.spare.empty() && shared.spare.back().size() == bytes) {
      block = std::move(shared.spare.back());
      shared.spare.pop_back();
    }
  }
  if (block.data() == nullptr) {
    try {
      block = ActivityBuffer(bytes);
    } catch (const std::bad_alloc&) {
      return;
    }
  }
  *buffer = block.data();
  *size = block.size();
  std::lock_guard<std::mutex> lock(shared.mutex);
  shared.outstanding.emplace(block.data(), std::move(block));
}

void CUPTIAPI CuptiSession::on_buffer_completed(CUcontext context, uint32_t stream_id,
                                                uint8_t* buffer, size_t size,
                                                size_t valid_bytes) {
  // Called by CUPTI from its worker thread, or from the thread inside flush_all(). Holds the
  // shared mutex throughout, so the active session can neither start nor detach mid-parse.
  SharedState& shared = Shared();
  std::lock_guard<std::mutex> lock(shared.mutex);
  auto it = shared.outstanding.find(buffer);
  if (it == shared.outstanding.end()) return;  // not one of ours: not ours to free either
  ActivityBuffer block = std::move(it->second);
  shared.outstanding.erase(it);
  if (shared.active != nullptr) {
    shared.active->consume(block.data(), valid_bytes, context, stream_id);
  }
  if (shared.spare.size() < kSpareBuffers && block.size() == shared.buffer_bytes) {
    // Zero it again for CUPTI (ZEROED_OUT_ACTIVITY_BUFFER). CUPTI writes records from the start
    // of a buffer and reports how far it wrote, so only the first valid_bytes need clearing.
    std::memset(block.data(), 0, std::min(valid_bytes, block.size()));
    shared.spare.push_back(std::move(block));
  }
}

void CuptiSession::consume(uint8_t* buffer, size_t valid_bytes, CUcontext context,
                           uint32_t stream_id) {
  ParsedActivity parsed = ParseActivityBuffer(api_, buffer, valid_bytes);
  size_t dropped = 0;
  if (api_.get_num_dropped_records(context, stream_id, &dropped) == CUPTI_SUCCESS) {
    dropped_ += static_cast<int64_t>(dropped);
  }
  untimed_ += parsed.untimed;
  if (!parsed.error.empty()) warnings_.push_back(parsed.error);
  records_.insert(records_.end(), std::make_move_iterator(parsed.records.begin()),
                  std::make_move_iterator(parsed.records.end()));
}

}  // namespace sparsetune
