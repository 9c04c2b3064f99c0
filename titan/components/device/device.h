// The device a run uses and what we read from it: CUDA when torch has it and a GPU is
// present, else CPU; memory statistics (CUDA allocator, or resident memory on CPU) and the
// peak FLOP/s that MFU is computed against.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace titan::components {

// The peak rate MFU is computed against, and where it came from (for the log).
struct PeakFlops {
  double flops = 0;
  std::string source;
};

struct MemoryStats {
  double max_reserved_gib = 0;  // CUDA: peak reserved by the caching allocator; CPU: peak RSS
  double max_reserved_pct = 0;
  double max_active_gib = 0;
  double max_active_pct = 0;
  int64_t num_alloc_retries = 0;
  int64_t num_ooms = 0;
};

// Where measured CPU peaks are kept: $TITAN_PEAK_CACHE ("off": nowhere), else
// $XDG_CACHE_HOME/titan/cpu_peak.json, else ~/.cache/titan/cpu_peak.json.
std::string peak_cache_path();

class DeviceInfo {
 public:
  explicit DeviceInfo(at::Device device);
  at::Device device() const { return device_; }
  std::string name() const { return name_; }
  double total_memory_gib() const { return total_gib_; }
  // Peak statistics since the last reset, then resets the peaks.
  MemoryStats memory_stats_and_reset();
  // For a part of a step that measures its own peak (the pipeline schedule): the peak of memory in
  // use (CUDA: active bytes; CPU: resident) since the last reset or take, then resets it (on CUDA
  // the reserved peak too). The next memory_stats_and_reset reports the larger of its own peaks
  // and every peak taken since, so the step's peak is never hidden.
  int64_t take_peak_bytes();
  // Dense peak FLOP/s for MFU in `dtype`: a table of GPU models (torchtitan's), or on CPU the
  // best rate of square matmuls of one fixed size in that dtype, measured once per host, CPU,
  // thread count and dtype and kept in peak_cache_path() (docs/metrics.md).
  PeakFlops peak_flops(at::ScalarType dtype);
  // Whether the device computes bfloat16 natively. CPU: AVX512-BF16 or AMX-BF16 (x86), BF16
  // (Arm), enabled by the OS and not capped by ONEDNN_MAX_CPU_ISA; TITAN_CPU_NATIVE_BF16=0/1
  // overrides the answer (for tests). CUDA: true.
  bool native_bf16() const;
  // Resident memory of this process now (VmRSS), for the per-step timeline, and its peak since
  // the last reset (VmHWM; memory_stats_and_reset resets it).
  static int64_t current_resident_bytes();
  static int64_t peak_resident_bytes();

 private:
  at::Device device_;
  std::string name_;
  double total_gib_ = 0;
  int64_t taken_peak_ = 0;      // the largest take_peak_bytes since memory_stats_and_reset
  int64_t taken_reserved_ = 0;  // CUDA: the largest reserved peak those resets cleared
};

// The one way a training step reads device values on the host (docs/gpu.md "Host
// synchronisation"): every call is counted (host_reads(), for tests). On CUDA it polls the device
// and, while it waits, asks `stuck` (when given) every few milliseconds: a non-empty answer (why)
// ends the wait with std::runtime_error, so that a collective stuck on another rank ends in an error
// that the comm-failure report handles instead of a hang. A CPU tensor comes back as it is.
at::Tensor read_to_host(const at::Tensor& t, const std::function<std::string()>& stuck = {});
int64_t host_reads();
// A host tensor on `device` without waiting: on CUDA through pinned memory, copied without
// blocking (the caching host allocator keeps the pinned block until the copy is done).
at::Tensor to_device(const at::Tensor& host, at::Device device);

// Intervals of a CUDA device's current stream, timed by the device (events) and read later
// without waiting: begin() and end() mark one; collect() adds up the seconds of those the device
// has passed since the last collect and keeps the others. Does nothing on the CPU (collect: 0).
class StreamIntervals {
 public:
  explicit StreamIntervals(at::Device device) : device_(device) {}
  ~StreamIntervals();
  StreamIntervals(const StreamIntervals&) = delete;
  StreamIntervals& operator=(const StreamIntervals&) = delete;
  void begin();
  void end();  // without a begin: nothing
  double collect();

 private:
  at::Device device_;
  void* open_ = nullptr;                      // the begin event of the interval being marked
  std::vector<std::pair<void*, void*>> done_;  // marked, maybe not yet passed by the device
};

// What device selection needs of CUDA: how many GPUs this process sees, and making one the
// thread's current device (allocations, streams and kernel launches without a device guard go
// to the current device; every rank would otherwise use GPU 0). Tests pass a stand-in.
struct GpuSelector {
  virtual ~GpuSelector() = default;
  virtual int count() const = 0;
  virtual void set_current(int index) const = 0;
};
const GpuSelector& cuda_selector();  // the real one (no GPUs where CUDA code is not built)

// cuda:LOCAL_RANK, made the current device, where there are GPUs; else the CPU. titan::Error when
// LOCAL_RANK names a GPU this node does not have.
at::Device pick_device(int local_rank, const GpuSelector& gpus = cuda_selector());

// The dtype mixed precision computes (and FSDP communicates) in on a device: `requested`
// (training.mixed_precision_param), except bfloat16 on a CPU without native bf16, where it is
// emulated ~100x slower than float32: there float32 is used unless `cpu_bf16` is "always".
// `note` is the INFO line that says so ("" when nothing changed); `warning` is set when bf16
// runs emulated (forced, or `param_dtype` = training.dtype is bfloat16).
struct ComputePrecision {
  at::ScalarType dtype = at::kFloat;
  std::string note, warning;
};
ComputePrecision resolve_compute_precision(const DeviceInfo& device, at::ScalarType requested,
                                           at::ScalarType param_dtype, const std::string& cpu_bf16);

// "float32", "bfloat16", "float16": the names the config uses.
std::string dtype_name(at::ScalarType dtype);

// The CPU's own answer (no override), and what it is based on ("avx512_bf16", "amx_bf16", ...,
// or "" when it has none).
std::string cpu_bf16_feature();  // cuda:<local_rank> if a GPU is available, else cpu

// Implemented in device_cuda.cpp where CUDA code is built, else as stubs.
namespace cuda {
bool available();
int device_count();
void set_current_device(int index);
std::string device_name(int index);
double total_memory_gib(int index);
// The device's compute capability {major, minor}.
std::pair<int, int> compute_capability(int index);
MemoryStats memory_stats_and_reset(int index, double total_gib);
int64_t active_bytes(int index);  // the caching allocator's bytes in use now
// The caching allocator's peaks of active and of reserved bytes since the last reset, then resets them.
std::pair<int64_t, int64_t> peak_bytes_and_reset(int index);
// Waits for the current stream of t's device, polling; asks `stuck` every few milliseconds and
// returns its answer when that is not empty (the wait given up), else "" once the stream is done.
std::string wait_for_stream(const at::Tensor& t, const std::function<std::string()>& stuck);
// Pinned host memory of exactly `bytes` (cudaHostAlloc, freed with the tensor), uint8.
at::Tensor pinned_bytes(int64_t bytes);
}  // namespace cuda

}  // namespace titan::components
