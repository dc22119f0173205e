// A known device op for the [cuda] profiler test: c = a + b on float vectors, preceded by a
// memset of c. Plain C++ interface (vector_add.cu holds the CUDA code).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetune::test {

// Number of CUDA devices; 0 with `why` set when there are none or the runtime fails.
int CudaDeviceCount(std::string* why);

class VectorAdd {
 public:
  // Allocates and fills a and b with seeded random values on the device. Throws
  // std::runtime_error naming the CUDA call that failed.
  VectorAdd(int n, uint32_t seed);
  ~VectorAdd();
  VectorAdd(const VectorAdd&) = delete;
  VectorAdd& operator=(const VectorAdd&) = delete;

  // Enqueues cudaMemsetAsync(c) and the add kernel on the default stream.
  void run();
  // Waits for the device.
  void sync();
  // Largest |c - (a + b)| over the vector, read back from the device.
  double max_error();
  int64_t bytes() const { return static_cast<int64_t>(n_) * 4; }

 private:
  int n_;
  float* a_ = nullptr;
  float* b_ = nullptr;
  float* c_ = nullptr;
  std::vector<float> host_a_;
  std::vector<float> host_b_;
};

// Two single-block kernels that each spin for `cycles` GPU clocks, on two non-blocking streams,
// so that they can run at the same time.
class TwoStreamSpin {
 public:
  explicit TwoStreamSpin(int64_t cycles);
  ~TwoStreamSpin();
  TwoStreamSpin(const TwoStreamSpin&) = delete;
  TwoStreamSpin& operator=(const TwoStreamSpin&) = delete;
  void run();

 private:
  int64_t cycles_;
  void* streams_[2] = {nullptr, nullptr};  // cudaStream_t, kept opaque for plain C++ callers
};

}  // namespace sparsetune::test
