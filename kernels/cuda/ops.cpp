#include "kernels/cuda/ops.h"

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/block_sparse_attn.h"

#ifdef SPARSETUNE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace sparsetune::cuda {

namespace {

constexpr const char* kWhere = "BlockSparseAttentionCuda";

std::string ShapeString(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// Checks in the order rank/shape, dtype, layout, device, so that every error but the device one
// is reachable with CPU tensors (the error-path tests run without a GPU).
void CheckQkv(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const char* names[3] = {"q", "k", "v"};
  const torch::Tensor* ts[3] = {&q, &k, &v};
  for (int i = 0; i < 3; ++i) {
    if (!ts[i]->defined()) throw ShapeError(std::string(kWhere) + ": " + names[i] + " is undefined");
    if (ts[i]->dim() != 4)
      throw ShapeError(std::string(kWhere) + ": " + names[i] + " must be [B, H, N, D]; got " +
                       ShapeString(*ts[i]));
  }
  if (k.sizes() != q.sizes() || v.sizes() != q.sizes())
    throw ShapeError(std::string(kWhere) + ": q, k, v shapes differ: " + ShapeString(q) + ", " +
                     ShapeString(k) + ", " + ShapeString(v));
  if (q.size(0) < 1 || q.size(1) < 1 || q.size(2) < 1)
    throw ShapeError(std::string(kWhere) + ": empty q " + ShapeString(q));
  if (q.size(3) != 64 && q.size(3) != 128)
    throw ShapeError(std::string(kWhere) + ": head dim must be 64 or 128; got " +
                     std::to_string(q.size(3)));
  // B*H is the grid's y dimension (at most 65535).
  if (q.numel() >= (int64_t{1} << 40) || q.size(0) * q.size(1) > 65535 ||
      q.size(2) >= (int64_t{1} << 30))
    throw ShapeError(std::string(kWhere) + ": q " + ShapeString(q) + " is too large");
  const auto dt = q.scalar_type();
  if (dt != torch::kBFloat16 && dt != torch::kHalf)
    throw ShapeError(std::string(kWhere) + ": q must be bfloat16 or float16; got " +
                     std::string(c10::toString(dt)));
  if (k.scalar_type() != dt || v.scalar_type() != dt)
    throw ShapeError(std::string(kWhere) + ": q, k, v must share one dtype; got " +
                     c10::toString(dt) + ", " + c10::toString(k.scalar_type()) + ", " +
                     c10::toString(v.scalar_type()));
  for (int i = 0; i < 3; ++i)
    if (!ts[i]->is_contiguous())
      throw ShapeError(std::string(kWhere) + ": " + names[i] + " must be contiguous");
  for (int i = 0; i < 3; ++i)
    if (!ts[i]->is_cuda())
      throw ShapeError(std::string(kWhere) + ": " + names[i] + " must be on a CUDA device; got " +
                       ts[i]->device().str());
  if (k.device() != q.device() || v.device() != q.device())
    throw ShapeError(std::string(kWhere) + ": q, k, v must be on one device");
}

void CheckCsrLayout(const BlockCsr& csr, int64_t rows, const torch::Device& device) {
  if (csr.block != 64 && csr.block != 128)
    throw InputError(std::string(kWhere) + ": block must be 64 or 128 tokens; got " +
                     std::to_string(csr.block));
  if (!csr.row_ptr.defined() || !csr.col_idx.defined())
    throw ShapeError(std::string(kWhere) + ": CSR row_ptr and col_idx must be defined");
  if (csr.row_ptr.dim() != 1 || csr.row_ptr.size(0) != rows + 1)
    throw ShapeError(std::string(kWhere) + ": CSR row_ptr must be [B*H*nb + 1] = [" +
                     std::to_string(rows + 1) + "]; got " + ShapeString(csr.row_ptr));
  if (csr.col_idx.dim() != 1 || csr.col_idx.size(0) >= (int64_t{1} << 31))
    throw ShapeError(std::string(kWhere) + ": CSR col_idx must be 1-D with < 2^31 entries; got " +
                     ShapeString(csr.col_idx));
  if (csr.row_ptr.scalar_type() != torch::kInt32 || csr.col_idx.scalar_type() != torch::kInt32)
    throw ShapeError(std::string(kWhere) + ": CSR row_ptr and col_idx must be int32");
  if (!csr.row_ptr.is_contiguous() || !csr.col_idx.is_contiguous())
    throw ShapeError(std::string(kWhere) + ": CSR row_ptr and col_idx must be contiguous");
  if (csr.row_ptr.device() != device || csr.col_idx.device() != device)
    throw ShapeError(std::string(kWhere) + ": CSR row_ptr and col_idx must be on q's device " +
                     device.str());
}

// The optional row index's shape, dtype and layout: int32 [n], contiguous. Checked before q's
// device, so these errors are reachable with CPU tensors (the tests run without a GPU).
void CheckRowIndexLayout(const torch::Tensor& row_index, int64_t n) {
  if (!row_index.defined()) return;
  if (row_index.dim() != 1 || row_index.size(0) != n)
    throw ShapeError(std::string(kWhere) + ": row_index must be [N] = [" + std::to_string(n) +
                     "]; got " + ShapeString(row_index));
  if (row_index.scalar_type() != torch::kInt32)
    throw ShapeError(std::string(kWhere) + ": row_index must be int32; got " +
                     std::string(c10::toString(row_index.scalar_type())));
  if (!row_index.is_contiguous())
    throw ShapeError(std::string(kWhere) + ": row_index must be contiguous");
}

// The row index on q's device; with `validate`, also a permutation of [0, n) (one device->host
// copy).
void CheckRowIndexValues(const torch::Tensor& row_index, int64_t n, const torch::Device& device,
                         bool validate) {
  if (!row_index.defined()) return;
  if (row_index.device() != device)
    throw ShapeError(std::string(kWhere) + ": row_index must be on q's device " + device.str() +
                     "; got " + row_index.device().str());
  if (!validate) return;
  const torch::Tensor r = row_index.to(torch::kCPU);
  const int32_t* p = r.data_ptr<int32_t>();
  std::vector<char> seen(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] < 0 || p[i] >= n)
      throw ShapeError(std::string(kWhere) + ": row_index[" + std::to_string(i) + "] = " +
                       std::to_string(p[i]) + " is outside [0, " + std::to_string(n) + ")");
    if (seen[static_cast<size_t>(p[i])])
      throw ShapeError(std::string(kWhere) + ": row_index repeats row " + std::to_string(p[i]));
    seen[static_cast<size_t>(p[i])] = 1;
  }
}

}  // namespace

