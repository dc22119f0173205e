// Block-sparse flash attention forward for sm_90a. Two kernel families share one CSR walk:
//
//  * BlockSparseAttnWgmmaKernel (the default; v4, and v6 = v4 with lean address arithmetic): one
//    warpgroup per 64 query rows; S = Q·K^T and O += P·V on wgmma (Q, K, V read by the tensor
//    cores from 128-byte-swizzled shared memory, P from registers). Two CTAs share an SM, so one
//    CTA's softmax overlaps the other's MMAs.
//  * BlockSparseAttnKernel (v1-v3, FlashAttention-2 style, mma.sync m16n8k16 fed by ldmatrix):
//    kept as the measured baseline and selectable with SPARSETUNE_ATTN_TILE=1 or 2.
//
// Common to both: each CTA walks its CSR row's key blocks in chunks of 64 keys; K and V chunks are
// double-buffered in shared memory by cp.async (the next chunk loads while this one is computed).
// The softmax is online in the log2 domain (exp2f of a pre-scaled score). Tail keys past N are
// zero-filled on load and masked to -inf; tail query rows are computed on zero rows and never
// stored. Grid x runs over the query tiles of one (b, h), so neighbouring CTAs share K/V in L2.
// With a row index (block_sparse_attn.h), blocks are cut over layout positions and every load and
// store goes through it: tensors stay in the caller's token order, no permuted copies.
// NOTES.md beside this file has the measurements of every version.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "kernels/cuda/block_sparse_attn.h"
#include "kernels/cuda/block_sparse_attn_v5.h"

namespace sparsetune::cuda {

namespace {

constexpr int kThreads = 128;  // four warps per CTA

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

// Source row of layout position `pos` (< n): row_index[pos], or pos itself without an index.
__device__ __forceinline__ int SourceRow(const int32_t* row_index, int pos) {
  return row_index == nullptr ? pos : __ldg(row_index + pos);
}

// Async copy of layout positions [row0, row0 + ROWS) of a [N, D] matrix into a swizzled tile
// (position g reads row SourceRow(row_index, g)); positions >= n are zero-filled.
template <int ROWS, int D, int THREADS, typename T>
__device__ __forceinline__ void LoadTile(T* tile, const T* src, int row0, int n,
                                         const int32_t* row_index) {
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
    const T* p = src + static_cast<int64_t>(valid ? SourceRow(row_index, g) : 0) * D + c * 8;
    CpAsync16(SmemAddr(tile + Swz<D>(r, c)), p, valid);
  }
}

// Tile configuration: MG row groups of 16 query rows per warp (4 warps, so 64·MG query rows per
// CTA) and KC keys per K/V chunk. MG = 1 keeps the warp's Q fragments in registers; MG = 2 reads
// them from shared memory per chunk but uses every K/V fragment it loads twice, which halves the
// shared-memory traffic of K and V per FLOP (v3).
template <typename T, int D, int BLK, int MG, int KC>
__global__ void __launch_bounds__(kThreads, 2)
    BlockSparseAttnKernel(const BlockSparseAttnParams p) {
  constexpr int BQ = 64 * MG;             // query rows per CTA
  constexpr int kChunksPerBlock = BLK / KC;
  constexpr int kKSteps = D / 16;         // MMA k-steps over the head dim (S = Q·K^T)
  constexpr int kDTiles = D / 8;          // n-tiles of the output (O = P·V)
  constexpr int kNTiles = KC / 8;         // n-tiles of S per chunk
  static_assert(BLK % BQ == 0 && BLK % KC == 0, "a CTA's rows and a chunk's keys lie in one block");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* s_q = reinterpret_cast<T*>(smem_raw);  // [BQ][D]; reused to stage O
  T* s_k = s_q + BQ * D;                    // [2][KC][D]
  T* s_v = s_k + 2 * KC * D;                // [2][KC][D]

  const int n = p.seq_len;
  const int nb = (n + BLK - 1) / BLK;
  const int q0 = static_cast<int>(blockIdx.x) * BQ;  // this CTA's first query row
  const int qb = q0 / BLK;                           // its query block (CSR row)
  const int bh = static_cast<int>(blockIdx.y);
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int64_t head_off = static_cast<int64_t>(bh) * n * D;
  const T* q = static_cast<const T*>(p.q) + head_off;
  const T* k = static_cast<const T*>(p.k) + head_off;
  const T* v = static_cast<const T*>(p.v) + head_off;
  T* o = static_cast<T*>(p.o) + head_off;
  float* lse = p.lse + static_cast<int64_t>(bh) * n;

  const int row = bh * nb + qb;
  const int beg = min(max(__ldg(p.row_ptr + row), 0), p.nnz);
  const int end = min(max(__ldg(p.row_ptr + row + 1), beg), p.nnz);
  const int total = (end - beg) * kChunksPerBlock;
  // First key of chunk c of this row, or -1 when the chunk holds no valid key.
  auto chunk_key0 = [&](int c) -> int {
    const int col = __ldg(p.col_idx + beg + c / kChunksPerBlock);
    const int key0 = col * BLK + (c % kChunksPerBlock) * KC;
    return (col >= 0 && col < nb && key0 < n) ? key0 : -1;
  };
  auto next_valid = [&](int c) -> int {
    while (c < total && chunk_key0(c) < 0) ++c;
    return c;
  };

  LoadTile<BQ, D, kThreads>(s_q, q, q0, n, p.row_index);
  CpAsyncCommit();
  int c = next_valid(0);
  if (c < total) {
    const int key0 = chunk_key0(c);
    LoadTile<KC, D, kThreads>(s_k, k, key0, n, p.row_index);
    LoadTile<KC, D, kThreads>(s_v, v, key0, n, p.row_index);
  }
  CpAsyncCommit();
  CpAsyncWait<1>();
  __syncthreads();

  // Row group g of this warp holds CTA rows warp * 16 * MG + g * 16 + [0, 16).
  const int qrow_in_cta = warp * 16 * MG + (lane & 15);
  // Q fragments (A operand, row-major) kept in registers for MG == 1.
  uint32_t qf[MG == 1 ? kKSteps : 1][4];
  if constexpr (MG == 1) {
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk)
      LdMatrixX4(SmemAddr(s_q + Swz<D>(qrow_in_cta, kk * 2 + (lane >> 4))), qf[kk][0], qf[kk][1],
                 qf[kk][2], qf[kk][3]);
  }

