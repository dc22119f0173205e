// Attention micro-benchmark of the runtime (CPU, or CUDA with a synchronise per call): wall-clock time per pattern against dense
// SDPA at one shape (`sparsetune bench attention`). Rows carry the realized density so a speedup
// can be read against the work actually skipped.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace sparsetune {

struct BenchOptions {
  std::array<int64_t, 3> grid = {8, 32, 32};  // video grid [frames, height, width] in tokens
  int64_t heads = 4;                          // attention heads
  int64_t head_dim = 64;                      // channels per head
  int64_t block = 64;                         // tokens per attention block
  int64_t text_tokens = 0;                    // text tokens appended (text at the back)
  int64_t batch = 1;                          // sequences per call
  int64_t repeats = 5;                        // timed calls per row (median reported)
  std::vector<double> keeps = {0.1, 0.2, 0.3, 0.5};  // block_sparse keep ratios (with sink)
  // block_sparse keeps without the sink; keep 1 runs every block through the sparse kernel (its
  // per-pair cost against dense SDPA's, the reference the ideal speedup assumes)
  std::vector<double> keeps_no_sink = {0.2, 1.0};
  std::vector<double> densities = {0.2, 0.4};        // spatial/temporal/textural densities
  uint64_t seed = 0;                          // seed of the random q/k/v
  std::string device = "cpu";                 // torch device of q/k/v ("cpu", "cuda", "cuda:1")
  std::string dtype = "float32";              // float32; bfloat16/float16 off the CPU
  std::string cpu_matmul;                     // CPU sparse-kernel matmul: "brgemm", "sgemm" or
                                              // "" (the build's default, see CpuMatmul)
};

struct BenchRow {
  std::string pattern;   // "dense_sdpa", "block_sparse", "spatial", "temporal", "textural"
  double param = 1.0;    // keep (block_sparse) or density (others); 1 for dense
  bool sink = true;      // block_sparse: first-frame rows and columns dense (the default)
  double time_ms = 0.0;  // median wall-clock time of one runtime call, milliseconds; block_sparse
                         // rebuilds its mask and plan in every call (mask_refresh 1)
  double dense_ms = 0.0; // median time of dense SDPA, timed interleaved with this row's calls
  double density = 1.0;  // fraction of q·k pairs computed (AttentionStats::density)
  double speedup = 1.0;  // dense_ms / time_ms
  double ideal = 1.0;    // 1 / density: the speedup of a kernel as fast per pair as dense
  double efficiency = 1.0;  // speedup / ideal
  double cached_ms = 0.0;   // block_sparse: median time with the mask and plan reused (the steps
                            // between refreshes); 0 for other rows (their masks are static)
  double cached_speedup = 0.0;  // dense_ms / cached_ms (0 when cached_ms is 0)
};

// Runs every row at one shape; the first row is the dense SDPA reference (median over every dense
// call of the run). Each other row times its calls interleaved with dense SDPA calls (dense,
// sparse, dense, ...) so that load changes on a shared machine hit both alike. Throws InputError for
// non-positive shape options, an unknown device or dtype.
std::vector<BenchRow> BenchAttention(const BenchOptions& options);

Json BenchToJson(const BenchOptions& options, const std::vector<BenchRow>& rows);

// The 1, 5 and 15 minute load averages from /proc/loadavg ("" where there is none): the bench
// runs on shared machines, so each report says how busy the machine was.
std::string LoadAverage();

}  // namespace sparsetune
