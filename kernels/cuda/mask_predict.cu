// RainFusion2.0 mask prediction and the row permutation (mask_predict.h). Four launches:
//   1. PoolKernel     one CTA per (block, batch*head, q|k): gathers the block's tokens through
//                     Layout::order and writes fp32 means (optionally also the layout-order copies
//                     of q and k); marks the video blocks that hold a first-frame token (sink).
//   2. SelectKernel   R query blocks per CTA: scores against every video key block, a bitonic sort
//                     of (score desc, block asc) keys in shared memory (the CPU's stable tie rule),
//                     top keep_n, forced text/sink rows and columns; a row bitmap and its count.
//   3. ScanKernel     one CTA: exclusive scan of the counts into row_ptr.
//   4. CompactKernel  one warp per row: bitmap -> ascending col_idx.
#include "kernels/cuda/mask_predict.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/half_util.cuh"

namespace sparsetune::cuda {

namespace {

using detail::Unpack8;
using detail::WarpSum;

constexpr int kPoolThreads = 128;
constexpr int kSelectThreads = 256;
constexpr int kScanThreads = 1024;
constexpr int kCompactWarps = 8;

struct Geometry {
  int32_t tokens, video_tokens, block_size, video_blocks, blocks, head_dim;
};

__device__ __forceinline__ void BlockRange(const Geometry& g, int b, int& begin, int& len) {
  if (b < g.video_blocks) {
    begin = b * g.block_size;
    len = min(g.block_size, g.video_tokens - begin);
  } else {
    begin = g.video_tokens + (b - g.video_blocks) * g.block_size;
    len = min(g.block_size, g.tokens - begin);
  }
}

// grid (nb, B*H, 2), block kPoolThreads; shared: rows_par * D floats.
template <typename T>
__global__ void PoolKernel(const T* __restrict__ q, const T* __restrict__ k,
                           const int64_t* __restrict__ order, Geometry g, int32_t video_offset,
                           int32_t frame_tokens, float* __restrict__ pooled,
                           uint8_t* __restrict__ sink, T* __restrict__ q_layout,
                           T* __restrict__ k_layout) {
  extern __shared__ float red[];
  const int b = blockIdx.x, bh = blockIdx.y, which = blockIdx.z;
  const int d = g.head_dim, chunks = d / 8, rows_par = kPoolThreads / chunks;
  const int chunk = threadIdx.x % chunks, rp = threadIdx.x / chunks;
  int begin, len;
  BlockRange(g, b, begin, len);
  const int64_t head_off = static_cast<int64_t>(bh) * g.tokens * d;
  const T* src = (which == 0 ? q : k) + head_off;
  T* dst = which == 0 ? q_layout : k_layout;  // layout-order copy, or null
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  bool first_frame = false;
  if (rp < rows_par) {
#pragma unroll 4
    for (int t = rp; t < len; t += rows_par) {
      const int64_t m = order[begin + t];
      const uint4 raw = *reinterpret_cast<const uint4*>(src + m * d + chunk * 8);
      if (dst != nullptr)
        *reinterpret_cast<uint4*>(dst + head_off + static_cast<int64_t>(begin + t) * d + chunk * 8) = raw;
      float f[8];
      Unpack8<T>(raw, f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += f[i];
      first_frame |= (m - video_offset) < frame_tokens;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) red[rp * d + chunk * 8 + i] = acc[i];
  }
  const int any_first = __syncthreads_or(first_frame ? 1 : 0);
  if (which == 0 && bh == 0 && threadIdx.x == 0)
    sink[b] = (b < g.video_blocks && any_first) ? 1 : 0;
  const float inv = 1.0f / static_cast<float>(len);
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float s = 0.0f;
    for (int r = 0; r < rows_par; ++r) s += red[r * d + c];
    pooled[((static_cast<int64_t>(which) * gridDim.y + bh) * g.blocks + b) * d + c] = s * inv;
  }
}

// Order-preserving key: ascending uint64 order == descending score, then ascending block.
__device__ __forceinline__ uint64_t SortKey(float s, int j) {
  const uint32_t u = __float_as_uint(s);
  const uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(~asc) << 32) | static_cast<uint32_t>(j);
}

struct SelectLayout {
  int rows_per_cta;  // R
  int sort_len;      // P: power of two >= video blocks
  int words;         // W: 32-bit words per row bitmap
};

// grid (ceil(nb/R), B*H), block kSelectThreads. Shared: R*D floats, R*P keys, R*W words.
__global__ void SelectKernel(const float* __restrict__ pooled, const uint8_t* __restrict__ sink,
                             Geometry g, SelectLayout sl, int32_t keep_n, bool use_sink,
                             float score_div, uint32_t* __restrict__ bitmap,
                             int32_t* __restrict__ counts) {
  extern __shared__ uint64_t smem64[];
  const int R = sl.rows_per_cta, P = sl.sort_len, W = sl.words, d = g.head_dim;
  const int nb = g.blocks, vb = g.video_blocks;
  uint64_t* keys = smem64;                                        // [R][P]
  float* qs = reinterpret_cast<float*>(keys + static_cast<int64_t>(R) * P);  // [R][D]
  uint32_t* bm = reinterpret_cast<uint32_t*>(qs + R * d);        // [R][W]
  const int bh = blockIdx.y, row0 = blockIdx.x * R;
  const int64_t bh_rows = static_cast<int64_t>(bh) * nb;
  const float* qp = pooled + bh_rows * d;
  const float* kp = pooled + (static_cast<int64_t>(gridDim.y) * nb + bh_rows) * d;

  for (int i = threadIdx.x; i < R * d; i += blockDim.x) {
    const int r = i / d;
    qs[i] = row0 + r < nb ? qp[static_cast<int64_t>(row0 + r) * d + i % d] : 0.0f;
  }
  for (int i = threadIdx.x; i < R * W; i += blockDim.x) bm[i] = 0u;
  for (int i = threadIdx.x; i < R * P; i += blockDim.x)
    if (i % P >= vb) keys[i] = ~0ull;
  __syncthreads();

  // Scores: one warp per key block, lanes over channels (coalesced reads of the pooled key).
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int j = warp; j < vb; j += warps) {
    const float* kr = kp + static_cast<int64_t>(j) * d;
    float dot[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) dot[r] = 0.0f;
    for (int c = lane * 4; c < d; c += 128) {
      const float4 kv = *reinterpret_cast<const float4*>(kr + c);
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        if (r < R) {
          const float* qr = qs + r * d + c;
          dot[r] += qr[0] * kv.x + qr[1] * kv.y + qr[2] * kv.z + qr[3] * kv.w;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      if (r < R) {
        const float s = WarpSum(dot[r]);
        if (lane == 0) keys[r * P + j] = SortKey(s / score_div, j);
      }
    }
  }
  __syncthreads();

  // Bitonic sort of each row's P keys (ascending), all R rows in the same network.
  const int total = R * P;
  for (int kk = 2; kk <= P; kk <<= 1) {
    for (int jj = kk >> 1; jj > 0; jj >>= 1) {
      for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int ixj = i ^ jj;
        if (ixj > i) {
          const bool up = ((i & (P - 1)) & kk) == 0;
          const uint64_t a = keys[i], b = keys[ixj];
          if ((a > b) == up) {
            keys[i] = b;
            keys[ixj] = a;
          }
        }
      }
      __syncthreads();
    }
  }