  float acc[MG][kDTiles][4];
#pragma unroll
  for (int g = 0; g < MG; ++g)
#pragma unroll
    for (int i = 0; i < kDTiles; ++i) acc[g][i][0] = acc[g][i][1] = acc[g][i][2] = acc[g][i][3] = 0.f;
  float m_run[MG][2];  // running max of scaled scores, log2 units
  float l_run[MG][2];  // this thread's partial row sums
#pragma unroll
  for (int g = 0; g < MG; ++g) {
    m_run[g][0] = m_run[g][1] = -INFINITY;
    l_run[g][0] = l_run[g][1] = 0.f;
  }
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int tq = lane & 3;   // thread within its quad
  const int gq = lane >> 2;  // quad: rows gq and gq + 8 of a 16-row group

  int stage = 0;
  while (c < total) {
    const int key0 = chunk_key0(c);
    const int cn = next_valid(c + 1);
    if (cn < total) {
      const int nk0 = chunk_key0(cn);
      LoadTile<KC, D, kThreads>(s_k + (stage ^ 1) * KC * D, k, nk0, n, p.row_index);
      LoadTile<KC, D, kThreads>(s_v + (stage ^ 1) * KC * D, v, nk0, n, p.row_index);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();

    const T* sk = s_k + stage * KC * D;
    const T* sv = s_v + stage * KC * D;

    // S = Q·K^T: per row group 16 rows x KC keys.
    float s[MG][kNTiles][4];
#pragma unroll
    for (int g = 0; g < MG; ++g)
#pragma unroll
      for (int i = 0; i < kNTiles; ++i) s[g][i][0] = s[g][i][1] = s[g][i][2] = s[g][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t a[MG][4];
#pragma unroll
      for (int g = 0; g < MG; ++g) {
        if constexpr (MG == 1) {
          a[g][0] = qf[kk][0];
          a[g][1] = qf[kk][1];
          a[g][2] = qf[kk][2];
          a[g][3] = qf[kk][3];
        } else {
          LdMatrixX4(SmemAddr(s_q + Swz<D>(qrow_in_cta + g * 16, kk * 2 + (lane >> 4))), a[g][0],
                     a[g][1], a[g][2], a[g][3]);
        }
      }
#pragma unroll
      for (int nt2 = 0; nt2 < kNTiles / 2; ++nt2) {
        const int key = nt2 * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int chunk = kk * 2 + ((lane >> 3) & 1);
        uint32_t b0, b1, b2, b3;
        LdMatrixX4(SmemAddr(sk + Swz<D>(key, chunk)), b0, b1, b2, b3);
#pragma unroll
        for (int g = 0; g < MG; ++g) {
          Elem<T>::Mma(s[g][2 * nt2], a[g], b0, b1);
          Elem<T>::Mma(s[g][2 * nt2 + 1], a[g], b2, b3);
        }
      }
    }
    if (key0 + KC > n) {
#pragma unroll
      for (int g = 0; g < MG; ++g)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + nt * 8 + tq * 2 + (e & 1) >= n) s[g][nt][e] = -INFINITY;
    }

    // Online softmax for rows gq (elements 0, 1) and gq + 8 (elements 2, 3) of each group.
#pragma unroll
    for (int g = 0; g < MG; ++g) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[g][nt][2 * r], s[g][nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[g][r], mx * scale_log2);
        const float base = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(m_run[g][r] - base);
        m_run[g][r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          s[g][nt][2 * r] = exp2f(fmaf(s[g][nt][2 * r], scale_log2, -base));
          s[g][nt][2 * r + 1] = exp2f(fmaf(s[g][nt][2 * r + 1], scale_log2, -base));
          sum += s[g][nt][2 * r] + s[g][nt][2 * r + 1];
        }
        l_run[g][r] = l_run[g][r] * alpha + sum;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          acc[g][dt][2 * r] *= alpha;
          acc[g][dt][2 * r + 1] *= alpha;
        }
      }
    }

    // O += P·V: P from the S accumulators (m16n8 C layout of two n-tiles == m16k16 A layout).
