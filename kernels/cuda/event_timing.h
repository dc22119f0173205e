// Event timing for the CUDA bench executables (aux_bench, runtime_bench): host-side helpers, no
// device code.
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace sparsetune::cuda {

// Median milliseconds of `fn` over `repeats` runs on the current stream, each between two CUDA
// events (host work between launches counts where the GPU waits for it), after `warmup` runs.
inline double MedianEventMs(int warmup, int repeats, const std::function<void()>& fn) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float t = 0.0f;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace sparsetune::cuda
