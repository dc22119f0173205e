// TimeRipple at tile granularity (ripple.h). Two launches:
//   1. FlagsKernel  one CTA per (tile, frame, batch*head): the per-key cosine test of each RoPE
//                   group against the key one frame earlier, AND-ed over the tile; adds the
//                   skipped multiply-adds of every reused (tile, group) to the counter.
//   2. AttnKernel   32 queries per CTA, 256 threads (8 per query, 4 keys each): key tiles visited
//                   spatial run by spatial run, frames in order inside a run, then the text keys;
//                   per (query, key) the three group partials live in registers and a reused
//                   group keeps the previous frame's value; online softmax in float32. With a
//                   block mask, a pair outside the query's block row drops out of the softmax
//                   after its partials are formed (reuse still reads them).
#include "kernels/cuda/ripple.h"

#include <cmath>

#include "kernels/cuda/half_util.cuh"

namespace sparsetune::cuda {

namespace {

using detail::FromFloat;
using detail::ToFloat;
using detail::WarpSum;

constexpr int kQueries = 32;       // queries per CTA
constexpr int kThreads = 256;      // 8 threads per query
constexpr int kKeysPerThread = kRippleTile / 8;
constexpr int kMaxAcc = 128 / 8;   // output channels per thread at head_dim 128

struct Dims {
  int32_t q_rows, tokens, head_dim, frames, frame_tokens, video_offset, chunks;
  int32_t g1, g2;     // first channel of the h and w groups
  int32_t width[3];   // channels per group
  int32_t heads, blocks;  // H, and nb of the optional block mask
};

// The optional block mask of RippleParams.
struct MaskRefs {
  const uint8_t* mask;       // [B*H, nb, nb] or null
  const int32_t* q_block;    // [B, Nq]
  const int32_t* key_block;  // [N]
};

__device__ __forceinline__ int GroupOf(const Dims& d, int c) { return c < d.g1 ? 0 : (c < d.g2 ? 1 : 2); }

template <typename T>
__global__ void FlagsKernel(const T* __restrict__ k, Dims d, float threshold,
                            uint8_t* __restrict__ reuse, unsigned long long* __restrict__ macs) {
  __shared__ int ok[3];
  const int c = blockIdx.x, f = blockIdx.y, bh = blockIdx.z;
  const int len = min(kRippleTile, d.frame_tokens - c * kRippleTile);
  if (threadIdx.x < 3) ok[threadIdx.x] = (f > 0 && d.width[threadIdx.x] > 0) ? 1 : 0;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* kb = k + static_cast<int64_t>(bh) * d.tokens * d.head_dim;
  if (f > 0) {
    for (int t = warp; t < len; t += blockDim.x / 32) {
      const int64_t key = d.video_offset + static_cast<int64_t>(f) * d.frame_tokens +
                          c * kRippleTile + t;
      const T* cur = kb + key * d.head_dim;
      const T* ref = cur - static_cast<int64_t>(d.frame_tokens) * d.head_dim;
      float dot[3] = {0, 0, 0}, nc[3] = {0, 0, 0}, nr[3] = {0, 0, 0};
      for (int ch = lane; ch < d.head_dim; ch += 32) {
        const float a = ToFloat<T>(cur[ch]), b = ToFloat<T>(ref[ch]);
        const int g = GroupOf(d, ch);
        dot[g] += a * b;
        nc[g] += a * a;
        nr[g] += b * b;
      }
#pragma unroll
      for (int g = 0; g < 3; ++g) {
        const float sd = WarpSum(dot[g]), sc = WarpSum(nc[g]), sr = WarpSum(nr[g]);
        if (lane == 0 && d.width[g] > 0) {
          const float cosine = sd / fmaxf(sqrtf(sc) * sqrtf(sr), 1e-30f);
          if (!(cosine >= threshold)) atomicAnd(&ok[g], 0);
        }
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int g = 0; g < 3; ++g) {
      const int flag = ok[g];
      reuse[((static_cast<int64_t>(bh) * 3 + g) * d.frames + f) * d.chunks + c] =
          static_cast<uint8_t>(flag);
      if (flag)
        atomicAdd(macs, static_cast<unsigned long long>(len) * d.width[g] * d.q_rows);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
AttnKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
           T* __restrict__ o, float* __restrict__ lse, Dims d, float scale,
           const uint8_t* __restrict__ reuse, MaskRefs mr) {
  extern __shared__ float sm[];
  __shared__ int32_t kblk[kRippleTile];  // layout block of each key of the tile (masked calls)
  const int D = d.head_dim, ld = D + 1;
  float* qs = sm;                        // [32][D+1]
  float* ks = qs + kQueries * ld;        // [T][D+1]
  float* vs = ks + kRippleTile * ld;     // [T][D]
  const int bh = blockIdx.y, q0 = blockIdx.x * kQueries;
  const int qi = threadIdx.x / 8, sub = threadIdx.x % 8, lane = threadIdx.x % 32;
  // This thread's query's row of the block mask (null: every key allowed).
  const uint8_t* mask_row = nullptr;
  if (mr.mask != nullptr) {
    const int b = bh / d.heads;
    const int row = min(q0 + qi, d.q_rows - 1);
    const int qb = mr.q_block[static_cast<int64_t>(b) * d.q_rows + row];
    mask_row = mr.mask + (static_cast<int64_t>(bh) * d.blocks + qb) * d.blocks;
  }
  const int64_t head_off = static_cast<int64_t>(bh) * d.tokens * D;
  const T* kb = k + head_off;
  const T* vb = v + head_off;
  const T* qb = q + static_cast<int64_t>(bh) * d.q_rows * D;
  for (int i = threadIdx.x; i < kQueries * D; i += kThreads) {
    const int r = i / D, c = i % D;
    qs[r * ld + c] = q0 + r < d.q_rows ? ToFloat<T>(qb[static_cast<int64_t>(q0 + r) * D + c]) : 0.0f;
  }
  float part[3][kKeysPerThread];
#pragma unroll
  for (int g = 0; g < 3; ++g)
#pragma unroll
    for (int m = 0; m < kKeysPerThread; ++m) part[g][m] = 0.0f;
  float acc[kMaxAcc];
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) acc[i] = 0.0f;
  float row_max = -INFINITY, row_sum = 0.0f;
  const int video_tokens = d.frames * d.frame_tokens;
  const int text_tokens = d.tokens - video_tokens;
  const int text_begin = d.video_offset > 0 ? 0 : video_tokens;
  const int text_tiles = (text_tokens + kRippleTile - 1) / kRippleTile;
  const int video_tiles = d.chunks * d.frames;

  for (int tile = 0; tile < video_tiles + text_tiles; ++tile) {
    int first, len;
    bool reused[3] = {false, false, false};
    if (tile < video_tiles) {
      const int c = tile / d.frames, f = tile % d.frames;
      first = d.video_offset + f * d.frame_tokens + c * kRippleTile;
      len = min(kRippleTile, d.frame_tokens - c * kRippleTile);
#pragma unroll
      for (int g = 0; g < 3; ++g)
        reused[g] = reuse[((static_cast<int64_t>(bh) * 3 + g) * d.frames + f) * d.chunks + c] != 0;
    } else {
      first = text_begin + (tile - video_tiles) * kRippleTile;
      len = min(kRippleTile, text_begin + text_tokens - first);
    }
    __syncthreads();  // previous tile's ks/vs fully used (and qs written on the first pass)
    for (int i = threadIdx.x; i < kRippleTile * D; i += kThreads) {
      const int r = i / D, c = i % D;
      const bool valid = r < len;
      const int64_t src = static_cast<int64_t>(first + r) * D + c;
      if (!reused[GroupOf(d, c)]) ks[r * ld + c] = valid ? ToFloat<T>(kb[src]) : 0.0f;
      vs[r * D + c] = valid ? ToFloat<T>(vb[src]) : 0.0f;
    }
    if (mask_row != nullptr && threadIdx.x < kRippleTile)
      kblk[threadIdx.x] = static_cast<int>(threadIdx.x) < len ? mr.key_block[first + threadIdx.x] : 0;
    __syncthreads();
    int c0 = 0;
#pragma unroll
    for (int g = 0; g < 3; ++g) {
      const int c1 = c0 + d.width[g];
      if (!reused[g]) {
        float acc_g[kKeysPerThread];
#pragma unroll
        for (int m = 0; m < kKeysPerThread; ++m) acc_g[m] = 0.0f;
        for (int c = c0; c < c1; ++c) {
          const float qv = qs[qi * ld + c];
#pragma unroll
          for (int m = 0; m < kKeysPerThread; ++m) acc_g[m] += qv * ks[(sub + 8 * m) * ld + c];
        }
#pragma unroll
        for (int m = 0; m < kKeysPerThread; ++m) part[g][m] = acc_g[m];
      }
      c0 = c1;
    }
    float p[kKeysPerThread];
    float tile_max = -INFINITY;
#pragma unroll
    for (int m = 0; m < kKeysPerThread; ++m) {
      // Same order as the CPU: ((0 + s_t) + s_h) + s_w, then the scale.
      const float s = ((0.0f + part[0][m]) + part[1][m] + part[2][m]) * scale;
      const int key = sub + 8 * m;
      const bool allowed = key < len && (mask_row == nullptr || mask_row[kblk[key]] != 0);
      p[m] = allowed ? s : -INFINITY;
      tile_max = fmaxf(tile_max, p[m]);
    }
    for (int off = 4; off > 0; off >>= 1)
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
    const float new_max = fmaxf(row_max, tile_max);
    // Nothing allowed yet (masked rows): keep the empty state instead of exp(-inf - -inf) = NaN.
    const bool empty = new_max == -INFINITY;
    const float alpha = empty ? 1.0f : expf(row_max - new_max);
    float tile_sum = 0.0f;
#pragma unroll
    for (int m = 0; m < kKeysPerThread; ++m) {
      p[m] = empty ? 0.0f : expf(p[m] - new_max);
      tile_sum += p[m];
    }
    for (int off = 4; off > 0; off >>= 1) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, off);
    row_sum = row_sum * alpha + tile_sum;
    row_max = new_max;
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) acc[i] *= alpha;
    const int row_lane0 = lane & ~7;
#pragma unroll
    for (int m = 0; m < kKeysPerThread; ++m) {
#pragma unroll
      for (int src = 0; src < 8; ++src) {
        const float pk = __shfl_sync(0xffffffffu, p[m], row_lane0 + src);
        const float* vr = vs + (src + 8 * m) * D;
#pragma unroll
        for (int i = 0; i < kMaxAcc; ++i)
          if (sub + 8 * i < D) acc[i] += pk * vr[sub + 8 * i];
      }
    }
  }
  const int row = q0 + qi;
  if (row < d.q_rows) {
    const float inv = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
    T* orow = o + (static_cast<int64_t>(bh) * d.q_rows + row) * D;
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i)
      if (sub + 8 * i < D) orow[sub + 8 * i] = FromFloat<T>(acc[i] * inv);
    if (sub == 0)
      lse[static_cast<int64_t>(bh) * d.q_rows + row] =
          row_sum > 0.0f ? row_max + logf(row_sum) : -INFINITY;
  }
}

int32_t Chunks(int32_t frame_tokens) { return (frame_tokens + kRippleTile - 1) / kRippleTile; }

}  // namespace