bool CudaKernelsBuilt() {
#ifdef SPARSETUNE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

void ValidateBlockCsr(const BlockCsr& csr, int64_t batch, int64_t heads, int64_t seq_len) {
  if (csr.block != 64 && csr.block != 128)
    throw InputError("ValidateBlockCsr: block must be 64 or 128 tokens; got " +
                     std::to_string(csr.block));
  const int64_t nb = (seq_len + csr.block - 1) / csr.block;
  const int64_t rows = batch * heads * nb;
  if (!csr.row_ptr.defined() || !csr.col_idx.defined() || csr.row_ptr.dim() != 1 ||
      csr.col_idx.dim() != 1 || csr.row_ptr.size(0) != rows + 1 ||
      csr.row_ptr.scalar_type() != torch::kInt32 || csr.col_idx.scalar_type() != torch::kInt32)
    throw ShapeError("ValidateBlockCsr: row_ptr must be int32 [" + std::to_string(rows + 1) +
                     "] and col_idx int32 [nnz]");
  const torch::Tensor rp = csr.row_ptr.to(torch::kCPU).contiguous();
  const torch::Tensor ci = csr.col_idx.to(torch::kCPU).contiguous();
  const int32_t* r = rp.data_ptr<int32_t>();
  const int32_t* c = ci.data_ptr<int32_t>();
  const int64_t nnz = ci.size(0);
  if (r[0] != 0) throw ShapeError("ValidateBlockCsr: row_ptr[0] must be 0; got " + std::to_string(r[0]));
  if (r[rows] > nnz)
    throw ShapeError("ValidateBlockCsr: row_ptr ends at " + std::to_string(r[rows]) +
                     " but col_idx has only " + std::to_string(nnz) + " entries");
  std::vector<int64_t> seen(static_cast<size_t>(nb), -1);
  for (int64_t row = 0; row < rows; ++row) {
    if (r[row + 1] < r[row])
      throw ShapeError("ValidateBlockCsr: row_ptr decreases at row " + std::to_string(row));
    if (r[row + 1] > nnz)
      throw ShapeError("ValidateBlockCsr: row " + std::to_string(row) + " ends past col_idx (" +
                       std::to_string(nnz) + " entries)");
    for (int32_t j = r[row]; j < r[row + 1]; ++j) {
      if (c[j] < 0 || c[j] >= nb)
        throw ShapeError("ValidateBlockCsr: row " + std::to_string(row) + " has key block " +
                         std::to_string(c[j]) + " outside [0, " + std::to_string(nb) + ")");
      if (seen[static_cast<size_t>(c[j])] == row)
        throw ShapeError("ValidateBlockCsr: row " + std::to_string(row) + " repeats key block " +
                         std::to_string(c[j]));
      seen[static_cast<size_t>(c[j])] = row;
    }
  }
}

void BlockSparseAttentionCudaOut(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, const BlockCsr& csr, double scale,
                                 torch::Tensor& out, torch::Tensor& lse, bool validate,
                                 const torch::Tensor& row_index) {
  if (q.defined() && q.dim() == 4) CheckRowIndexLayout(row_index, q.size(2));
  CheckQkv(q, k, v);
  if (!std::isfinite(scale) || scale <= 0.0)
    throw InputError(std::string(kWhere) + ": scale must be finite and > 0; got " +
                     std::to_string(scale));
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2);
  if (csr.block != 64 && csr.block != 128)
    throw InputError(std::string(kWhere) + ": block must be 64 or 128 tokens; got " +
                     std::to_string(csr.block));
  const int64_t nb = (n + csr.block - 1) / csr.block;
  CheckCsrLayout(csr, b * h * nb, q.device());
  if (!out.defined() || out.sizes() != q.sizes() || out.scalar_type() != q.scalar_type() ||
      !out.is_contiguous() || out.device() != q.device())
    throw ShapeError(std::string(kWhere) + ": out must be a contiguous tensor like q " +
                     ShapeString(q));
  if (!lse.defined() || lse.dim() != 3 || lse.size(0) != b || lse.size(1) != h ||
      lse.size(2) != n || lse.scalar_type() != torch::kFloat32 || !lse.is_contiguous() ||
      lse.device() != q.device())
    throw ShapeError(std::string(kWhere) + ": lse must be a contiguous float32 [B, H, N] tensor on " +
                     q.device().str());
  CheckRowIndexValues(row_index, n, q.device(), validate);
  if (validate) ValidateBlockCsr(csr, b, h, n);
#ifdef SPARSETUNE_CUDA_KERNELS
  const c10::cuda::CUDAGuard guard(q.device());
  BlockSparseAttnParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.row_ptr = csr.row_ptr.data_ptr<int32_t>();
  p.col_idx = csr.col_idx.data_ptr<int32_t>();
  p.row_index = row_index.defined() ? row_index.data_ptr<int32_t>() : nullptr;
  p.nnz = static_cast<int32_t>(csr.col_idx.size(0));
  p.batch = static_cast<int32_t>(b);
  p.heads = static_cast<int32_t>(h);
  p.seq_len = static_cast<int32_t>(n);
  p.head_dim = static_cast<int32_t>(q.size(3));
  p.block = static_cast<int32_t>(csr.block);
  p.scale = static_cast<float>(scale);
  p.dtype = q.scalar_type() == torch::kBFloat16 ? AttnDtype::kBFloat16 : AttnDtype::kFloat16;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  const int err = LaunchBlockSparseAttention(p, stream);
  if (err != 0)
    throw RunError(std::string(kWhere) + ": kernel launch failed: " +
                   cudaGetErrorString(static_cast<cudaError_t>(err)));
#else
  throw RunError(std::string(kWhere) + ": this build has no CUDA kernels (configure with nvcc)");
#endif
}

