// CUDA parts of device.h. Built only where torch has CUDA and a CUDA toolkit is present;
// device_nocuda.cpp provides the same functions otherwise.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <thread>

#include "titan/components/device/device.h"

namespace titan::components {

namespace {
cudaEvent_t record_on_current_stream(at::Device d) {
  c10::cuda::CUDAGuard guard(d);
  cudaEvent_t e;
  C10_CUDA_CHECK(cudaEventCreate(&e));
  C10_CUDA_CHECK(cudaEventRecord(e, c10::cuda::getCurrentCUDAStream(d.index()).stream()));
  return e;
}
void destroy(void* e) {
  if (e) (void)cudaEventDestroy(static_cast<cudaEvent_t>(e));
}
}  // namespace

StreamIntervals::~StreamIntervals() {
  destroy(open_);
  for (auto& [a, b] : done_) destroy(a), destroy(b);
}

void StreamIntervals::begin() {
  if (!device_.is_cuda()) return;
  destroy(open_);  // a begin without its end (the step failed in between)
  open_ = record_on_current_stream(device_);
}

void StreamIntervals::end() {
  if (!device_.is_cuda() || !open_) return;
  done_.emplace_back(std::exchange(open_, nullptr), record_on_current_stream(device_));
}

double StreamIntervals::collect() {
  double seconds = 0;
  std::erase_if(done_, [&](auto& pair) {
    auto* b = static_cast<cudaEvent_t>(pair.second);
    if (cudaEventQuery(b) != cudaSuccess) return false;  // not yet passed (or failed: kept, never waited for)
    float ms = 0;
    if (cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(pair.first), b) == cudaSuccess) seconds += ms / 1000.0;
    destroy(pair.first), destroy(pair.second);
    return true;
  });
  (void)cudaGetLastError();  // a query of an unfinished event is not an error to keep
  return seconds;
}

}  // namespace titan::components

namespace titan::components::cuda {

bool available() { return c10::cuda::device_count() > 0; }
int device_count() { return c10::cuda::device_count(); }
void set_current_device(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

std::string device_name(int index) {
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name;
}

std::pair<int, int> compute_capability(int index) {
  const auto* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  return {prop->major, prop->minor};
}

double total_memory_gib(int index) {
  const auto* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  return static_cast<double>(prop->totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
}

std::pair<int64_t, int64_t> peak_bytes_and_reset(int index) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  c10::cuda::CUDACachingAllocator::resetPeakStats(index);
  const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return {stats.active_bytes[agg].peak, stats.reserved_bytes[agg].peak};
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

std::string wait_for_stream(const at::Tensor& t, const std::function<std::string()>& stuck) {
  c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  cudaEvent_t done;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  C10_CUDA_CHECK(cudaEventRecord(done, stream));
  auto pause = std::chrono::microseconds(5);
  auto next_ask = std::chrono::steady_clock::now();
  cudaError_t state;
  while ((state = cudaEventQuery(done)) == cudaErrorNotReady) {
    if (stuck && std::chrono::steady_clock::now() >= next_ask) {
      if (std::string why = stuck(); !why.empty()) {
        (void)cudaEventDestroy(done);
        (void)cudaGetLastError();
        return why;
      }
      next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
  (void)cudaEventDestroy(done);
  C10_CUDA_CHECK(state);
  return "";
}

at::Tensor pinned_bytes(int64_t bytes) {
  void* p = nullptr;
  if (bytes > 0) C10_CUDA_CHECK(cudaHostAlloc(&p, static_cast<size_t>(bytes), cudaHostAllocDefault));
  return at::from_blob(p, {bytes}, [](void* q) { if (q) (void)cudaFreeHost(q); },
                       at::TensorOptions().dtype(at::kByte).pinned_memory(true));
}

}  // namespace titan::components::cuda

#include <torch/csrc/cuda/memory_snapshot.h>

#include "titan/components/metrics/profiling.h"

namespace titan::components::cuda {

void record_memory_history(bool enabled) {
  // Keep the last 100,000 allocation events, as torchtitan does.
  torch::cuda::_record_memory_history(enabled ? std::optional<std::string>("all") : std::nullopt, "all", "all", 100000);
}

std::string memory_snapshot_pickle() { return torch::cuda::_memory_snapshot_pickled(); }

}  // namespace titan::components::cuda
