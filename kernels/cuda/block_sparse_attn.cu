// Block-sparse flash attention forward (FlashAttention-2 style) for sm_90a with mma.sync.
//
// One CTA per (batch·head, query block): block/16 warps, each owning 16 query rows whose Q
// fragments stay in registers. The CTA walks its CSR row's key blocks in chunks of 64 keys; K and V
// chunks are double-buffered in shared memory by cp.async (the next chunk loads while this one is
// computed). S = Q·K^T and O += P·V run on m16n8k16 tensor-core MMAs fed by ldmatrix from an
// XOR-swizzled layout (16-byte chunk c of row r lives at chunk c ^ (r & 7): conflict-free ldmatrix).
// The softmax is online in the log2 domain (exp2f of a pre-scaled score); P goes from the S
// accumulators straight into the A operand of the P·V MMA without shared memory. Tail keys past N
// are zero-filled on load and masked to -inf; tail query rows are computed on zero rows and never
// stored. Grid x runs over query blocks of one (b, h) so neighbouring CTAs share K/V in L2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/block_sparse_attn.h"

namespace sparsetune::cuda {

namespace {

constexpr int kChunk = 64;  // keys per K/V tile

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; `valid == false` writes zeros (src-size 0) and reads nothing.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_size));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                           uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                                uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Element type traits: the MMA instruction and float -> packed pair conversion.
template <typename T>
struct Elem;

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

template <>
struct Elem<__half> {
  static __device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][D] tile.
template <int D>
__device__ __forceinline__ int Swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Async copy of rows [row0, row0 + ROWS) of a [N, D] matrix into a swizzled tile; rows >= n are
// zero-filled.
template <int ROWS, int D, int THREADS, typename T>
__device__ __forceinline__ void LoadTile(T* tile, const T* src, int row0, int n) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kTotal = ROWS * kChunksPerRow;
  static_assert(kTotal % THREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int i = 0; i < kTotal / THREADS; ++i) {
    const int idx = i * THREADS + static_cast<int>(threadIdx.x);
    const int r = idx / kChunksPerRow;
    const int c = idx % kChunksPerRow;
    const int g = row0 + r;
    const bool valid = g < n;
    const T* p = src + static_cast<int64_t>(valid ? g : 0) * D + c * 8;
    CpAsync16(SmemAddr(tile + Swz<D>(r, c)), p, valid);
  }
}

template <typename T, int D, int BQ>
__global__ void __launch_bounds__(BQ * 2)
    BlockSparseAttnKernel(const BlockSparseAttnParams p) {
  constexpr int kThreads = BQ * 2;  // one warp per 16 query rows
  constexpr int kChunksPerBlock = BQ / kChunk;
  constexpr int kKSteps = D / 16;   // MMA k-steps over the head dim (S = Q·K^T)
  constexpr int kDTiles = D / 8;    // n-tiles of the output (O = P·V)

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* s_q = reinterpret_cast<T*>(smem_raw);  // [BQ][D]; reused to stage O
  T* s_k = s_q + BQ * D;                    // [2][kChunk][D]
  T* s_v = s_k + 2 * kChunk * D;            // [2][kChunk][D]

  const int n = p.seq_len;
  const int nb = static_cast<int>(gridDim.x);
  const int qb = static_cast<int>(blockIdx.x);
  const int bh = static_cast<int>(blockIdx.y);
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int64_t head_off = static_cast<int64_t>(bh) * n * D;
  const T* q = static_cast<const T*>(p.q) + head_off;
  const T* k = static_cast<const T*>(p.k) + head_off;
  const T* v = static_cast<const T*>(p.v) + head_off;
  T* o = static_cast<T*>(p.o) + head_off;
  float* lse = p.lse + static_cast<int64_t>(bh) * n;
  const int q0 = qb * BQ;

  const int row = bh * nb + qb;
  const int beg = min(max(__ldg(p.row_ptr + row), 0), p.nnz);
  const int end = min(max(__ldg(p.row_ptr + row + 1), beg), p.nnz);
  const int total = (end - beg) * kChunksPerBlock;
  // First key of chunk c of this row, or -1 when the chunk holds no valid key.
  auto chunk_key0 = [&](int c) -> int {
    const int col = __ldg(p.col_idx + beg + c / kChunksPerBlock);
    const int key0 = col * BQ + (c % kChunksPerBlock) * kChunk;
    return (col >= 0 && col < nb && key0 < n) ? key0 : -1;
  };
  auto next_valid = [&](int c) -> int {
    while (c < total && chunk_key0(c) < 0) ++c;
    return c;
  };

  LoadTile<BQ, D, kThreads>(s_q, q, q0, n);
  CpAsyncCommit();
  int c = next_valid(0);
  if (c < total) {
    const int key0 = chunk_key0(c);
    LoadTile<kChunk, D, kThreads>(s_k, k, key0, n);
    LoadTile<kChunk, D, kThreads>(s_v, v, key0, n);
  }
  CpAsyncCommit();
  CpAsyncWait<1>();
  __syncthreads();

  // Q fragments of this warp's 16 rows (A operand, row-major).
  uint32_t qf[kKSteps][4];
  {
    const int r = warp * 16 + (lane & 15);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk)
      LdMatrixX4(SmemAddr(s_q + Swz<D>(r, kk * 2 + (lane >> 4))), qf[kk][0], qf[kk][1], qf[kk][2],
                 qf[kk][3]);
  }

  float acc[kDTiles][4];