  // Top keep_n video columns, then the forced ones.
  for (int i = threadIdx.x; i < R * keep_n; i += blockDim.x) {
    const int r = i / keep_n, t = i % keep_n;
    const int col = static_cast<int>(keys[r * P + t] & 0xffffffffu);
    atomicOr(&bm[r * W + col / 32], 1u << (col % 32));
  }
  __syncthreads();
  for (int i = threadIdx.x; i < R * nb; i += blockDim.x) {
    const int r = i / nb, col = i % nb, row = row0 + r;
    if (row >= nb) continue;
    const bool full_row = row >= vb || (use_sink && sink[row]);
    const bool forced_col = col >= vb || (use_sink && sink[col]);
    if (full_row || forced_col) atomicOr(&bm[r * W + col / 32], 1u << (col % 32));
  }
  __syncthreads();
  for (int r = warp; r < R; r += warps) {
    const int row = row0 + r;
    if (row >= nb) continue;
    int c = 0;
    for (int w = lane; w < W; w += 32) {
      const uint32_t bits = bm[r * W + w];
      c += __popc(bits);
      bitmap[(bh_rows + row) * W + w] = bits;
    }
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    if (lane == 0) counts[bh_rows + row] = c;
  }
}

// One CTA: row_ptr[i] = sum(counts[0..i)), row_ptr[n] = total.
__global__ void ScanKernel(const int32_t* __restrict__ counts, int64_t n,
                           int32_t* __restrict__ row_ptr) {
  __shared__ int32_t part[kScanThreads];
  const int64_t per = (n + kScanThreads - 1) / kScanThreads;
  const int64_t lo = min(n, static_cast<int64_t>(threadIdx.x) * per), hi = min(n, lo + per);
  int32_t s = 0;
  for (int64_t i = lo; i < hi; ++i) s += counts[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = 1; o < kScanThreads; o <<= 1) {
    const int32_t v = threadIdx.x >= o ? part[threadIdx.x - o] : 0;
    __syncthreads();
    part[threadIdx.x] += v;
    __syncthreads();
  }
  int32_t run = part[threadIdx.x] - s;  // exclusive prefix of this thread's chunk
  for (int64_t i = lo; i < hi; ++i) {
    row_ptr[i] = run;
    run += counts[i];
  }
  if (threadIdx.x == kScanThreads - 1) row_ptr[n] = part[kScanThreads - 1];
}

