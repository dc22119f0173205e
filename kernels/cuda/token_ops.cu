// Astraea token kernels (token_ops.h). Row kernels use one warp per token row; the score kernel
// one CTA per batch row (min/max over the video tokens, then the scores).
#include "kernels/cuda/token_ops.h"

#include <algorithm>
#include <cfloat>

#include "kernels/cuda/half_util.cuh"

namespace sparsetune::cuda {

namespace {

using detail::ToFloat;
using detail::WarpSum;

constexpr int kThreads = 256;

unsigned GridFor(int64_t work, int per_block) {
  return static_cast<unsigned>(std::clamp<int64_t>((work + per_block - 1) / per_block, 1, 1 << 20));
}

template <typename Chunk>
__global__ void GatherKernel(const Chunk* __restrict__ x, Chunk* __restrict__ out,
                             const int64_t* __restrict__ index, int64_t batch, int64_t tokens,
                             int64_t count, int64_t chunks) {
  const int64_t total = batch * count * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % chunks, row = i / chunks, b = row / count;
    out[i] = x[(b * tokens + index[row]) * chunks + c];
  }
}

template <typename T>
__device__ __forceinline__ float AsFloat(T x) { return ToFloat<T>(x); }
template <>
__device__ __forceinline__ float AsFloat<float>(float x) { return x; }

template <typename T>
__global__ void ScatterKernel(T* __restrict__ cache, const T* __restrict__ update,
                              const int64_t* __restrict__ index, float* __restrict__ delta,
                              int64_t batch, int64_t tokens, int64_t count, int64_t channels) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= batch * count) return;
  const int64_t b = row / count, j = index[row];
  T* dst = cache + (b * tokens + j) * channels;
  const T* src = update + row * channels;
  float diff2 = 0.0f, old2 = 0.0f;
  for (int64_t c = lane; c < channels; c += 32) {
    const T nv = src[c];
    if (delta != nullptr) {
      const float o = AsFloat<T>(dst[c]), n = AsFloat<T>(nv);
      diff2 += (n - o) * (n - o);
      old2 += o * o;
    }
    dst[c] = nv;
  }
  if (delta != nullptr) {
    diff2 = WarpSum(diff2);
    old2 = WarpSum(old2);
    if (lane == 0) delta[b * tokens + j] = sqrtf(diff2) / fmaxf(sqrtf(old2), 1e-12f);
  }
}

__global__ void IncrementKernel(int64_t* __restrict__ skipped, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    skipped[i] += 1;
}

__global__ void ZeroSelectedKernel(int64_t* __restrict__ skipped, const int64_t* __restrict__ index,
                                   int64_t batch, int64_t tokens, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    skipped[(i / count) * tokens + index[i]] = 0;
}

__global__ void RecordLseKernel(const float* __restrict__ lse, const int64_t* __restrict__ q_index,
                                float* __restrict__ out, int64_t batch, int64_t heads,
                                int64_t q_rows, int64_t tokens) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * q_rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / q_rows, r = i % q_rows;
    float s = 0.0f;
    for (int64_t h = 0; h < heads; ++h) s += lse[(b * heads + h) * q_rows + r];
    out[b * tokens + q_index[i]] = s / static_cast<float>(heads);
  }
}

