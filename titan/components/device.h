// The device a run uses and what we read from it: CUDA when torch has it and a GPU is
// present, else CPU; memory statistics (CUDA allocator, or resident memory on CPU) and the
// peak FLOP/s that MFU is computed against.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>

namespace titan::components {

struct MemoryStats {
  double max_reserved_gib = 0;  // CUDA: peak reserved by the caching allocator; CPU: peak RSS
  double max_reserved_pct = 0;
  double max_active_gib = 0;
  double max_active_pct = 0;
  int64_t num_alloc_retries = 0;
  int64_t num_ooms = 0;
};

class DeviceInfo {
 public:
  explicit DeviceInfo(at::Device device);
  at::Device device() const { return device_; }
  std::string name() const { return name_; }
  double total_memory_gib() const { return total_gib_; }
  // Peak statistics since the last reset, then resets the peaks.
  MemoryStats memory_stats_and_reset();
  // Dense peak FLOP/s for MFU in `dtype`: a table of GPU models (torchtitan's), or on CPU the
  // best rate of a measured 2048x2048 matmul in that dtype (see docs/metrics.md).
  double peak_flops(at::ScalarType dtype);
  // Resident memory of this process now (VmRSS), for the per-step timeline.
  static int64_t current_resident_bytes();

 private:
  at::Device device_;
  std::string name_;
  double total_gib_ = 0;
};

at::Device pick_device(int local_rank);  // cuda:<local_rank> if a GPU is available, else cpu

// Implemented in device_cuda.cpp where CUDA code is built, else as stubs.
namespace cuda {
bool available();
std::string device_name(int index);
double total_memory_gib(int index);
MemoryStats memory_stats_and_reset(int index, double total_gib);
}  // namespace cuda

}  // namespace titan::components