// One warp per row: the row's set bits in ascending order.
__global__ void CompactKernel(const uint32_t* __restrict__ bitmap, const int32_t* __restrict__ row_ptr,
                              int64_t rows, int words, int32_t* __restrict__ col_idx) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kCompactWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  int32_t base = row_ptr[row];
  for (int w0 = 0; w0 < words; w0 += 32) {
    const int w = w0 + lane;
    uint32_t bits = w < words ? bitmap[row * words + w] : 0u;
    const int c = __popc(bits);
    int inc = c;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, inc, o);
      if (lane >= o) inc += v;
    }
    int32_t pos = base + inc - c;
    while (bits) {
      const int b = __ffs(bits) - 1;
      col_idx[pos++] = w * 32 + b;
      bits &= bits - 1;
    }
    base += __shfl_sync(0xffffffffu, inc, 31);
  }
}

template <typename Chunk>
__global__ void PermuteKernel(const Chunk* __restrict__ in, Chunk* __restrict__ out,
                              const int64_t* __restrict__ index, int64_t batch_heads,
                              int64_t rows_in, int64_t rows_out, int64_t chunks) {
  const int64_t total = batch_heads * rows_out * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % chunks;
    const int64_t r = (i / chunks) % rows_out;
    const int64_t bh = i / (chunks * rows_out);
    out[i] = in[(bh * rows_in + index[r]) * chunks + c];
  }
}

constexpr int kArmQueries = 8;   // sampled queries per CTA
constexpr int kArmThreads = 256;

// Running softmax statistics of one query over a subset of keys: max, total mass and the mass
// inside each candidate mask (all relative to the max).
struct ArmStats {
  float m, l, a[3];
};

__device__ __forceinline__ void ArmMerge(ArmStats& x, const ArmStats& y) {
  const float m = fmaxf(x.m, y.m);
  if (m == -INFINITY) return;
  const float sx = expf(x.m - m), sy = expf(y.m - m);
  x.l = x.l * sx + y.l * sy;
  for (int c = 0; c < 3; ++c) x.a[c] = x.a[c] * sx + y.a[c] * sy;
  x.m = m;
}

