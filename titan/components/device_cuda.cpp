// CUDA parts of device.h. Built only where torch has CUDA and a CUDA toolkit is present;
// device_nocuda.cpp provides the same functions otherwise.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include "titan/components/device.h"

namespace titan::components::cuda {

bool available() { return c10::cuda::device_count() > 0; }
int device_count() { return c10::cuda::device_count(); }
void set_current_device(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

std::string device_name(int index) {
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name;
}

double total_memory_gib(int index) {
  const auto* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  return static_cast<double>(prop->totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
}

MemoryStats memory_stats_and_reset(int index, double total_gib) {
  using c10::CachingAllocator::StatType;
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  const auto agg = static_cast<size_t>(StatType::AGGREGATE);
  MemoryStats s;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  s.max_reserved_gib = static_cast<double>(stats.reserved_bytes[agg].peak) / gib;
  s.max_active_gib = static_cast<double>(stats.active_bytes[agg].peak) / gib;
  s.max_reserved_pct = total_gib > 0 ? 100.0 * s.max_reserved_gib / total_gib : 0;
  s.max_active_pct = total_gib > 0 ? 100.0 * s.max_active_gib / total_gib : 0;
  s.num_alloc_retries = stats.num_alloc_retries;
  s.num_ooms = stats.num_ooms;
  c10::cuda::CUDACachingAllocator::resetPeakStats(index);
  return s;
}

int64_t active_bytes(int index) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  return stats.active_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
}

}  // namespace titan::components::cuda

#include <torch/csrc/cuda/memory_snapshot.h>

#include "titan/components/profiling.h"

namespace titan::components::cuda {

void record_memory_history(bool enabled) {
  // Keep the last 100,000 allocation events, as torchtitan does.
  torch::cuda::_record_memory_history(enabled ? std::optional<std::string>("all") : std::nullopt, "all", "all", 100000);
}

std::string memory_snapshot_pickle() { return torch::cuda::_memory_snapshot_pickled(); }

}  // namespace titan::components::cuda
