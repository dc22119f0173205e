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

}  // namespace sparsetune::test
