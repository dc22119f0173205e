// Benchmark of the CUDA block-sparse attention kernel at a model's attention shape
// (`sparsetune bench attention --device cuda --shape S`): dense SDPA (libtorch; cuDNN on Hopper),
// the kernel at density 1, and the kernel at each block sparsity with a random mask: every
// (b, h, query block) row keeps exactly max(1, round((1 - sparsity) * nb)) key blocks drawn
// uniformly without replacement. Timing comes from the caller (the CLI passes the CUPTI profiler).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace sparsetune {


// Median time in milliseconds of `region` (the CLI passes the CUPTI profiler).
using MeasureMs = std::function<double(const std::function<void()>& region)>;

struct CudaBenchOptions {
  std::string shape;                  // shape name, for the report
  int64_t batch = 1;                  // B
  int64_t heads = 12;                 // H
  int64_t tokens = 32760;             // N
  int64_t head_dim = 128;             // D: 64 or 128
  int64_t block = 128;                // tokens per block: 64 or 128
  std::vector<double> sparsities = {0.0, 0.5, 0.8, 0.9};  // fractions of key blocks skipped
  std::string dtype = "bfloat16";     // bfloat16 or float16
  std::string device = "cuda";        // CUDA device
  uint64_t seed = 0;                  // seed of q/k/v and the masks
};

struct CudaBenchRow {
  std::string path;           // "dense_sdpa", "ours_dense", "ours_sparse"
  double sparsity = 0.0;      // realized fraction of key blocks skipped (0 for the dense rows)
  double time_ms = 0.0;       // median device time of one call, milliseconds
  double tflops = 0.0;        // 4·D·(computed q·k pairs) / time, TFLOP/s
  double speedup = 1.0;       // dense_sdpa time / this row's time
  double peak_mib = 0.0;      // peak allocated device memory during one call (inputs included), MiB
};

struct CudaBenchReport {
  std::string card;                 // device name from the CUDA runtime
  std::vector<CudaBenchRow> rows;   // dense_sdpa first
  std::string mask_predict_note;    // why the mask-prediction column is empty, if it is
};

// Throws InputError for bad options or no CUDA kernels/device.
CudaBenchReport BenchAttentionCuda(const CudaBenchOptions& options, const MeasureMs& measure);

Json CudaBenchToJson(const CudaBenchOptions& options, const CudaBenchReport& report,
                     const std::string& timing_source);

}  // namespace sparsetune