// grid (ceil(q_samples / kArmQueries), B*H); one warp per sampled key at a time, lanes over
// channels; each warp keeps running statistics per query, merged across warps at the end.
template <typename T>
__global__ void ArmKernel(ArmProbeParams p) {
  __shared__ float qs[kArmQueries][256];
  __shared__ ArmStats part[kArmThreads / 32][kArmQueries];
  const int bh = blockIdx.y, h = bh % p.heads, i0 = blockIdx.x * kArmQueries;
  const int d = p.head_dim;
  const int64_t head_off = static_cast<int64_t>(bh) * p.tokens * d;
  const T* qb = static_cast<const T*>(p.q) + head_off;
  const T* kb = static_cast<const T*>(p.k) + head_off;
  for (int t = threadIdx.x; t < kArmQueries * d; t += blockDim.x) {
    const int r = t / d, c = t % d;
    qs[r][c] = i0 + r < p.q_samples ? detail::ToFloat<T>(qb[p.q_rows[i0 + r] * d + c]) : 0.0f;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  ArmStats st[kArmQueries];
  int qblk[kArmQueries];
#pragma unroll
  for (int r = 0; r < kArmQueries; ++r) {
    st[r].m = -INFINITY;
    st[r].l = st[r].a[0] = st[r].a[1] = st[r].a[2] = 0.0f;
    qblk[r] = i0 + r < p.q_samples ? p.q_block[i0 + r] : 0;
  }
  const int64_t nb = p.blocks;
  for (int j = warp; j < p.key_samples; j += blockDim.x / 32) {
    const T* kr = kb + p.key_rows[j] * d;
    float kv[8];
    int nk = 0;
    for (int c = lane; c < d; c += 32) kv[nk++] = detail::ToFloat<T>(kr[c]);
    const int kblk = p.key_block[j];
#pragma unroll
    for (int r = 0; r < kArmQueries; ++r) {
      float dot = 0.0f;
      int t = 0;
      for (int c = lane; c < d; c += 32) dot += qs[r][c] * kv[t++];
      const float s = WarpSum(dot) * p.scale;
      const float m = fmaxf(st[r].m, s);
      const float sc = expf(st[r].m - m), e = expf(s - m);
      st[r].l = st[r].l * sc + e;
      for (int c = 0; c < 3; ++c) {
        const bool allowed = p.masks[(c * nb + qblk[r]) * nb + kblk] != 0;
        st[r].a[c] = st[r].a[c] * sc + (allowed ? e : 0.0f);
      }
      st[r].m = m;
    }
  }
  if (lane == 0)
    for (int r = 0; r < kArmQueries; ++r) part[warp][r] = st[r];
  __syncthreads();
  if (threadIdx.x < kArmQueries && i0 + static_cast<int>(threadIdx.x) < p.q_samples) {
    const int r = threadIdx.x;
    ArmStats tot = part[0][r];
    for (int w = 1; w < kArmThreads / 32; ++w) ArmMerge(tot, part[w][r]);
    for (int c = 0; c < 3; ++c)
      atomicAdd(&p.recall[h * 3 + c], static_cast<double>(tot.a[c] / tot.l));
  }
}

int64_t NextPow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

SelectLayout SelectLayoutFor(int64_t video_blocks, int64_t blocks) {
  SelectLayout sl;
  sl.sort_len = static_cast<int>(NextPow2(std::max<int64_t>(1, video_blocks)));
  sl.rows_per_cta = static_cast<int>(std::clamp<int64_t>(4096 / sl.sort_len, 1, 8));
  sl.words = static_cast<int>((blocks + 31) / 32);
  return sl;
}

int64_t SelectSmem(const SelectLayout& sl, int head_dim) {
  return static_cast<int64_t>(sl.rows_per_cta) *
         (sl.sort_len * 8 + head_dim * 4 + sl.words * 4);
}

}  // namespace

MaskPredictSizes MaskPredictSizesFor(int32_t batch, int32_t heads, int32_t video_tokens,
                                     int32_t text_tokens, int32_t head_dim, int32_t block_size) {
  MaskPredictSizes s;
  if (block_size < 1) return s;
  s.video_blocks = (video_tokens + block_size - 1) / block_size;
  s.blocks = s.video_blocks + (text_tokens + block_size - 1) / block_size;
  s.rows = static_cast<int64_t>(batch) * heads * s.blocks;
  s.pooled_floats = 2 * s.rows * head_dim;
  s.col_capacity = s.rows * s.blocks;
  const int64_t words = (s.blocks + 31) / 32;
  // bitmap [rows][words] u32, counts [rows] i32, sink [nb] u8 (each 16-byte aligned).
  auto align = [](int64_t x) { return (x + 15) / 16 * 16; };
  s.workspace_bytes = align(s.rows * words * 4) + align(s.rows * 4) + align(s.blocks);
  return s;
}