#pragma unroll
    for (int kk = 0; kk < KC / 16; ++kk) {
      uint32_t a[MG][4];
#pragma unroll
      for (int g = 0; g < MG; ++g) {
        a[g][0] = Elem<T>::Pack(s[g][2 * kk][0], s[g][2 * kk][1]);
        a[g][1] = Elem<T>::Pack(s[g][2 * kk][2], s[g][2 * kk][3]);
        a[g][2] = Elem<T>::Pack(s[g][2 * kk + 1][0], s[g][2 * kk + 1][1]);
        a[g][3] = Elem<T>::Pack(s[g][2 * kk + 1][2], s[g][2 * kk + 1][3]);
      }
      const int key = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
      for (int dt2 = 0; dt2 < kDTiles / 2; ++dt2) {
        uint32_t b0, b1, b2, b3;
        LdMatrixX4Trans(SmemAddr(sv + Swz<D>(key, dt2 * 2 + (lane >> 4))), b0, b1, b2, b3);
#pragma unroll
        for (int g = 0; g < MG; ++g) {
          Elem<T>::Mma(acc[g][2 * dt2], a[g], b0, b1);
          Elem<T>::Mma(acc[g][2 * dt2 + 1], a[g], b2, b3);
        }
      }
    }
    __syncthreads();  // this stage's buffers are refilled by the next iteration's prefetch
    c = cn;
    stage ^= 1;
  }
  CpAsyncWait<0>();

  // Normalise, write LSE, stage O through this warp's rows of s_q, then 16-byte stores. The warp
  // barrier orders the other lanes' ldmatrix reads of these Q rows before the writes (racecheck
  // reported the pair as a warning when a row had no chunks and so no barrier in between).
  __syncwarp();
  T* so = s_q;
#pragma unroll
  for (int g = 0; g < MG; ++g) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_run[g][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int rr = warp * 16 * MG + g * 16 + gq + r * 8;
      if (tq == 0 && q0 + rr < n)
        lse[SourceRow(p.row_index, q0 + rr)] =
            l > 0.f ? (m_run[g][r] * 0.6931471805599453f + logf(l)) : -INFINITY;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        const int col = dt * 8 + tq * 2;
        *reinterpret_cast<uint32_t*>(so + Swz<D>(rr, col >> 3) + (col & 7)) =
            Elem<T>::Pack(acc[g][dt][2 * r] * inv, acc[g][dt][2 * r + 1] * inv);
      }
    }
  }
  __syncwarp();
  constexpr int kChunksPerRow = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * MG * kChunksPerRow / 32; ++i) {
    const int idx = i * 32 + lane;
    const int rr = warp * 16 * MG + idx / kChunksPerRow;
    const int ch = idx % kChunksPerRow;
    const int qrow = q0 + rr;
    if (qrow < n)
      *reinterpret_cast<uint4*>(o + static_cast<int64_t>(SourceRow(p.row_index, qrow)) * D +
                                ch * 8) =
          *reinterpret_cast<const uint4*>(so + Swz<D>(rr, ch));
  }
}

