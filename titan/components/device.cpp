#include "titan/components/device.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace titan::components {

namespace {

// /proc/self/status field in kB (VmHWM = peak RSS, VmRSS = current).
int64_t proc_status_kb(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream is(line.substr(field.size() + 1));
      int64_t kb = 0;
      is >> kb;
      return kb;
    }
  }
  return 0;
}

double mem_total_gib() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  f >> key >> kb;
  return static_cast<double>(kb) / (1024.0 * 1024.0);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "CPU";
}

}  // namespace

at::Device pick_device(int local_rank) {
  if (cuda::available()) return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
  return at::Device(at::kCPU);
}

DeviceInfo::DeviceInfo(at::Device device) : device_(device) {
  if (device.is_cuda()) {
    name_ = cuda::device_name(device.index());
    total_gib_ = cuda::total_memory_gib(device.index());
  } else {
    name_ = cpu_model();
    total_gib_ = mem_total_gib();
  }
}

MemoryStats DeviceInfo::memory_stats_and_reset() {
  if (device_.is_cuda()) return cuda::memory_stats_and_reset(device_.index(), total_gib_);
  MemoryStats s;
  s.max_reserved_gib = static_cast<double>(proc_status_kb("VmHWM")) / (1024.0 * 1024.0);
  s.max_active_gib = s.max_reserved_gib;
  s.max_reserved_pct = s.max_active_pct = 100.0 * s.max_reserved_gib / total_gib_;
  // Writing 5 to clear_refs resets the peak RSS to the current RSS (Linux >= 4.0).
  std::ofstream("/proc/self/clear_refs") << "5";
  return s;
}

int64_t DeviceInfo::current_resident_bytes() { return proc_status_kb("VmRSS") * 1024; }

double DeviceInfo::peak_flops(at::ScalarType dtype) {
  if (device_.is_cuda()) {
    const std::string& n = name_;
    auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
    if (has("A100")) return 312e12;
    if (has("H100")) return has("NVL") ? 835e12 : has("PCIe") ? 756e12 : 989e12;
    if (has("H200")) return 989e12;
    if (has("B200")) return 2.25e15;
    if (has("MI300X") || has("MI325X")) return 1300e12;
    return 312e12;  // unknown GPU: torchtitan's fallback (A100)
  }
  at::NoGradGuard no_grad;
  const int64_t n = 2048;
  auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::mm(a, b);  // warm-up
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm(a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

}  // namespace titan::components
