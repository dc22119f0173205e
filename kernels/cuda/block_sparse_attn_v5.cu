// v5 of the block-sparse flash attention forward for sm_90a (SPARSETUNE_ATTN_TILE=4; NOTES.md).
// Same tiles, layouts and CSR walk as v4 (block_sparse_attn.cu): one warpgroup per 64 query rows,
// 64-key chunks, S = Q·K^T on m64n64k16 wgmma from 128-byte-swizzled shared memory, O += P·V with P
// from registers, two CTAs per SM. What changes is the order inside the warpgroup. v4 waits for
// every wgmma before the next step, so its tensor cores idle during the softmax. v5 keeps them
// busy, in the manner of FlashAttention-3's intra-warpgroup pipelining: iteration j issues
// O += P_{j-1}·V_{j-1} and S_{j+1} = Q·K_{j+1} as one async group, computes the softmax of chunk j
// (whose scores arrived in the previous iteration) while they run, waits, and only then rescales O
// by the new row maxima. That needs a second score tile and a second P in registers (about 30 more
// registers than v4) and changes when a buffer may be refilled: a K stage is free once its S has
// finished, a V stage only after the P·V one iteration later, so K and V load as separate cp.async
// groups with STAGES buffers each (2, or 3 where two CTAs per SM still fit).
//
// With a row_index (block_sparse_attn.h) tiles are gathered and O/LSE scattered by it, as in v4.
// Chunks whose block index is outside [0, nb) or that start past N are not skipped as in v4 but
// loaded as zeros and fully masked (they never occur in a valid CSR; this keeps the pipeline's
// chunk numbering static). Rows past N are computed on zero rows and never stored.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "kernels/cuda/block_sparse_attn_v5.h"

namespace sparsetune::cuda {

namespace {

constexpr int kThreads = 128;  // one warpgroup
constexpr int kBQ = 64;        // query rows per CTA
constexpr int kKC = 64;        // keys per chunk

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; `valid == false` writes zeros and reads nothing.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaWaitAll() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// cp.async writes through the generic proxy; wgmma reads through the async proxy.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Pins `r` at this point of the program for the compiler: register values an async wgmma writes
// must not be read (copied, rescaled) above the wait that makes them valid.
template <int N>
__device__ __forceinline__ void PinRegs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i]));
}

template <int M, int N>
__device__ __forceinline__ void PinRegs(uint32_t (&r)[M][N]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int e = 0; e < N; ++e) asm volatile("" : "+r"(r[i][e]));
}

