#include "profiler/overhead.h"

#include <algorithm>

#include "core/error.h"
#include "profiler/profiler.h"

#if SPARSETUNE_WITH_CUPTI
#include <cuda_runtime_api.h>

#include "profiler/cupti_session.h"
#endif

namespace sparsetune {

namespace {

double Spread(const std::vector<double>& v, double median) {
  if (v.empty() || median <= 0) return 0;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return (*hi - *lo) / median;
}

#if SPARSETUNE_WITH_CUPTI
void CheckCuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RunError(std::string(what) + ": " + cudaGetErrorString(status));
}

// Two events on the legacy default stream, owned.
class EventPair {
 public:
  EventPair() {
    CheckCuda(cudaEventCreate(&start_), "cudaEventCreate");
    const cudaError_t s = cudaEventCreate(&stop_);
    if (s != cudaSuccess) {
      cudaEventDestroy(start_);
      CheckCuda(s, "cudaEventCreate");
    }
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;

  // Event time of one run of `region` in ns; `sync` runs after the stop event is recorded.
  double time(const std::function<void()>& region, const std::function<void()>& sync) {
    CheckCuda(cudaEventRecord(start_, nullptr), "cudaEventRecord");
    region();
    CheckCuda(cudaEventRecord(stop_, nullptr), "cudaEventRecord");
    if (sync) sync();
    CheckCuda(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    CheckCuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return static_cast<double>(ms) * 1e6;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};
#endif

}  // namespace

void SummarizeOverhead(OverheadReport& r) {
  auto check = [](const std::vector<double>& v, const char* what) {
    if (v.empty()) throw InputError(std::string("overhead: no ") + what + " runs");
    for (double t : v) {
      if (!(t > 0)) throw InputError(std::string("overhead: a ") + what + " run took no time");
    }
  };
  check(r.plain_ns, "plain");
  check(r.traced_ns, "traced");
  r.plain_median_ns = Median(r.plain_ns);
  r.traced_median_ns = Median(r.traced_ns);
  r.busy_median_ns = Median(r.busy_ns);
  r.plain_spread = Spread(r.plain_ns, r.plain_median_ns);
  r.traced_spread = Spread(r.traced_ns, r.traced_median_ns);
  r.overhead = r.traced_median_ns / r.plain_median_ns - 1.0;
  r.busy_share = r.busy_median_ns / r.traced_median_ns;
}

OverheadReport MeasureCuptiOverhead(const std::function<void()>& region,
                                    const std::function<void()>& sync, int warmup, int rounds,
                                    int per_round) {
  if (!region) throw RunError("overhead: empty region");
  if (warmup < 0 || rounds < 1 || per_round < 1) {
    throw InputError("overhead: warm-up must be >= 0, rounds and runs per round >= 1 (got " +
                     std::to_string(warmup) + ", " + std::to_string(rounds) + ", " +
                     std::to_string(per_round) + ")");
  }
#if !SPARSETUNE_WITH_CUPTI
  (void)sync;
  throw RunError("overhead: needs a build with CUDA and CUPTI (SPARSETUNE_WITH_CUPTI is off)");
#else
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw RunError("overhead: no CUDA device");
  }
  OverheadReport r;
  r.rounds = rounds;
  r.per_round = per_round;
  EventPair events;
  std::shared_ptr<CuptiApi> api = MakeRealCuptiApi();
  for (int i = 0; i < warmup; ++i) events.time(region, sync);
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < per_round; ++i) r.plain_ns.push_back(events.time(region, sync));
    CuptiSession session(*api);
    // One untimed traced run per round: CUPTI's first-use costs after enabling belong to the
    // session start, which the CuptiProfiler also keeps out of its timed repeats (warm-up).
    events.time(region, sync);
    session.flush();
    session.take_records();
    std::vector<KernelRecord> records;
    for (int i = 0; i < per_round; ++i) {
      const auto begin = static_cast<int64_t>(session.timestamp());
      r.traced_ns.push_back(events.time(region, sync));
      session.flush();
      for (KernelRecord& rec : session.take_records()) {
        if (rec.end_ns < begin) continue;
        rec.repeat = i;
        records.push_back(std::move(rec));
      }
    }
    session.stop();
    if (session.dropped_records() > 0) {
      r.warnings.push_back("round " + std::to_string(round) + ": CUPTI dropped " +
                           std::to_string(session.dropped_records()) + " records");
    }
    const Measurement m = SummarizeRecords("cupti", std::move(records), per_round);
    r.busy_ns.insert(r.busy_ns.end(), m.repeat_ns.begin(), m.repeat_ns.end());
  }
  SummarizeOverhead(r);
  return r;
#endif
}

Json OverheadToJson(const OverheadReport& r) {
  auto ms = [](const std::vector<double>& v) {
    Json a = Json::array();
    for (double t : v) a.push_back(t / 1e6);
    return a;
  };
  return Json{{"rounds", r.rounds},
              {"per_round", r.per_round},
              {"plain_median_ms", r.plain_median_ns / 1e6},
              {"traced_median_ms", r.traced_median_ns / 1e6},
              {"busy_median_ms", r.busy_median_ns / 1e6},
              {"plain_spread", r.plain_spread},
              {"traced_spread", r.traced_spread},
              {"overhead", r.overhead},
              {"busy_share", r.busy_share},
              {"plain_ms", ms(r.plain_ns)},
              {"traced_ms", ms(r.traced_ns)},
              {"busy_ms", ms(r.busy_ns)},
              {"warnings", r.warnings}};
}

}  // namespace sparsetune
