// Chrome trace export (the "JSON Object Format" that chrome://tracing and Perfetto open).
#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "profiler/profiler.h"

namespace sparsetune {

Json ChromeTrace(const std::vector<KernelRecord>& records, const std::string& process_name) {
  std::vector<const KernelRecord*> sorted;
  sorted.reserve(records.size());
  for (const KernelRecord& r : records) sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [](const KernelRecord* a, const KernelRecord* b) {
    return a->start_ns < b->start_ns;
  });
  // Timestamps are made relative to the earliest record: CUPTI's nanosecond clock is ~1e18, which
  // a double cannot hold to the nanosecond once divided into microseconds.
  const int64_t origin = sorted.empty() ? 0 : sorted.front()->start_ns;

  std::set<uint32_t> devices;
  std::set<std::pair<uint32_t, uint32_t>> streams;
  for (const KernelRecord* r : sorted) {
    devices.insert(r->device);
    streams.emplace(r->device, r->stream);
  }

  Json events = Json::array();
  for (uint32_t device : devices) {
    const std::string name =
        devices.size() == 1 ? process_name : process_name + " (device " + std::to_string(device) + ")";
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", device}, {"tid", 0},
                      {"args", {{"name", name}}}});
  }
  for (const auto& [device, stream] : streams) {
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", device}, {"tid", stream},
                      {"args", {{"name", "stream " + std::to_string(stream)}}}});
  }
  for (const KernelRecord* r : sorted) {
    Json args = {{"repeat", r->repeat}, {"correlation", r->correlation}, {"device", r->device},
                 {"stream", r->stream}};
    if (r->is_memcpy) args["bytes"] = r->bytes;
    events.push_back({{"name", r->name},
                      {"cat", r->category},
                      {"ph", "X"},
                      {"ts", static_cast<double>(r->start_ns - origin) / 1000.0},
                      {"dur", static_cast<double>(std::max<int64_t>(0, r->end_ns - r->start_ns)) / 1000.0},
                      {"pid", r->device},
                      {"tid", r->stream},
                      {"args", std::move(args)}});
  }
  return Json{{"traceEvents", std::move(events)}, {"displayTimeUnit", "ns"}};
}

}  // namespace sparsetune