AttentionOutput BlockSparseAttentionCuda(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v, const BlockCsr& csr,
                                         double scale, bool validate,
                                         const torch::Tensor& row_index) {
  if (q.defined() && q.dim() == 4) CheckRowIndexLayout(row_index, q.size(2));
  CheckQkv(q, k, v);
  AttentionOutput res;
  res.out = torch::empty_like(q);
  res.lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(torch::kFloat32));
  BlockSparseAttentionCudaOut(q, k, v, csr, scale, res.out, res.lse, validate, row_index);
  return res;
}

BlockCsr DenseBlockCsr(int64_t batch, int64_t heads, int64_t seq_len, int64_t block,
                       const torch::Device& device) {
  if (block != 64 && block != 128)
    throw InputError("DenseBlockCsr: block must be 64 or 128 tokens; got " + std::to_string(block));
  if (batch < 1 || heads < 1 || seq_len < 1)
    throw InputError("DenseBlockCsr: batch, heads and seq_len must be >= 1");
  const int64_t nb = (seq_len + block - 1) / block;
  const int64_t rows = batch * heads * nb;
  const auto opts = torch::TensorOptions().dtype(torch::kInt32).device(device);
  BlockCsr csr;
  csr.block = block;
  csr.row_ptr = torch::arange(0, (rows + 1) * nb, nb, opts);
  csr.col_idx = torch::arange(nb, opts).repeat({rows});
  return csr;
}

AttentionOutput DenseAttentionCuda(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& v, double scale, int64_t block) {
  CheckQkv(q, k, v);
  return BlockSparseAttentionCuda(q, k, v,
                                  DenseBlockCsr(q.size(0), q.size(1), q.size(2), block, q.device()),
                                  scale);
}

BlockCsr BlockCsrFromMask(const torch::Tensor& mask, int64_t block) {
  if (block != 64 && block != 128)
    throw InputError("BlockCsrFromMask: block must be 64 or 128 tokens; got " + std::to_string(block));
  if (!mask.defined() || mask.dim() != 4 || mask.size(2) != mask.size(3) ||
      mask.scalar_type() != torch::kBool)
    throw ShapeError("BlockCsrFromMask: mask must be bool [B, H, nb, nb]");
  const auto opts = torch::TensorOptions().dtype(torch::kInt32).device(mask.device());
  const torch::Tensor counts = mask.reshape({-1, mask.size(3)}).sum(1).to(torch::kInt32);
  BlockCsr csr;
  csr.block = block;
  csr.row_ptr = torch::cat({torch::zeros({1}, opts), counts.cumsum(0).to(torch::kInt32)});
  csr.col_idx = mask.reshape({-1, mask.size(3)}).nonzero().select(1, 1).to(torch::kInt32).contiguous();
  return csr;
}

}  // namespace sparsetune::cuda
