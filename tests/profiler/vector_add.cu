// The known op of the [cuda] profiler test (vector_add.h).
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <stdexcept>

#include "tests/profiler/vector_add.h"

namespace sparsetune::test {
namespace {

__global__ void sparsetune_test_vector_add(const float* a, const float* b, float* c, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

__global__ void sparsetune_test_spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

void Check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(status));
  }
}

}  // namespace

int CudaDeviceCount(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    *why = cudaGetErrorString(status);
    return 0;
  }
  if (count == 0) *why = "cudaGetDeviceCount found none";
  return count;
}

VectorAdd::VectorAdd(int n, uint32_t seed) : n_(n), host_a_(n), host_b_(n) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  for (int i = 0; i < n; ++i) {
    host_a_[i] = dist(rng);
    host_b_[i] = dist(rng);
  }
  const size_t size = static_cast<size_t>(n) * sizeof(float);
  Check(cudaMalloc(&a_, size), "cudaMalloc");
  Check(cudaMalloc(&b_, size), "cudaMalloc");
  Check(cudaMalloc(&c_, size), "cudaMalloc");
  Check(cudaMemcpy(a_, host_a_.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy");
  Check(cudaMemcpy(b_, host_b_.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy");
}

VectorAdd::~VectorAdd() {
  cudaFree(a_);
  cudaFree(b_);
  cudaFree(c_);
}

void VectorAdd::run() {
  Check(cudaMemsetAsync(c_, 0, static_cast<size_t>(n_) * sizeof(float)), "cudaMemsetAsync");
  const int threads = 256;
  sparsetune_test_vector_add<<<(n_ + threads - 1) / threads, threads>>>(a_, b_, c_, n_);
  Check(cudaGetLastError(), "vector add launch");
}

void VectorAdd::sync() { Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

double VectorAdd::max_error() {
  std::vector<float> c(static_cast<size_t>(n_));
  Check(cudaMemcpy(c.data(), c_, c.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  double worst = 0;
  for (int i = 0; i < n_; ++i) {
    worst = std::fmax(worst, std::fabs(static_cast<double>(c[i]) - (host_a_[i] + host_b_[i])));
  }
  return worst;
}

TwoStreamSpin::TwoStreamSpin(int64_t cycles) : cycles_(cycles) {
  for (void*& s : streams_) {
    cudaStream_t stream = nullptr;
    Check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    s = stream;
  }
}

TwoStreamSpin::~TwoStreamSpin() {
  for (void* s : streams_) cudaStreamDestroy(static_cast<cudaStream_t>(s));
}

void TwoStreamSpin::run() {
  for (void* s : streams_) {
    sparsetune_test_spin<<<1, 32, 0, static_cast<cudaStream_t>(s)>>>(cycles_);
    Check(cudaGetLastError(), "spin launch");
  }
}

}  // namespace sparsetune::test