template <typename T, int D, int BLK, int MG, int KC>
int Launch(const BlockSparseAttnParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(64 * MG * D + 4 * KC * D) * sizeof(T);
  auto kernel = BlockSparseAttnKernel<T, D, BLK, MG, KC>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return static_cast<int>(err);
  const dim3 grid(static_cast<unsigned>(NumBlocks(p.seq_len, 64 * MG)),
                  static_cast<unsigned>(p.batch * p.heads));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

// ---- v4: wgmma (sm_90a) ---------------------------------------------------------------------------
// One warpgroup (4 warps) per 64 query rows. S = Q·K^T is one m64n64k16 wgmma per 16 channels with
// both operands read from shared memory through descriptors; O += P·V takes P from registers (the
// S accumulator layout is the A-fragment layout) and V from shared memory, transposed by the
// instruction. Tiles are stored as 64-channel panels of 128-byte rows, 16-byte chunk c of row r at
// chunk c ^ (r & 7): the canonical 128-byte-swizzle layout of both K-major (Q, K) and MN-major (V)
// operands, so K and V share one layout and loader.

template <typename T>
__device__ __forceinline__ void WgmmaSS64(float (&d)[32], uint64_t da, uint64_t db, int scale_d);
template <typename T, int N>
__device__ __forceinline__ void WgmmaRS(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db);

template <>
__device__ __forceinline__ void WgmmaSS64<__nv_bfloat16>(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

template <>
__device__ __forceinline__ void WgmmaRS<__nv_bfloat16, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void WgmmaRS<__nv_bfloat16, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void WgmmaSS64<__half>(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

template <>
__device__ __forceinline__ void WgmmaRS<__half, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void WgmmaRS<__half, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaWait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// cp.async writes through the generic proxy; wgmma reads through the async proxy.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Shared-memory matrix descriptor of a 128-byte-swizzled tile (start address, leading and stride
// byte offsets in 16-byte units; layout type 1 = 128-byte swizzle).
__device__ __forceinline__ uint64_t Desc(uint32_t addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// Element offset of chunk `chunk` (8 elements) of row `row` in a [D/64 panels][ROWS][64] tile.
template <int ROWS>
__device__ __forceinline__ int PanelSwz(int row, int chunk) {
  return (chunk >> 3) * ROWS * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// LoadTile for the wgmma kernel's panel layout.
template <int ROWS, int D, int THREADS, typename T>
__device__ __forceinline__ void LoadPanelTile(T* tile, const T* src, int row0, int n,
                                              const int32_t* row_index) {
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
    const T* p = src + static_cast<int64_t>(valid ? SourceRow(row_index, g) : 0) * D + c * 8;
    CpAsync16(SmemAddr(tile + PanelSwz<ROWS>(r, c)), p, valid);
  }
}

// Rows of a tile one thread copies in LoadPanelTile: chunk i of the thread lies in tile row
// (i * THREADS + threadIdx.x) / (D / 8).
template <int ROWS, int D, int THREADS>
constexpr int kTileRowsPerThread = ROWS * (D / 8) / THREADS;

// Source rows of this thread's chunks of the tile at layout positions [row0, row0 + ROWS):
// row_index[g] (read now, used by a later LoadPanelTileRows), or -1 for positions >= n.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void TileSourceRows(int (&rows)[kTileRowsPerThread<ROWS, D, THREADS>],
                                               int row0, int n, const int32_t* row_index) {
  constexpr int kChunksPerRow = D / 8;
#pragma unroll
  for (int i = 0; i < kTileRowsPerThread<ROWS, D, THREADS>; ++i) {
    const int g = row0 + (i * THREADS + static_cast<int>(threadIdx.x)) / kChunksPerRow;
    rows[i] = g < n ? __ldg(row_index + g) : -1;
  }
}

// LoadPanelTile with the source rows already in registers (TileSourceRows): the cp.async
// addresses need no load, so the copies issue without waiting on the index.
template <int ROWS, int D, int THREADS, typename T>
__device__ __forceinline__ void LoadPanelTileRows(
    T* tile, const T* src, const int (&rows)[kTileRowsPerThread<ROWS, D, THREADS>]) {
  constexpr int kChunksPerRow = D / 8;
#pragma unroll
  for (int i = 0; i < kTileRowsPerThread<ROWS, D, THREADS>; ++i) {
    const int idx = i * THREADS + static_cast<int>(threadIdx.x);
    const int r = idx / kChunksPerRow;
    const int c = idx % kChunksPerRow;
    const bool valid = rows[i] >= 0;
    const T* p = src + static_cast<int64_t>(valid ? rows[i] : 0) * D + c * 8;
    CpAsync16(SmemAddr(tile + PanelSwz<ROWS>(r, c)), p, valid);
  }
}

// ---- v6 (SPARSETUNE_ATTN_TILE=6): the same kernel with lean per-chunk address arithmetic ----
// ncu on v4 at 80% (H200, NOTES.md): 52% of issue slots busy at 2 warps per scheduler, 22% of the
// warp samples in the code that issues a chunk's 16 cp.async per thread (a 64-bit address, a
// select and a shared address per copy, and long-scoreboard stalls on rewriting the address
// registers the previous copies still hold) and 11% in building the 16 S descriptors. A thread's
// copies of a full 64-key chunk lie at one global base plus multiples of (rows per step) rows and
// one shared base plus multiples of (rows per step) * 128 bytes, since the swizzle term r & 7 is
// the same for every copy of the thread; both offsets go into the instruction as immediates.

// Copies I = 0 .. N-1: shared dst + I * DST_STEP bytes <- global src + I * SRC_STEP bytes.
template <int I, int N, int DST_STEP, int SRC_STEP>
struct CopySteps {
  static __device__ __forceinline__ void Run(uint32_t dst, const char* src) {
    asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%3], 16;\n" ::"r"(dst), "l"(src),
                 "n"(I * DST_STEP), "n"(I * SRC_STEP));
    CopySteps<I + 1, N, DST_STEP, SRC_STEP>::Run(dst, src);
  }
};
template <int N, int DST_STEP, int SRC_STEP>
struct CopySteps<N, N, DST_STEP, SRC_STEP> {
  static __device__ __forceinline__ void Run(uint32_t, const char*) {}
};

// Gathered copies I = 0 .. N-1 of one row each: shared dst + I * DST_STEP bytes <- rows[I] of
// src (a row of D elements), at the thread's 16-byte column `col_bytes`.
template <int I, int N, int DST_STEP, int D, typename T>
struct GatherSteps {
  static __device__ __forceinline__ void Run(uint32_t dst, const T* src, int col_bytes,
                                             const int (&rows)[N]) {
    const char* g = reinterpret_cast<const char*>(src + static_cast<int64_t>(rows[I]) * D) + col_bytes;
    asm volatile("cp.async.cg.shared.global [%0+%2], [%1], 16;\n" ::"r"(dst), "l"(g),
                 "n"(I * DST_STEP));
    GatherSteps<I + 1, N, DST_STEP, D, T>::Run(dst, src, col_bytes, rows);
  }
};
template <int N, int DST_STEP, int D, typename T>
struct GatherSteps<N, N, DST_STEP, D, T> {
  static __device__ __forceinline__ void Run(uint32_t, const T*, int, const int (&)[N]) {}
};

// The low and high words of a 128-byte-swizzle descriptor (Desc): a descriptor of base + off
// bytes is {lo + off / 16, hi} while the start address stays below 256 KiB (shared memory does).
__device__ __forceinline__ uint32_t DescLo(uint32_t addr, uint32_t lbo_bytes) {
  return ((addr & 0x3FFFF) >> 4) | (((lbo_bytes >> 4) & 0x3FFF) << 16);
}
__device__ __forceinline__ uint32_t DescHi(uint32_t sbo_bytes) {
  return ((sbo_bytes >> 4) & 0x3FFF) | (1u << 30);
}
__device__ __forceinline__ uint64_t DescAt(uint32_t lo, uint32_t hi, uint32_t off_bytes) {
  return (static_cast<uint64_t>(hi) << 32) | (lo + (off_bytes >> 4));
}

// kIndexed: p.row_index is used (false: it is ignored and positions are rows). A template
// parameter, not a runtime test: with the test inside the loaders the identity path ran 15%
// slower on an H200 (17.7 -> 20.2 ms dense at the Wan shape; 168 instead of 162 registers).
// kLean: v6's address arithmetic (above); false is v4.
template <typename T, int D, int BLK, int WG, bool kIndexed, bool kLean>
__global__ void __launch_bounds__(128 * WG)
    BlockSparseAttnWgmmaKernel(const BlockSparseAttnParams p) {
  const int32_t* const row_index = kIndexed ? p.row_index : nullptr;
  // WG warpgroups of 64 rows share each K/V chunk: WG = 1 is the default; WG = 2
  // (SPARSETUNE_ATTN_TILE=5) halves the K/V copies per FLOP but, at ~170 registers, fits one
  // CTA (8 warps) per SM.
  constexpr int BQ = 64 * WG;             // query rows per CTA
  constexpr int kT = 128 * WG;            // threads
  static_assert(BLK % BQ == 0, "a CTA's rows lie in one block");
  constexpr int KC = 64;                  // keys per chunk
  constexpr int kChunksPerBlock = BLK / KC;
  constexpr int kKSteps = D / 16;
  constexpr int kDTiles = D / 8;
  constexpr int kNTiles = KC / 8;

  // Swizzled tiles need 1024-byte-aligned bases; the launch adds 1 KiB of slack for the round-up.
  extern __shared__ __align__(128) unsigned char wg_smem[];
  unsigned char* base = wg_smem + ((1024 - (SmemAddr(wg_smem) & 1023)) & 1023);
  T* s_q = reinterpret_cast<T*>(base);      // [D/64][BQ][64]; reused to stage O
  T* s_k = s_q + BQ * D;                    // [2][D/64][KC][64]
  T* s_v = s_k + 2 * KC * D;                // [2][D/64][KC][64]

  const int n = p.seq_len;
  const int nb = (n + BLK - 1) / BLK;
  const int q0 = static_cast<int>(blockIdx.x) * BQ;
  const int qb = q0 / BLK;
  const int bh = static_cast<int>(blockIdx.y);
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int64_t head_off = static_cast<int64_t>(bh) * n * D;
  const T* q = static_cast<const T*>(p.q) + head_off;
  const T* k = static_cast<const T*>(p.k) + head_off;
  const T* v = static_cast<const T*>(p.v) + head_off;
  T* o = static_cast<T*>(p.o) + head_off;
  float* lse = p.lse + static_cast<int64_t>(bh) * n;

  const int row = bh * nb + qb;
  const int beg = min(max(__ldg(p.row_ptr + row), 0), p.nnz);
  const int end = min(max(__ldg(p.row_ptr + row + 1), beg), p.nnz);
  const int total = (end - beg) * kChunksPerBlock;
  auto chunk_key0 = [&](int c) -> int {
    const int col = __ldg(p.col_idx + beg + c / kChunksPerBlock);
    const int key0 = col * BLK + (c % kChunksPerBlock) * KC;
    return (col >= 0 && col < nb && key0 < n) ? key0 : -1;
  };
  auto next_valid = [&](int c) -> int {
    while (c < total && chunk_key0(c) < 0) ++c;
    return c;
  };

  // The chunk walk runs two chunks ahead of the compute: while chunk c is computed, chunk cn's
  // copies are in flight, and the column of the chunk after cn (and, indexed, the source rows
  // of its keys) are read into registers behind the S wgmma. So a cp.async never waits on a
  // dependent load: without this the indexed kernel ran 40-55% slower than the identity one on
  // an H200 (each thread's copies waited on a row_index load once per chunk; NOTES.md).
  constexpr int kR = kTileRowsPerThread<KC, D, kT>;
  int src_rows[kR];  // source rows of this thread's copies of chunk cn (indexed kernel only)
  LoadPanelTile<BQ, D, kT>(s_q, q, q0, n, row_index);
  CpAsyncCommit();
  int c = next_valid(0);
  int key0 = 0;  // first key of chunk c
  if (c < total) {
    key0 = chunk_key0(c);
    LoadPanelTile<KC, D, kT>(s_k, k, key0, n, row_index);
    LoadPanelTile<KC, D, kT>(s_v, v, key0, n, row_index);
  }
  CpAsyncCommit();
  int cn = next_valid(c + 1);
  int nk0 = 0;  // first key of chunk cn
  if (cn < total) {
    nk0 = chunk_key0(cn);
    if constexpr (kIndexed) TileSourceRows<KC, D, kT>(src_rows, nk0, n, row_index);
  }

  float acc[kDTiles * 4];
#pragma unroll
  for (int i = 0; i < kDTiles * 4; ++i) acc[i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int tq = lane & 3;
  const int gq = lane >> 2;
  // This warpgroup's 64 rows start 64 * 128 bytes into each panel per preceding warpgroup.
  const uint32_t q_addr = SmemAddr(s_q) + (warp >> 2) * 64 * 128;
  // v6: this thread's copies of a chunk: tile row r0 + i * kRowStep, 16-byte column cc.
  constexpr int kColsPerRow = D / 8;
  constexpr int kRowStep = kT / kColsPerRow;
  const int r0 = static_cast<int>(threadIdx.x) / kColsPerRow;
  const int cc = static_cast<int>(threadIdx.x) % kColsPerRow;
  const uint32_t k_dst0 =
      SmemAddr(s_k) + static_cast<uint32_t>(PanelSwz<KC>(r0, cc)) * static_cast<uint32_t>(sizeof(T));
  constexpr uint32_t kStageBytes = KC * D * sizeof(T);  // one K (or V) stage
  const uint32_t v_dst0 = k_dst0 + 2 * kStageBytes;
  const uint32_t q_lo = DescLo(q_addr, 16);
  const uint32_t k_lo = DescLo(SmemAddr(s_k), 16);
  const uint32_t v_lo = DescLo(SmemAddr(s_v), KC * 128);
  const uint32_t desc_hi = DescHi(1024);

  int stage = 0;
  while (c < total) {
    if (cn < total) {
      if (kLean && nk0 + KC <= n) {
        constexpr int kDstStep = kRowStep * 128;
        const uint32_t kd = k_dst0 + static_cast<uint32_t>(stage ^ 1) * kStageBytes;
        const uint32_t vd = v_dst0 + static_cast<uint32_t>(stage ^ 1) * kStageBytes;
        if constexpr (kIndexed) {
          GatherSteps<0, kR, kDstStep, D, T>::Run(kd, k, cc * 16, src_rows);
          GatherSteps<0, kR, kDstStep, D, T>::Run(vd, v, cc * 16, src_rows);
        } else {
          const int64_t off = static_cast<int64_t>(nk0 + r0) * D + cc * 8;
          constexpr int kSrcStep = kRowStep * D * static_cast<int>(sizeof(T));
          CopySteps<0, kR, kDstStep, kSrcStep>::Run(kd, reinterpret_cast<const char*>(k + off));
          CopySteps<0, kR, kDstStep, kSrcStep>::Run(vd, reinterpret_cast<const char*>(v + off));
        }
      } else if constexpr (kIndexed) {
        LoadPanelTileRows<KC, D, kT>(s_k + (stage ^ 1) * KC * D, k, src_rows);
        LoadPanelTileRows<KC, D, kT>(s_v + (stage ^ 1) * KC * D, v, src_rows);
      } else {
        LoadPanelTile<KC, D, kT>(s_k + (stage ^ 1) * KC * D, k, nk0, n, nullptr);
        LoadPanelTile<KC, D, kT>(s_v + (stage ^ 1) * KC * D, v, nk0, n, nullptr);
      }
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    FenceProxyAsync();
    __syncthreads();

    const uint32_t k_addr = SmemAddr(s_k + stage * KC * D);
    const uint32_t v_addr = SmemAddr(s_v + stage * KC * D);

    // S = Q·K^T (K-major A and B; 16 channels = 32 bytes per step inside a 64-channel panel).
    float s[kNTiles * 4];
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      const uint32_t panel = kk >> 2, off = (kk & 3) * 32;
      if constexpr (kLean) {
        const uint64_t da = DescAt(q_lo, desc_hi, panel * BQ * 128 + off);
        const uint64_t db = DescAt(k_lo, desc_hi, static_cast<uint32_t>(stage) * kStageBytes + panel * KC * 128 + off);
        WgmmaSS64<T>(s, da, db, kk > 0 ? 1 : 0);
      } else {
        const uint64_t da = Desc(q_addr + panel * BQ * 128 + off, 16, 1024);
        const uint64_t db = Desc(k_addr + panel * KC * 128 + off, 16, 1024);
        WgmmaSS64<T>(s, da, db, kk > 0 ? 1 : 0);
      }
    }
    WgmmaCommit();
    // The chunk after cn, while the tensor cores compute S (the loads only feed addresses).
    const int cnn = next_valid(cn + 1);
    int nnk0 = 0;
    if (cnn < total) {
      nnk0 = chunk_key0(cnn);
      if constexpr (kIndexed) TileSourceRows<KC, D, kT>(src_rows, nnk0, n, row_index);
    }
    WgmmaWait0();

    if (key0 + KC > n) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + nt * 8 + tq * 2 + (e & 1) >= n) s[nt * 4 + e] = -INFINITY;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[nt * 4 + 2 * r], s[nt * 4 + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[r], mx * scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m_run[r] - base);
      m_run[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        s[nt * 4 + 2 * r] = exp2f(fmaf(s[nt * 4 + 2 * r], scale_log2, -base));
        s[nt * 4 + 2 * r + 1] = exp2f(fmaf(s[nt * 4 + 2 * r + 1], scale_log2, -base));
        sum += s[nt * 4 + 2 * r] + s[nt * 4 + 2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        acc[dt * 4 + 2 * r] *= alpha;
        acc[dt * 4 + 2 * r + 1] *= alpha;
      }
    }

    // O += P·V: V is MN-major (channels contiguous): LBO = one 64-channel panel of KC rows,
    // SBO = 8 key rows; 16 keys per step = 2048 bytes.
    // P is packed before the fence: registers wgmma reads must not change while it runs.
    uint32_t pa[KC / 16][4];
#pragma unroll
    for (int kk = 0; kk < KC / 16; ++kk) {
      pa[kk][0] = Elem<T>::Pack(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
      pa[kk][1] = Elem<T>::Pack(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
      pa[kk][2] = Elem<T>::Pack(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
      pa[kk][3] = Elem<T>::Pack(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
    }
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < KC / 16; ++kk) {
      if constexpr (kLean)
        WgmmaRS<T, D>(acc, pa[kk], DescAt(v_lo, desc_hi, static_cast<uint32_t>(stage) * kStageBytes + kk * 16 * 128));
      else
        WgmmaRS<T, D>(acc, pa[kk], Desc(v_addr + kk * 16 * 128, KC * 128, 1024));
    }
    WgmmaCommit();
    WgmmaWait0();
    __syncthreads();
    c = cn;
    key0 = nk0;
    cn = cnn;
    nk0 = nnk0;
    stage ^= 1;
  }
  CpAsyncWait<0>();
  __syncthreads();  // with no chunks the Q tile may still be in flight for other threads

  T* so = s_q;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int rr = warp * 16 + gq + r * 8;
    if (tq == 0 && q0 + rr < n)
      lse[SourceRow(row_index, q0 + rr)] =
          l > 0.f ? (m_run[r] * 0.6931471805599453f + logf(l)) : -INFINITY;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + tq * 2;
      *reinterpret_cast<uint32_t*>(so + PanelSwz<BQ>(rr, col >> 3) + (col & 7)) =
          Elem<T>::Pack(acc[dt * 4 + 2 * r] * inv, acc[dt * 4 + 2 * r + 1] * inv);
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
      *reinterpret_cast<uint4*>(o + static_cast<int64_t>(SourceRow(row_index, qrow)) * D +
                                ch * 8) =
          *reinterpret_cast<const uint4*>(so + PanelSwz<BQ>(rr, ch));
  }
}

template <typename T, int D, int BLK, int WG, bool kLean = false>
int LaunchWgmma(const BlockSparseAttnParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(64 * WG * D + 4 * 64 * D) * sizeof(T) + 1024;
  auto kernel = p.row_index != nullptr ? BlockSparseAttnWgmmaKernel<T, D, BLK, WG, true, kLean>
                                       : BlockSparseAttnWgmmaKernel<T, D, BLK, WG, false, kLean>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return static_cast<int>(err);
  const dim3 grid(static_cast<unsigned>(NumBlocks(p.seq_len, 64 * WG)),
                  static_cast<unsigned>(p.batch * p.heads));
  kernel<<<grid, 128 * WG, smem, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

// Kernel choice. Default: the wgmma kernel with one warpgroup per CTA, as v6 (v4 for indexed calls
// at D = 128). SPARSETUNE_ATTN_TILE picks another for side-by-side measurements (scripts/gpu-kern.sh,
// NOTES.md): 1 = mma.sync with 16 rows per warp (v2), 2 = mma.sync with 32 rows per warp (v3,
// block 128), 3 = v4 for every call, 4 = v5
// (block_sparse_attn_v5.cu, dispatched in LaunchBlockSparseAttention; this default where it declines),
// 5 = the wgmma kernel with two warpgroups (128 query rows) sharing each K/V chunk (block 128;
// block 64 runs v4), 6 = v6 for every call (v4 with lean per-chunk address arithmetic).
template <typename T, int D, int BLK>
int LaunchTile(const BlockSparseAttnParams& p, cudaStream_t stream) {
  static const int forced = [] {
    const char* e = std::getenv("SPARSETUNE_ATTN_TILE");
    return e == nullptr ? 0 : std::atoi(e);
  }();
  if (forced == 0) {
    // v6, except with a row index at D = 128, where v6's gather measured 2-3% slower than v4's
    // (Wan shape, H200; at D = 64 v6 gathered 12% faster and without an index it is 9-18% faster).
    if (D == 128 && p.row_index != nullptr) return LaunchWgmma<T, D, BLK, 1>(p, stream);
    return LaunchWgmma<T, D, BLK, 1, true>(p, stream);
  }
  if (forced == 3 || forced == 4) return LaunchWgmma<T, D, BLK, 1>(p, stream);
  if (forced == 6) return LaunchWgmma<T, D, BLK, 1, true>(p, stream);
  if constexpr (BLK == 128) {
    if (forced == 2) return Launch<T, D, BLK, 2, (D == 128 ? 32 : 64)>(p, stream);
    if (forced == 5) return LaunchWgmma<T, D, BLK, 2>(p, stream);
  } else {
    if (forced == 5) return LaunchWgmma<T, D, BLK, 1>(p, stream);
  }
  return Launch<T, D, BLK, 1, 64>(p, stream);
}

template <typename T>
int LaunchTyped(const BlockSparseAttnParams& p, cudaStream_t stream) {
  if (p.head_dim == 64 && p.block == 64) return LaunchTile<T, 64, 64>(p, stream);
  if (p.head_dim == 64 && p.block == 128) return LaunchTile<T, 64, 128>(p, stream);
  if (p.head_dim == 128 && p.block == 64) return LaunchTile<T, 128, 64>(p, stream);
  if (p.head_dim == 128 && p.block == 128) return LaunchTile<T, 128, 128>(p, stream);
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace

int LaunchBlockSparseAttention(const BlockSparseAttnParams& params, void* stream) {
  if (params.batch <= 0 || params.heads <= 0 || params.seq_len <= 0)
    return static_cast<int>(cudaErrorInvalidValue);
  if (int v5 = 0; TryLaunchBlockSparseAttentionV5(params, stream, &v5)) return v5;  // TILE=4
  const auto s = static_cast<cudaStream_t>(stream);
  return params.dtype == AttnDtype::kBFloat16 ? LaunchTyped<__nv_bfloat16>(params, s)
                                               : LaunchTyped<__half>(params, s);
}

}  // namespace sparsetune::cuda
