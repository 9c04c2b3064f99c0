// Stand-ins for the CUDA parts of device.h where no CUDA code is built: no GPU is ever used.
#include "titan/components/device/device.h"

namespace titan::components {

StreamIntervals::~StreamIntervals() = default;
void StreamIntervals::begin() {}
void StreamIntervals::end() {}
double StreamIntervals::collect() { return 0; }

}  // namespace titan::components

namespace titan::components::cuda {

bool available() { return false; }
int device_count() { return 0; }
void set_current_device(int) {}
std::string device_name(int) { return "none"; }
std::pair<int, int> compute_capability(int) { return {0, 0}; }
double total_memory_gib(int) { return 0; }
MemoryStats memory_stats_and_reset(int, double) { return {}; }
int64_t active_bytes(int) { return 0; }
std::pair<int64_t, int64_t> peak_bytes_and_reset(int) { return {0, 0}; }
std::string wait_for_stream(const at::Tensor&, const std::function<std::string()>&) { return ""; }
at::Tensor pinned_bytes(int64_t bytes) { return at::empty({bytes}, at::kByte); }

}  // namespace titan::components::cuda

#include "titan/components/metrics/profiling.h"

namespace titan::components::cuda {

void record_memory_history(bool) {}
std::string memory_snapshot_pickle() { return {}; }

}  // namespace titan::components::cuda