#pragma unroll
  for (int i = 0; i < kDTiles; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of scaled scores, log2 units
  float l_run[2] = {0.f, 0.f};              // this thread's partial row sums
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int tq = lane & 3;   // thread within its quad
  const int gq = lane >> 2;  // quad: rows gq and gq + 8 of the warp's 16

  int stage = 0;
  while (c < total) {
    const int key0 = chunk_key0(c);
    const int cn = next_valid(c + 1);
    if (cn < total) {
      const int nk0 = chunk_key0(cn);
      LoadTile<kChunk, D, kThreads>(s_k + (stage ^ 1) * kChunk * D, k, nk0, n);
      LoadTile<kChunk, D, kThreads>(s_v + (stage ^ 1) * kChunk * D, v, nk0, n);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();

    const T* sk = s_k + stage * kChunk * D;
    const T* sv = s_v + stage * kChunk * D;

    // S = Q·K^T for 16 rows x 64 keys: 8 n-tiles of 8 keys.
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
      for (int nt2 = 0; nt2 < 4; ++nt2) {
        const int key = nt2 * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int chunk = kk * 2 + ((lane >> 3) & 1);
        uint32_t b0, b1, b2, b3;
        LdMatrixX4(SmemAddr(sk + Swz<D>(key, chunk)), b0, b1, b2, b3);
        Elem<T>::Mma(s[2 * nt2], qf[kk], b0, b1);
        Elem<T>::Mma(s[2 * nt2 + 1], qf[kk], b2, b3);
      }
    }
    if (key0 + kChunk > n) {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + nt * 8 + tq * 2 + (e & 1) >= n) s[nt][e] = -INFINITY;
    }

    // Online softmax for rows gq (elements 0, 1) and gq + 8 (elements 2, 3).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[r], mx * scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m_run[r] - base);
      m_run[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        s[nt][2 * r] = exp2f(fmaf(s[nt][2 * r], scale_log2, -base));
        s[nt][2 * r + 1] = exp2f(fmaf(s[nt][2 * r + 1], scale_log2, -base));
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        acc[dt][2 * r] *= alpha;
        acc[dt][2 * r + 1] *= alpha;
      }
    }

    // O += P·V: P from the S accumulators (m16n8 C layout of two n-tiles == m16k16 A layout).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      a[0] = Elem<T>::Pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = Elem<T>::Pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = Elem<T>::Pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = Elem<T>::Pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      const int key = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
      for (int dt2 = 0; dt2 < kDTiles / 2; ++dt2) {
        uint32_t b0, b1, b2, b3;
        LdMatrixX4Trans(SmemAddr(sv + Swz<D>(key, dt2 * 2 + (lane >> 4))), b0, b1, b2, b3);
        Elem<T>::Mma(acc[2 * dt2], a, b0, b1);
        Elem<T>::Mma(acc[2 * dt2 + 1], a, b2, b3);
      }
    }
    __syncthreads();  // this stage's buffers are refilled by the next iteration's prefetch
    c = cn;
    stage ^= 1;
  }
  CpAsyncWait<0>();

  // Normalise, write LSE, stage O through this warp's rows of s_q, then 16-byte stores.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.f ? 1.f / l : 0.f;
    const int qrow = q0 + warp * 16 + gq + r * 8;
    if (tq == 0 && qrow < n)
      lse[qrow] = l > 0.f ? (m_run[r] * 0.6931471805599453f + logf(l)) : -INFINITY;
  }
  T* so = s_q;
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int rr = warp * 16 + gq + r * 8;
      const int col = dt * 8 + tq * 2;
      *reinterpret_cast<uint32_t*>(so + Swz<D>(rr, col >> 3) + (col & 7)) =
          Elem<T>::Pack(acc[dt][2 * r] * inv[r], acc[dt][2 * r + 1] * inv[r]);
    }
  }
  __syncwarp();
  constexpr int kChunksPerRow = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * kChunksPerRow / 32; ++i) {
    const int idx = i * 32 + lane;
    const int rr = warp * 16 + idx / kChunksPerRow;
    const int ch = idx % kChunksPerRow;
    const int qrow = q0 + rr;
    if (qrow < n)
      *reinterpret_cast<uint4*>(o + static_cast<int64_t>(qrow) * D + ch * 8) =
          *reinterpret_cast<const uint4*>(so + Swz<D>(rr, ch));
  }
}

template <typename T, int D, int BQ>
int Launch(const BlockSparseAttnParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(BQ * D + 4 * kChunk * D) * sizeof(T);
  auto kernel = BlockSparseAttnKernel<T, D, BQ>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return static_cast<int>(err);
  const dim3 grid(static_cast<unsigned>(NumBlocks(p.seq_len, BQ)),
                  static_cast<unsigned>(p.batch * p.heads));
  kernel<<<grid, BQ * 2, smem, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int LaunchTyped(const BlockSparseAttnParams& p, cudaStream_t stream) {
  if (p.head_dim == 64 && p.block == 64) return Launch<T, 64, 64>(p, stream);
  if (p.head_dim == 64 && p.block == 128) return Launch<T, 64, 128>(p, stream);
  if (p.head_dim == 128 && p.block == 64) return Launch<T, 128, 64>(p, stream);
  if (p.head_dim == 128 && p.block == 128) return Launch<T, 128, 128>(p, stream);
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace

int LaunchBlockSparseAttention(const BlockSparseAttnParams& params, void* stream) {
  if (params.batch <= 0 || params.heads <= 0 || params.seq_len <= 0)
    return static_cast<int>(cudaErrorInvalidValue);
  const auto s = static_cast<cudaStream_t>(stream);
  return params.dtype == AttnDtype::kBFloat16 ? LaunchTyped<__nv_bfloat16>(params, s)
                                               : LaunchTyped<__half>(params, s);
}

}  // namespace sparsetune::cuda
