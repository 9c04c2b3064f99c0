// Profiler traces and memory snapshots on torchtitan's schedule. Traces come from libtorch's
// Kineto profiler (CPU ops, and CUDA kernels on a GPU) as Chrome-trace JSON, one file per rank
// per profiled window: <dump>/<save_traces_folder>/iteration_<N>/rank<R>_trace.json.
// Memory snapshots (CUDA caching allocator history, as torch.cuda.memory._snapshot pickles)
// go to <dump>/<save_memory_snapshot_folder>/iteration_<N>/rank<R>_memory_snapshot.pickle,
// and to iteration_<N-1>_exit on an out-of-memory error in step N.
#pragma once

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <string>


namespace titan::components {

// A named range in the trace (forward, backward, optimizer, data_loading, comm ops, ...).
#define TITAN_RANGE(name) RECORD_USER_SCOPE(name)

// The profiling.* settings a run uses (train/options.h builds them from the job config).
struct ProfilingOptions {
  bool enable_profiling = false;
  int64_t profile_freq = 10;
  int64_t profiler_warmup = 3;
  int64_t profiler_active = 1;
  std::string traces_folder;           // job.dump_folder / profiling.save_traces_folder
  bool enable_memory_snapshot = false;
  std::string memory_snapshot_folder;  // job.dump_folder / profiling.save_memory_snapshot_folder
};

class Profiler {
 public:
  Profiler(const ProfilingOptions& options, int rank, at::Device device);
  ~Profiler();
  void step_begin(int64_t step);  // call before training step `step` (1-based)
  void step_end(int64_t step);    // after it: writes the trace when a window closes
  bool enabled() const { return enabled_; }

 private:
  bool enabled_ = false;
  bool recording_ = false;
  int rank_;
  at::Device device_;
  int64_t freq_, warmup_, active_;
  std::string folder_;
};

class MemorySnapshotter {
 public:
  MemorySnapshotter(const ProfilingOptions& options, int rank, at::Device device);
  void step_end(int64_t step);        // dumps every profile_freq steps
  void on_oom(int64_t step);          // OOM in `step`: dumps to iteration_<step-1>_exit
  bool enabled() const { return enabled_; }

 private:
  void dump(const std::string& dir_name);
  bool enabled_ = false;
  int rank_;
  int64_t freq_;
  std::string folder_;
};

// Implemented in device_cuda.cpp (no-ops where CUDA code is not built).
namespace cuda {
void record_memory_history(bool enabled);
std::string memory_snapshot_pickle();
}  // namespace cuda

}  // namespace titan::components