// One CTA per batch row.
__global__ void ScoresKernel(const float* __restrict__ lse, const float* __restrict__ delta,
                             const int64_t* __restrict__ skipped, double* __restrict__ scores,
                             int64_t tokens, int64_t video_offset, int64_t video_tokens,
                             double penalty_weight, int64_t max_skip_exponent) {
  __shared__ double lo_s[kThreads / 32], hi_s[kThreads / 32];
  const int64_t base = blockIdx.x * tokens;
  double lo = DBL_MAX, hi = -DBL_MAX;
  for (int64_t j = video_offset + threadIdx.x; j < video_offset + video_tokens; j += blockDim.x) {
    const double s = static_cast<double>(lse[base + j]) * static_cast<double>(delta[base + j]);
    lo = fmin(lo, s);
    hi = fmax(hi, s);
  }
  for (int o = 16; o > 0; o >>= 1) {
    lo = fmin(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = fmax(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (threadIdx.x % 32 == 0) lo_s[threadIdx.x / 32] = lo, hi_s[threadIdx.x / 32] = hi;
  __syncthreads();
  lo = lo_s[0], hi = hi_s[0];
  for (int w = 1; w < kThreads / 32; ++w) lo = fmin(lo, lo_s[w]), hi = fmax(hi, hi_s[w]);
  const double range = fmax(hi - lo, 1e-30);
  for (int64_t j = threadIdx.x; j < tokens; j += blockDim.x) {
    if (j < video_offset || j >= video_offset + video_tokens) {
      scores[base + j] = __longlong_as_double(0x7ff0000000000000ll);  // +inf: text always chosen
      continue;
    }
    const double sig =
        (static_cast<double>(lse[base + j]) * static_cast<double>(delta[base + j]) - lo) / range;
    const int64_t n = min(skipped[base + j], max_skip_exponent);
    scores[base + j] = sig + penalty_weight * exp(static_cast<double>(n));
  }
}

}  // namespace

int LaunchGatherTokens(const void* x, void* out, const int64_t* index, int64_t batch,
                       int64_t tokens, int64_t count, int64_t row_bytes, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch * count == 0 || row_bytes == 0) return cudaSuccess;
  if (row_bytes % 16 == 0) {
    const int64_t chunks = row_bytes / 16;
    GatherKernel<uint4><<<GridFor(batch * count * chunks, kThreads), kThreads, 0, stream>>>(
        static_cast<const uint4*>(x), static_cast<uint4*>(out), index, batch, tokens, count, chunks);
  } else if (row_bytes % 4 == 0) {
    const int64_t chunks = row_bytes / 4;
    GatherKernel<uint32_t><<<GridFor(batch * count * chunks, kThreads), kThreads, 0, stream>>>(
        static_cast<const uint32_t*>(x), static_cast<uint32_t*>(out), index, batch, tokens, count,
        chunks);
  } else {
    GatherKernel<uint8_t><<<GridFor(batch * count * row_bytes, kThreads), kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(x), static_cast<uint8_t*>(out), index, batch, tokens, count,
        row_bytes);
  }
  return cudaGetLastError();
}

int LaunchScatterTokens(void* cache, const void* update, const int64_t* index, float* delta,
                        int64_t batch, int64_t tokens, int64_t count, int64_t channels,
                        TokenDtype dtype, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch * count == 0) return cudaSuccess;
  const unsigned grid = GridFor(batch * count, kThreads / 32);
  switch (dtype) {
    case TokenDtype::kFloat32:
      ScatterKernel<float><<<grid, kThreads, 0, stream>>>(static_cast<float*>(cache),
                                                          static_cast<const float*>(update), index,
                                                          delta, batch, tokens, count, channels);
      break;
    case TokenDtype::kBFloat16:
      ScatterKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<__nv_bfloat16*>(cache), static_cast<const __nv_bfloat16*>(update), index,
          delta, batch, tokens, count, channels);
      break;
    case TokenDtype::kFloat16:
      ScatterKernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<__half*>(cache),
                                                           static_cast<const __half*>(update),
                                                           index, delta, batch, tokens, count,
                                                           channels);
      break;
  }
  return cudaGetLastError();
}

int LaunchUpdateSkipped(int64_t* skipped, const int64_t* index, int64_t batch, int64_t tokens,
                        int64_t count, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch * tokens == 0) return cudaSuccess;
  IncrementKernel<<<GridFor(batch * tokens, kThreads), kThreads, 0, stream>>>(skipped,
                                                                             batch * tokens);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || batch * count == 0) return err;
  ZeroSelectedKernel<<<GridFor(batch * count, kThreads), kThreads, 0, stream>>>(skipped, index,
                                                                               batch, tokens, count);
  return cudaGetLastError();
}

int LaunchRecordLse(const float* lse, const int64_t* q_index, float* lse_tokens, int64_t batch,
                    int64_t heads, int64_t q_rows, int64_t tokens, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch * q_rows == 0) return cudaSuccess;
  RecordLseKernel<<<GridFor(batch * q_rows, kThreads), kThreads, 0, stream>>>(
      lse, q_index, lse_tokens, batch, heads, q_rows, tokens);
  return cudaGetLastError();
}

int LaunchTokenScores(const float* lse, const float* delta, const int64_t* skipped, double* scores,
                      int64_t batch, int64_t tokens, int64_t video_offset, int64_t video_tokens,
                      double penalty_weight, int64_t max_skip_exponent, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch == 0) return cudaSuccess;
  ScoresKernel<<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
      lse, delta, skipped, scores, tokens, video_offset, video_tokens, penalty_weight,
      max_skip_exponent);
  return cudaGetLastError();
}

}  // namespace sparsetune::cuda