template <typename T>
__device__ __forceinline__ uint32_t Pack(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t Pack<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t Pack<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Shared-memory matrix descriptor of a 128-byte-swizzled tile: start address, leading and stride
// byte offsets (16-byte units), layout type 1 (128-byte swizzle).
__device__ __forceinline__ uint64_t Desc(uint32_t addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// Element offset of 8-element chunk `chunk` of row `row` in a [D/64 panels][ROWS][64] tile whose
// 128-byte rows hold chunk c at c ^ (row & 7).
template <int ROWS>
__device__ __forceinline__ int PanelSwz(int row, int chunk) {
  return (chunk >> 3) * ROWS * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// Token row of layout position `pos` (< n): row_index[pos], or pos itself without an index.
__device__ __forceinline__ int SourceRow(const int32_t* row_index, int pos) {
  return row_index == nullptr ? pos : __ldg(row_index + pos);
}

// Async copy of layout positions [row0, row0 + ROWS) of a [N, D] matrix into a panel tile
// (position g reads row SourceRow(row_index, g)); positions >= n, and every position when
// row0 < 0, are zero-filled.
template <int ROWS, int D, typename T>
__device__ __forceinline__ void LoadRows(T* tile, const T* src, int row0, int n,
                                         const int32_t* row_index) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kTotal = ROWS * kChunksPerRow;
  static_assert(kTotal % kThreads == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int i = 0; i < kTotal / kThreads; ++i) {
    const int idx = i * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kChunksPerRow;
    const int c = idx % kChunksPerRow;
    const int g = row0 + r;
    const bool valid = row0 >= 0 && g < n;
    const T* p = src + static_cast<int64_t>(valid ? SourceRow(row_index, g) : 0) * D + c * 8;
    CpAsync16(SmemAddr(tile + PanelSwz<ROWS>(r, c)), p, valid);
  }
}

// ---- wgmma wrappers: S (64x64, both operands by descriptor) and O += P·V (P from registers, V
// MN-major by descriptor, transposed by the instruction). scale_d = 0 overwrites the accumulator.
template <typename T>
__device__ __forceinline__ void MmaSS(float (&d)[32], uint64_t da, uint64_t db, int scale_d);
template <typename T, int N>
__device__ __forceinline__ void MmaRS(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db);

template <>
__device__ __forceinline__ void MmaSS<__nv_bfloat16>(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

template <>
__device__ __forceinline__ void MmaRS<__nv_bfloat16, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void MmaRS<__nv_bfloat16, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void MmaSS<__half>(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

template <>
__device__ __forceinline__ void MmaRS<__half, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

template <>
__device__ __forceinline__ void MmaRS<__half, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

// S = Q·K^T for one 64-key chunk: D/16 steps of 16 channels (32 bytes inside a 64-channel panel).
template <typename T, int D>
__device__ __forceinline__ void IssueScores(float (&s)[32], uint32_t q_addr, uint32_t k_addr) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint32_t panel = kk >> 2, off = (kk & 3) * 32;
    MmaSS<T>(s, Desc(q_addr + panel * kBQ * 128 + off, 16, 1024),
             Desc(k_addr + panel * kKC * 128 + off, 16, 1024), kk > 0 ? 1 : 0);
  }
}

// O += P·V for one chunk: 16 keys (2048 bytes of V) per step; LBO = one 64-channel panel of the
// chunk, SBO = 8 key rows.
template <typename T, int D>
__device__ __forceinline__ void IssuePv(float (&acc)[D / 2], const uint32_t (&pa)[kKC / 16][4],
                                        uint32_t v_addr) {
#pragma unroll
  for (int kk = 0; kk < kKC / 16; ++kk) MmaRS<T, D>(acc, pa[kk], Desc(v_addr + kk * 2048, kKC * 128, 1024));
}

template <typename T, int D, int BLK, int STAGES>
__global__ void __launch_bounds__(kThreads, 2) BlockSparseAttnV5Kernel(const BlockSparseAttnParams p) {
  static_assert(BLK % kBQ == 0 && BLK % kKC == 0, "a CTA's rows and a chunk's keys lie in one block");
  static_assert(STAGES == 2 || STAGES == 3, "two or three K/V stages");
  constexpr int kChunksPerBlock = BLK / kKC;
  constexpr int kDTiles = D / 8;
  constexpr int kNTiles = kKC / 8;
  constexpr int kTile = kKC * D;                         // elements of one K or V chunk
  constexpr uint32_t kTileBytes = kTile * sizeof(T);
  constexpr int kPending = 2 * (STAGES - 1);             // cp.async groups allowed in flight

  // Swizzled tiles need 1024-byte-aligned bases; the launch adds 1 KiB of slack for the round-up.
  extern __shared__ __align__(128) unsigned char v5_smem[];
  unsigned char* base = v5_smem + ((1024 - (SmemAddr(v5_smem) & 1023)) & 1023);
  T* s_q = reinterpret_cast<T*>(base);  // [D/64][64][64]; reused to stage O
  T* s_k = s_q + kBQ * D;               // [STAGES][D/64][KC][64]
  T* s_v = s_k + STAGES * kTile;        // [STAGES][D/64][KC][64]

  const int n = p.seq_len;
  const int nb = (n + BLK - 1) / BLK;
  const int q0 = static_cast<int>(blockIdx.x) * kBQ;
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
  // First key of chunk c (< total) of this row, or -1 when the chunk holds no valid key.
  auto chunk_key0 = [&](int c) -> int {
    const int col = __ldg(p.col_idx + beg + c / kChunksPerBlock);
    const int key0 = col * BLK + (c % kChunksPerBlock) * kKC;
    return (col >= 0 && col < nb && key0 < n) ? key0 : -1;
  };
  auto load_k = [&](int c) {
    if (c < total) LoadRows<kKC, D>(s_k + (c % STAGES) * kTile, k, chunk_key0(c), n, p.row_index);
    CpAsyncCommit();
  };
  auto load_v = [&](int c) {
    if (c < total) LoadRows<kKC, D>(s_v + (c % STAGES) * kTile, v, chunk_key0(c), n, p.row_index);
    CpAsyncCommit();
  };

  // Groups in issue order: {Q, K0}, then K1, V0, K2, V1, ...; iteration j adds K_{j+STAGES} at its
  // start and V_{j+STAGES-1} at its end, so at its start the 2·(STAGES-1) newest groups may still
  // be in flight while K_{j+1} and V_{j-1} have landed.
  LoadRows<kBQ, D>(s_q, q, q0, n, p.row_index);
  load_k(0);
#pragma unroll
  for (int t = 1; t < STAGES; ++t) {
    load_k(t);
    load_v(t - 1);
  }

  float acc[kDTiles * 4];
#pragma unroll
  for (int i = 0; i < kDTiles * 4; ++i) acc[i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running row max of scaled scores, log2 units
  float l_run[2] = {0.f, 0.f};              // this thread's partial row sums
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int tq = lane & 3;
  const int gq = lane >> 2;
  const uint32_t q_addr = SmemAddr(s_q);
  const uint32_t k_addr = SmemAddr(s_k);
  const uint32_t v_addr = SmemAddr(s_v);

  float s_cur[kNTiles * 4];   // raw scores of chunk j
  float s_next[kNTiles * 4];  // scores of chunk j + 1, written by the tensor cores during j
  uint32_t pa_prev[kKC / 16][4];  // P of chunk j - 1 (read by the in-flight P·V)
  uint32_t pa_cur[kKC / 16][4];   // P of chunk j
  if (total > 0) {
    CpAsyncWait<kPending>();
    FenceProxyAsync();
    __syncthreads();
    WgmmaFence();
    IssueScores<T, D>(s_cur, q_addr, k_addr);
    WgmmaCommit();
    WgmmaWaitAll();
    PinRegs(s_cur);
    __syncthreads();  // K_0's stage is refilled at the top of the first iteration
  }
#pragma unroll
  for (int i = 0; i < kNTiles * 4; ++i) s_next[i] = 0.f;  // copied unused after the last chunk

  for (int j = 0; j < total; ++j) {
    // Chunk j's K stage is free: S_j finished last iteration and its closing barrier passed.
    load_k(j + STAGES);
    CpAsyncWait<kPending>();  // K_{j+1} and V_{j-1} have landed (this thread's copies)
    FenceProxyAsync();
    __syncthreads();          // ... and every other thread's

    // The wgmmas read acc and pa_prev: their last writes must come before the fence.
    PinRegs(acc);
    PinRegs(pa_prev);
    WgmmaFence();
    if (j > 0) IssuePv<T, D>(acc, pa_prev, v_addr + ((j - 1) % STAGES) * kTileBytes);
    if (j + 1 < total) IssueScores<T, D>(s_next, q_addr, k_addr + ((j + 1) % STAGES) * kTileBytes);
    WgmmaCommit();

    // Softmax of chunk j while the tensor cores run; O is rescaled only after they finish.
    const int key0 = chunk_key0(j);
    if (key0 < 0 || key0 + kKC > n) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 < 0 || key0 + nt * 8 + tq * 2 + (e & 1) >= n) s_cur[nt * 4 + e] = -INFINITY;
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
        mx = fmaxf(mx, fmaxf(s_cur[nt * 4 + 2 * r], s_cur[nt * 4 + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[r], mx * scale_log2);
      const float m_base = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(m_run[r] - m_base);
      m_run[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        s_cur[nt * 4 + 2 * r] = exp2f(fmaf(s_cur[nt * 4 + 2 * r], scale_log2, -m_base));
        s_cur[nt * 4 + 2 * r + 1] = exp2f(fmaf(s_cur[nt * 4 + 2 * r + 1], scale_log2, -m_base));
        sum += s_cur[nt * 4 + 2 * r] + s_cur[nt * 4 + 2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha[r] + sum;
    }
    // The S accumulator layout of two 8-key tiles is the A-fragment layout of one 16-key step.
#pragma unroll
    for (int kk = 0; kk < kKC / 16; ++kk) {
      pa_cur[kk][0] = Pack<T>(s_cur[(2 * kk) * 4 + 0], s_cur[(2 * kk) * 4 + 1]);
      pa_cur[kk][1] = Pack<T>(s_cur[(2 * kk) * 4 + 2], s_cur[(2 * kk) * 4 + 3]);
      pa_cur[kk][2] = Pack<T>(s_cur[(2 * kk + 1) * 4 + 0], s_cur[(2 * kk + 1) * 4 + 1]);
      pa_cur[kk][3] = Pack<T>(s_cur[(2 * kk + 1) * 4 + 2], s_cur[(2 * kk + 1) * 4 + 3]);
    }

    WgmmaWaitAll();
    PinRegs(acc);
    PinRegs(s_next);
    // O now holds chunks up to j - 1 at the previous maxima; bring it to chunk j's.
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      acc[dt * 4 + 0] *= alpha[0];
      acc[dt * 4 + 1] *= alpha[0];
      acc[dt * 4 + 2] *= alpha[1];
      acc[dt * 4 + 3] *= alpha[1];
    }
#pragma unroll
    for (int i = 0; i < kNTiles * 4; ++i) s_cur[i] = s_next[i];
#pragma unroll
    for (int kk = 0; kk < kKC / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) pa_prev[kk][e] = pa_cur[kk][e];
    __syncthreads();  // every warp is done with V_{j-1} and K_{j+1}
    load_v(j + STAGES - 1);  // into V_{j-1}'s stage
  }
  if (total > 0) {
    CpAsyncWait<0>();
    FenceProxyAsync();
    __syncthreads();
    WgmmaFence();
    IssuePv<T, D>(acc, pa_prev, v_addr + ((total - 1) % STAGES) * kTileBytes);
    WgmmaCommit();
    WgmmaWaitAll();
    PinRegs(acc);
  }
  CpAsyncWait<0>();
  __syncthreads();  // Q's tile (copies of other threads, reads of the tensor cores) is done with

  // Normalise, write LSE, stage O through this warp's 16 rows of s_q, then 16-byte stores.
  T* so = s_q;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int rr = warp * 16 + gq + r * 8;
    if (tq == 0 && q0 + rr < n)
      lse[SourceRow(p.row_index, q0 + rr)] =
          l > 0.f ? (m_run[r] * 0.6931471805599453f + logf(l)) : -INFINITY;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + tq * 2;
      *reinterpret_cast<uint32_t*>(so + PanelSwz<kBQ>(rr, col >> 3) + (col & 7)) =
          Pack<T>(acc[dt * 4 + 2 * r] * inv, acc[dt * 4 + 2 * r + 1] * inv);
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
      *reinterpret_cast<uint4*>(o + static_cast<int64_t>(SourceRow(p.row_index, qrow)) * D + ch * 8) =
          *reinterpret_cast<const uint4*>(so + PanelSwz<kBQ>(rr, ch));
  }
}

template <typename T, int D, int STAGES>
constexpr size_t SmemBytes() {
  return static_cast<size_t>(kBQ * D + 2 * STAGES * kKC * D) * sizeof(T) + 1024;
}

template <typename T, int D, int BLK, int STAGES>
cudaError_t Prepare() {
  return cudaFuncSetAttribute(BlockSparseAttnV5Kernel<T, D, BLK, STAGES>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(SmemBytes<T, D, STAGES>()));
}

// CTAs of this configuration one SM holds at once (0 when the query fails).
template <typename T, int D, int BLK, int STAGES>
int CtasPerSm() {
  int ctas = 0;
  if (Prepare<T, D, BLK, STAGES>() != cudaSuccess) return 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, BlockSparseAttnV5Kernel<T, D, BLK, STAGES>,
                                                    kThreads, SmemBytes<T, D, STAGES>()) != cudaSuccess)
    return 0;
  return ctas;
}

template <typename T, int D, int BLK, int STAGES>
int Launch(const BlockSparseAttnParams& p, cudaStream_t stream) {
  const cudaError_t err = Prepare<T, D, BLK, STAGES>();
  if (err != cudaSuccess) return static_cast<int>(err);
  const dim3 grid(static_cast<unsigned>(NumBlocks(p.seq_len, kBQ)),
                  static_cast<unsigned>(p.batch * p.heads));
  BlockSparseAttnV5Kernel<T, D, BLK, STAGES><<<grid, kThreads, SmemBytes<T, D, STAGES>(), stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

// SPARSETUNE_ATTN_V5_STAGES (2 or 3), else 0.
int ForcedStages() {
  static const int forced = [] {
    const char* e = std::getenv("SPARSETUNE_ATTN_V5_STAGES");
    const int s = e == nullptr ? 0 : std::atoi(e);
    return s == 2 || s == 3 ? s : 0;
  }();
  return forced;
}

// Three stages only where they keep as many CTAs per SM as two (D = 128 needs 113 KiB per CTA,
// right at the SM's limit for two).
template <typename T, int D, int BLK>
int LaunchStages(const BlockSparseAttnParams& p, cudaStream_t stream) {
  static const int stages = [] {
    if (ForcedStages() != 0) return ForcedStages();
    return CtasPerSm<T, D, BLK, 3>() >= CtasPerSm<T, D, BLK, 2>() ? 3 : 2;
  }();
  return stages == 3 ? Launch<T, D, BLK, 3>(p, stream) : Launch<T, D, BLK, 2>(p, stream);
}

template <typename T>
int LaunchTyped(const BlockSparseAttnParams& p, cudaStream_t stream) {
  if (p.head_dim == 64 && p.block == 64) return LaunchStages<T, 64, 64>(p, stream);
  if (p.head_dim == 64 && p.block == 128) return LaunchStages<T, 64, 128>(p, stream);
  if (p.head_dim == 128 && p.block == 64) return LaunchStages<T, 128, 64>(p, stream);
  return LaunchStages<T, 128, 128>(p, stream);
}

}  // namespace

bool TryLaunchBlockSparseAttentionV5(const BlockSparseAttnParams& params, void* stream, int* status) {
  static const bool selected = [] {
    const char* e = std::getenv("SPARSETUNE_ATTN_TILE");
    return e != nullptr && std::atoi(e) == 4;
  }();
  if (!selected) return false;
  if ((params.head_dim != 64 && params.head_dim != 128) || (params.block != 64 && params.block != 128))
    return false;
  const auto s = static_cast<cudaStream_t>(stream);
  *status = params.dtype == AttnDtype::kBFloat16 ? LaunchTyped<__nv_bfloat16>(params, s)
                                                  : LaunchTyped<__half>(params, s);
  return true;
}

}  // namespace sparsetune::cuda