int64_t RippleReuseBytes(int32_t batch, int32_t heads, int32_t frames, int32_t frame_tokens) {
  return static_cast<int64_t>(batch) * heads * 3 * frames * Chunks(frame_tokens);
}

int LaunchRippleAttention(const RippleParams& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.head_dim < 8 || p.head_dim > 128 || p.head_dim % 8 != 0 ||
      p.split[0] < 0 || p.split[1] < 0 || p.split[2] < 0 ||
      p.split[0] + p.split[1] + p.split[2] != p.head_dim || p.frames < 1 || p.frame_tokens < 1)
    return cudaErrorInvalidValue;
  if (p.mask != nullptr && (p.q_block == nullptr || p.key_block == nullptr || p.blocks < 1))
    return cudaErrorInvalidValue;
  Dims d{p.q_rows, p.tokens, p.head_dim, p.frames, p.frame_tokens, p.video_offset,
         Chunks(p.frame_tokens), p.split[0], p.split[0] + p.split[1],
         {p.split[0], p.split[1], p.split[2]}, p.heads, p.blocks};
  const MaskRefs mr{p.mask, p.q_block, p.key_block};
  const int bh = p.batch * p.heads;
  if (bh == 0 || p.q_rows == 0) return cudaSuccess;
  const dim3 fgrid(static_cast<unsigned>(d.chunks), static_cast<unsigned>(p.frames),
                   static_cast<unsigned>(bh));
  const dim3 agrid(static_cast<unsigned>((p.q_rows + kQueries - 1) / kQueries),
                   static_cast<unsigned>(bh));
  const int ld = p.head_dim + 1;
  const size_t smem = sizeof(float) * (static_cast<size_t>(kQueries + kRippleTile) * ld +
                                       static_cast<size_t>(kRippleTile) * p.head_dim);
  cudaError_t err;
  if (p.dtype == HalfType::kBFloat16) {
    FlagsKernel<__nv_bfloat16><<<fgrid, 256, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(p.k), d, p.threshold, p.reuse, p.macs_skipped);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if ((err = cudaFuncSetAttribute(AttnKernel<__nv_bfloat16>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem))) != cudaSuccess)
      return err;
    AttnKernel<__nv_bfloat16><<<agrid, kThreads, smem, stream>>>(
        static_cast<const __nv_bfloat16*>(p.q), static_cast<const __nv_bfloat16*>(p.k),
        static_cast<const __nv_bfloat16*>(p.v), static_cast<__nv_bfloat16*>(p.o), p.lse, d,
        p.scale, p.reuse, mr);
  } else {
    FlagsKernel<__half><<<fgrid, 256, 0, stream>>>(static_cast<const __half*>(p.k), d,
                                                   p.threshold, p.reuse, p.macs_skipped);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if ((err = cudaFuncSetAttribute(AttnKernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem))) != cudaSuccess)
      return err;
    AttnKernel<__half><<<agrid, kThreads, smem, stream>>>(
        static_cast<const __half*>(p.q), static_cast<const __half*>(p.k),
        static_cast<const __half*>(p.v), static_cast<__half*>(p.o), p.lse, d, p.scale, p.reuse,
        mr);
  }
  return cudaGetLastError();
}

}  // namespace sparsetune::cuda