int LaunchMaskPredict(const MaskPredictParams& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.head_dim < 8 || p.head_dim > 256 || p.head_dim % 8 != 0 || p.block_size < 1)
    return cudaErrorInvalidValue;
  const MaskPredictSizes sz = MaskPredictSizesFor(p.batch, p.heads, p.video_tokens,
                                                  p.tokens - p.video_tokens, p.head_dim,
                                                  p.block_size);
  if (sz.blocks > kMaxMaskBlocks || sz.rows == 0) return cudaErrorInvalidValue;
  Geometry g{p.tokens, p.video_tokens, p.block_size, static_cast<int32_t>(sz.video_blocks),
             static_cast<int32_t>(sz.blocks), p.head_dim};
  const SelectLayout sl = SelectLayoutFor(sz.video_blocks, sz.blocks);
  auto align = [](int64_t x) { return (x + 15) / 16 * 16; };
  char* ws = static_cast<char*>(p.workspace);
  uint32_t* bitmap = reinterpret_cast<uint32_t*>(ws);
  int32_t* counts = reinterpret_cast<int32_t*>(ws + align(sz.rows * sl.words * 4));
  uint8_t* sink = reinterpret_cast<uint8_t*>(ws + align(sz.rows * sl.words * 4) + align(sz.rows * 4));

  const int bh = p.batch * p.heads;
  const int rows_par = kPoolThreads / (p.head_dim / 8);
  const dim3 pool_grid(static_cast<unsigned>(sz.blocks), static_cast<unsigned>(bh), 2);
  const size_t pool_smem = static_cast<size_t>(rows_par) * p.head_dim * sizeof(float);
  if (p.dtype == HalfType::kBFloat16)
    PoolKernel<__nv_bfloat16><<<pool_grid, kPoolThreads, pool_smem, stream>>>(
        static_cast<const __nv_bfloat16*>(p.q), static_cast<const __nv_bfloat16*>(p.k), p.order, g,
        p.video_offset, p.frame_tokens, p.pooled, sink, static_cast<__nv_bfloat16*>(p.q_layout),
        static_cast<__nv_bfloat16*>(p.k_layout));
  else
    PoolKernel<__half><<<pool_grid, kPoolThreads, pool_smem, stream>>>(
        static_cast<const __half*>(p.q), static_cast<const __half*>(p.k), p.order, g,
        p.video_offset, p.frame_tokens, p.pooled, sink, static_cast<__half*>(p.q_layout),
        static_cast<__half*>(p.k_layout));
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  const int64_t smem = SelectSmem(sl, p.head_dim);
  if (smem > 48 * 1024) {
    err = cudaFuncSetAttribute(SelectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 sel_grid(static_cast<unsigned>((sz.blocks + sl.rows_per_cta - 1) / sl.rows_per_cta),
                      static_cast<unsigned>(bh));
  const int32_t keep_n = std::clamp<int32_t>(p.keep_n, 0, static_cast<int32_t>(sz.video_blocks));
  SelectKernel<<<sel_grid, kSelectThreads, static_cast<size_t>(smem), stream>>>(
      p.pooled, sink, g, sl, keep_n, p.first_frame_sink,
      static_cast<float>(std::sqrt(static_cast<double>(p.head_dim))), bitmap, counts);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  ScanKernel<<<1, kScanThreads, 0, stream>>>(counts, sz.rows, p.row_ptr);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  const unsigned compact_blocks = static_cast<unsigned>((sz.rows + kCompactWarps - 1) / kCompactWarps);
  CompactKernel<<<compact_blocks, kCompactWarps * 32, 0, stream>>>(bitmap, p.row_ptr, sz.rows,
                                                                   sl.words, p.col_idx);
  return cudaGetLastError();
}

int LaunchPermuteRows(const void* in, void* out, const int64_t* index, int64_t batch_heads,
                      int64_t rows_in, int64_t rows_out, int64_t head_dim, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t bytes = head_dim * 2;  // half-precision rows
  const int64_t total16 = batch_heads * rows_out * (bytes / 16);
  if (batch_heads * rows_out == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  if (bytes % 16 == 0) {
    const int64_t blocks = std::min<int64_t>((total16 + kThreads - 1) / kThreads, 1 << 20);
    PermuteKernel<uint4><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const uint4*>(in), static_cast<uint4*>(out), index, batch_heads, rows_in,
        rows_out, bytes / 16);
  } else {
    const int64_t total = batch_heads * rows_out * (bytes / 2);
    const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
    PermuteKernel<uint16_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), index, batch_heads,
        rows_in, rows_out, bytes / 2);
  }
  return cudaGetLastError();
}

int LaunchArmProbe(const ArmProbeParams& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.head_dim < 4 || p.head_dim > 256 || p.head_dim % 4 != 0) return cudaErrorInvalidValue;
  if (p.q_samples == 0 || p.key_samples == 0 || p.batch * p.heads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((p.q_samples + kArmQueries - 1) / kArmQueries),
                  static_cast<unsigned>(p.batch * p.heads));
  if (p.dtype == HalfType::kBFloat16)
    ArmKernel<__nv_bfloat16><<<grid, kArmThreads, 0, stream>>>(p);
  else
    ArmKernel<__half><<<grid, kArmThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sparsetune::cuda
