// How much CUPTI activity tracing slows the work it measures (issue: "CUPTI overhead on a
// generation at most 3% against CUDA events").
//
// The region is run in rounds; each round runs it `per_round` times plain (CUDA events around
// each run, no CUPTI) and then `per_round` times under an active CuptiSession (the same events,
// plus the kernel/memcpy/memset activity the CuptiProfiler records). Rounds alternate the two
// conditions so that clock and thermal drift falls on both. The overhead is
// median(traced event time) / median(plain event time) - 1. The CUPTI busy time of the traced
// runs is reported beside it: busy / event time says how much of a run the device is busy (the
// rest is launch gaps the busy time leaves out by design, docs/profiler.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/eval_result.h"

namespace sparsetune {

struct OverheadReport {
  int rounds = 0;                 // alternations of plain and traced runs
  int per_round = 0;              // runs of each condition per round
  std::vector<double> plain_ns;   // event time of each plain run (no CUPTI)
  std::vector<double> traced_ns;  // event time of each run under CUPTI
  std::vector<double> busy_ns;    // CUPTI device busy time of each traced run
  double plain_median_ns = 0;
  double traced_median_ns = 0;
  double busy_median_ns = 0;
  double plain_spread = 0;        // (max - min) / median of plain_ns
  double traced_spread = 0;       // same for traced_ns
  double overhead = 0;            // traced_median / plain_median - 1
  double busy_share = 0;          // busy_median / traced_median
  std::vector<std::string> warnings;  // dropped records and the like
};

// Fills the medians, spreads, overhead and busy share of `r` from its three vectors. Throws
// InputError when plain_ns or traced_ns is empty or holds a non-positive time.
void SummarizeOverhead(OverheadReport& r);

// Runs the comparison on the current CUDA device (events on the legacy default stream, which
// libtorch uses unless told otherwise). `sync` waits for the device after each run. Throws
// RunError without CUDA/CUPTI in the build or without a device, and InputError for
// warmup < 0, rounds < 1 or per_round < 1.
OverheadReport MeasureCuptiOverhead(const std::function<void()>& region,
                                    const std::function<void()>& sync, int warmup, int rounds,
                                    int per_round);

Json OverheadToJson(const OverheadReport& r);

}  // namespace sparsetune
