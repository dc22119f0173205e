// Benchmark of the CUDA block-sparse attention kernel at a model's attention shape
// (`sparsetune bench attention --device cuda --shape S`): dense SDPA (libtorch; cuDNN on Hopper),
// the kernel at density 1, and the kernel at each block sparsity with a random mask: every
// (b, h, query block) row keeps exactly max(1, round((1 - sparsity) * nb)) key blocks drawn
// uniformly without replacement. Timing comes from the caller (the CLI passes the CUPTI profiler).
// With the CUDA kernels built, the same run also times RainFusion2.0's mask prediction on the GPU
// (kernels/cuda/aux_ops.h) and the permutations around the kernel, as shares of dense SDPA time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/json_reader.h"
#include "kernels/schedule.h"

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
  // The shape's grid and text tokens, for mask prediction's token layout (tiles 1x6x4, the Wan
  // config's order); its tokens() must equal `tokens`. An all-zero grid skips mask prediction.
  ModelGeometry geometry;
};

struct CudaBenchRow {
  std::string path;           // "dense_sdpa", "ours_dense", "ours_sparse"
  double sparsity = 0.0;      // realized fraction of key blocks skipped (0 for the dense rows)
  double time_ms = 0.0;       // median device time of one call, milliseconds
  double tflops = 0.0;        // 4·D·(computed q·k pairs) / time, TFLOP/s
  double speedup = 1.0;       // dense_sdpa time / this row's time
  double peak_mib = 0.0;      // peak allocated device memory during one call (inputs included), MiB
};

// Mask prediction and the permutations the runtime wraps around the kernel, timed like the rows.
struct MaskPredictRow {
  // "predict": PredictBlockMask alone; "predict_qk_layout": the same writing q and k in layout
  // order (fused copies); "predict_row_index": predict + the kernel's int32 row index (the
  // runtime's path: the kernel gathers through it); "predict_permute": predict + q, k, v to
  // layout order + O back to model order; "predict_qk_layout_permute": the fused variant + v to
  // layout order + O back.
  std::string path;
  double keep = 0.0;      // requested fraction of key blocks kept per query block
  double density = 0.0;   // realized fraction of (query block, key block) pairs kept (sink included)
  double time_ms = 0.0;   // median device time of one call, milliseconds
  double share = 0.0;     // time_ms / dense_sdpa time_ms
};

struct CudaBenchReport {
  std::string card;                 // device name from the CUDA runtime
  std::vector<CudaBenchRow> rows;   // dense_sdpa first
  std::vector<MaskPredictRow> mask_predict;  // per keep (1 - each nonzero sparsity), five paths
  // Printed under the table: the mask-prediction rows as text, or why there are none.
  std::string mask_predict_note;
};

// Throws InputError for bad options or no CUDA kernels/device.
CudaBenchReport BenchAttentionCuda(const CudaBenchOptions& options, const MeasureMs& measure);

Json CudaBenchToJson(const CudaBenchOptions& options, const CudaBenchReport& report,
                     const std::string& timing_source);

}  // namespace sparsetune
