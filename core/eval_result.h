// What one evaluation of a candidate schedule produces, and the interface through which a batch
// of candidates is evaluated. Shared by evaluators/ (produces), results/ (stores) and search/
// (consumes); torch-free so the search builds without a model.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace sparsetune {

// Aggregated device time of one kernel (or, on the wall-clock fallback, one timed region).
struct KernelTime {
  std::string name;        // kernel (demangled) or region name
  std::string category;    // "attention" | "mask" | "gather_scatter" | "gemm" | "other" | "wall"
  int64_t launches = 0;    // launches in the measured region, summed over repeats
  double total_ns = 0;     // total time over all launches
  double mean_ns = 0;
  double min_ns = 0;
  double median_ns = 0;
};

struct EvalResult {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

  bool ok = false;              // false: the candidate failed; `error` says why
  std::string error;            // one line
  double psnr = kNaN;           // dB, mean over calibration samples (identical outputs: 100)
  double ssim = kNaN;           // mean over calibration samples
  double psnr_heldout = kNaN;   // dB, mean over held-out samples (NaN when none)
  double ssim_heldout = kNaN;
  double latency_ms = kNaN;     // one generation: latency.estimator over the repeats
                                // (wall clock: min, CUPTI: median)
  double dense_latency_ms = kNaN;  // dense baseline, measured in the same process
  double speedup = kNaN;        // dense_latency_ms / latency_ms
  double density = kNaN;        // fraction of q·k work computed (reuse counted as skipped)
  double token_density = kNaN;  // fraction of query tokens computed (Astraea)
  double latency_spread = kNaN; // (max - min) / median of the timed repeats
  std::string latency_source;   // "cupti" | "wall_clock"
  std::vector<KernelTime> kernels;  // per-kernel breakdown of one generation
  Json extra = Json::object();  // anything else worth keeping (per-sample metrics, ...)
};

Json ToJson(const EvalResult& r);
EvalResult EvalResultFromJson(const Json& j);
Json ToJson(const KernelTime& k);

// Evaluates batches of candidate schedules (schedule v1 JSON documents). The search loop only
// talks to this interface, so a later pool (several GPUs or hosts) can evaluate a batch in
// parallel; results come back in the order of the request. Implementations never throw for a
// failing candidate: they return ok=false with the error.
class CandidateEvaluator {
 public:
  virtual ~CandidateEvaluator() = default;
  virtual std::vector<EvalResult> evaluate(const std::vector<Json>& schedules) = 0;
  // The dense baseline's result (latency, quality 100 dB / 1.0) for reporting.
  virtual EvalResult dense_baseline() = 0;
  // Model geometry as schedule-v1 "model" JSON, used to build candidate schedules.
  virtual Json model_geometry() const = 0;
  // The device name ("cpu: ..." or the GPU's name), for provenance.
  virtual std::string device_name() const = 0;
  // Per-head advice for seeding the search, from the dense run of the first calibration sample:
  // {"arm": [[pattern name per head] per layer],                  ARM's pick for each head
  //  "error": [[[relative L2 error per option] per head] per layer]}  attention-output error of
  // each of `head_options` (schedule-v1 head pattern objects) against dense attention. A null
  // result means the workload cannot give advice; the search then skips these seeds.
  virtual Json head_advice(const std::vector<Json>& head_options) { return nullptr; }
};

}  // namespace sparsetune
