#include "titan/components/metrics/profiling.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <filesystem>
#include <fstream>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan::components {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

namespace {

std::set<ActivityType> activities(at::Device device) {
  std::set<ActivityType> a{ActivityType::CPU};
  if (device.is_cuda()) a.insert(ActivityType::CUDA);
  return a;
}

std::filesystem::path step_dir(const std::string& folder, const std::string& name) {
  std::filesystem::path dir = std::filesystem::path(folder) / name;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + dir.string() + ": " + ec.message(), "check that job.dump_folder is writable");
  return dir;
}

}  // namespace

Profiler::Profiler(const ProfilingOptions& o, int rank, at::Device device) : rank_(rank), device_(device) {
  enabled_ = o.enable_profiling;
  freq_ = o.profile_freq;
  warmup_ = o.profiler_warmup;
  active_ = o.profiler_active;
  folder_ = o.traces_folder;
  if (!enabled_) return;
  if (warmup_ + active_ > freq_)
    throw Error("profiling.profile_freq = " + std::to_string(freq_) + " is smaller than profiler_warmup + profiler_active (" +
                    std::to_string(warmup_ + active_) + ")",
                "raise profile_freq or lower the warm-up and active steps");
  if (active_ < 1) throw Error("profiling.profiler_active must be >= 1");
  log::info("Profiling active. Traces will be saved at " + folder_);
}

Profiler::~Profiler() {
  if (recording_) prof::disableProfiler();
}

// torchtitan's schedule over each window of profile_freq steps: wait, warm up, record `active`
// steps; the trace is named after the window's last step.
void Profiler::step_begin(int64_t step) {
  if (!enabled_) return;
  const int64_t phase = (step - 1) % freq_;
  const int64_t wait = freq_ - warmup_ - active_;
  ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true, /*profile_memory=*/false,
                        /*with_stack=*/false, /*with_flops=*/false, /*with_modules=*/false);
  if (phase == wait && warmup_ > 0) prof::prepareProfiler(config, activities(device_));
  if (phase == wait + warmup_) {
    if (warmup_ == 0) prof::prepareProfiler(config, activities(device_));
    prof::enableProfiler(config, activities(device_), {at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE,
                                                       at::RecordScope::BACKWARD_FUNCTION});
    recording_ = true;
  }
}

void Profiler::step_end(int64_t step) {
  if (!enabled_ || !recording_ || step % freq_ != 0) return;
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  recording_ = false;
  const auto dir = step_dir(folder_, "iteration_" + std::to_string(step));
  const auto file = dir / ("rank" + std::to_string(rank_) + "_trace.json");
  result->save(file.string());
  log::info("Saved the profiler trace of step " + std::to_string(step) + " to " + file.string());
}

MemorySnapshotter::MemorySnapshotter(const ProfilingOptions& o, int rank, at::Device device) : rank_(rank) {
  freq_ = o.profile_freq;
  folder_ = o.memory_snapshot_folder;
  if (!o.enable_memory_snapshot) return;
  if (!device.is_cuda()) {
    log::info("Memory snapshots are CUDA allocator snapshots; on the CPU the per-step resident memory is in "
              "metrics.jsonl (rss_gib)");
    return;
  }
  enabled_ = true;
  cuda::record_memory_history(true);
  log::info("Memory profiling active. Snapshots will be saved at " + folder_);
}

void MemorySnapshotter::dump(const std::string& dir_name) {
  const auto file = step_dir(folder_, dir_name) / ("rank" + std::to_string(rank_) + "_memory_snapshot.pickle");
  std::ofstream(file, std::ios::binary) << cuda::memory_snapshot_pickle();
  log::info("Dumped the memory snapshot to " + file.string());
}

void MemorySnapshotter::step_end(int64_t step) {
  if (enabled_ && step % freq_ == 0) dump("iteration_" + std::to_string(step));
}

void MemorySnapshotter::on_oom(int64_t step) {
  // Named after the last completed step, as torchtitan does (an OOM in step 1 -> iteration_0_exit).
  if (enabled_) dump("iteration_" + std::to_string(step - 1) + "_exit");
}

}  // namespace titan::components
