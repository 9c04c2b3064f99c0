#include "titan/components/device/device.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>
#include <utility>

#include <ATen/Parallel.h>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/common/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

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

#if defined(__x86_64__) || defined(__i386__)
uint64_t xgetbv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

// oneDNN runs bf16 matmuls natively only when its ISA cap allows the bf16 instructions.
bool onednn_isa_allows_bf16() {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (!cap || !*cap) cap = std::getenv("DNNL_MAX_CPU_ISA");
  if (!cap || !*cap) return true;
  std::string v(cap);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return std::toupper(ch); });
  for (const char* below : {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                            "AVX512_MIC", "AVX512_MIC_4OPS", "DEFAULT"})
    if (v == below) return false;
  return true;
}

}  // namespace

std::string cpu_bf16_feature() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return "";  // no OSXSAVE: no xgetbv
  const uint64_t xcr0 = xgetbv0();
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "";
  const unsigned max_subleaf = a;
  const bool amx_bf16 = (d >> 22) & 1u;
  bool avx512_bf16 = false;
  if (max_subleaf >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512_bf16 = (a >> 5) & 1u;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;              // XMM, YMM, opmask, ZMM halves
  const bool tile_state = (xcr0 & (3ull << 17)) == (3ull << 17);  // AMX tile config and data
  if (amx_bf16 && tile_state) return "amx_bf16";
  if (avx512_bf16 && zmm_state) return "avx512_bf16";
  return "";
#elif defined(__aarch64__) && defined(__linux__)
  constexpr unsigned long kHwcap2Bf16 = 1ul << 14;
  return (getauxval(AT_HWCAP2) & kHwcap2Bf16) ? "bf16" : "";
#else
  return "";
#endif
}

namespace {
struct CudaSelector final : GpuSelector {
  int count() const override { return cuda::device_count(); }
  void set_current(int index) const override { cuda::set_current_device(index); }
};
}  // namespace

const GpuSelector& cuda_selector() {
  static const CudaSelector selector;
  return selector;
}

at::Device pick_device(int local_rank, const GpuSelector& gpus) {
  const int n = gpus.count();
  if (n <= 0) return at::Device(at::kCPU);
  if (local_rank < 0 || local_rank >= n)
    throw Error("LOCAL_RANK " + std::to_string(local_rank) + " names a GPU this node does not have (it sees " +
                    std::to_string(n) + ")",
                "start at most one process per visible GPU (torchrun --nproc_per_node, CUDA_VISIBLE_DEVICES)");
  gpus.set_current(local_rank);
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
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
  constexpr double kGib = 1024.0 * 1024.0 * 1024.0;
  const double taken_gib = static_cast<double>(std::exchange(taken_peak_, 0)) / kGib;
  const double taken_reserved_gib = static_cast<double>(std::exchange(taken_reserved_, 0)) / kGib;
  MemoryStats s;
  if (device_.is_cuda()) {
    s = cuda::memory_stats_and_reset(device_.index(), total_gib_);
    s.max_active_gib = std::max(s.max_active_gib, taken_gib);
    s.max_reserved_gib = std::max(s.max_reserved_gib, taken_reserved_gib);
    s.max_active_pct = total_gib_ > 0 ? 100.0 * s.max_active_gib / total_gib_ : 0;
    s.max_reserved_pct = total_gib_ > 0 ? 100.0 * s.max_reserved_gib / total_gib_ : 0;
    return s;
  }
  s.max_reserved_gib = std::max(static_cast<double>(proc_status_kb("VmHWM")) / (1024.0 * 1024.0), taken_gib);
  s.max_active_gib = s.max_reserved_gib;
  s.max_reserved_pct = s.max_active_pct = 100.0 * s.max_reserved_gib / total_gib_;
  // Writing 5 to clear_refs resets the peak RSS to the current RSS (Linux >= 4.0).
  std::ofstream("/proc/self/clear_refs") << "5";
  return s;
}

int64_t DeviceInfo::take_peak_bytes() {
  int64_t peak;
  if (device_.is_cuda()) {
    const auto [active, reserved] = cuda::peak_bytes_and_reset(device_.index());
    peak = active;
    taken_reserved_ = std::max(taken_reserved_, reserved);
  } else {
    peak = peak_resident_bytes();
    std::ofstream("/proc/self/clear_refs") << "5";
  }
  taken_peak_ = std::max(taken_peak_, peak);
  return peak;
}

namespace {
std::atomic<int64_t> g_host_reads{0};
}  // namespace

int64_t host_reads() { return g_host_reads.load(); }

at::Tensor read_to_host(const at::Tensor& t, const std::function<std::string()>& stuck) {
  g_host_reads.fetch_add(1);
  if (!t.is_cuda()) return t.cpu();
  // The copy waits in the stream behind the work that computes t; the host waits for it here, with a
  // deadline, instead of inside a blocking copy.
  at::Tensor host = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  host.copy_(t, /*non_blocking=*/true);
  if (const std::string why = cuda::wait_for_stream(t, stuck); !why.empty()) throw std::runtime_error(why);
  return host;
}

at::Tensor to_device(const at::Tensor& host, at::Device device) {
  if (!device.is_cuda()) return host.to(device);
  return (host.is_pinned() ? host : host.pin_memory()).to(device, /*non_blocking=*/true);
}

int64_t DeviceInfo::current_resident_bytes() { return proc_status_kb("VmRSS") * 1024; }
int64_t DeviceInfo::peak_resident_bytes() { return proc_status_kb("VmHWM") * 1024; }

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: return c10::toString(dtype);
  }
}

ComputePrecision resolve_compute_precision(const DeviceInfo& device, at::ScalarType requested,
                                           at::ScalarType param_dtype, const std::string& cpu_bf16) {
  ComputePrecision p{requested, "", ""};
  if (device.device().is_cuda() || device.native_bf16()) return p;
  const std::string cpu = "this CPU (" + device.name() + ") has no native bf16 (AVX512-BF16 or AMX)";
  if (param_dtype == at::kBFloat16) {
    p.dtype = at::kBFloat16;
    p.warning = "training.dtype = \"bfloat16\" but " + cpu +
                ": every matmul is emulated, about 100x slower than float32. Use training.dtype = \"float32\" "
                "on this machine";
    return p;
  }
  if (requested != at::kBFloat16) return p;
  if (cpu_bf16 == "always") {
    p.warning = "training.cpu_bf16 = \"always\": computing in bfloat16 although " + cpu +
                "; matmuls are emulated, about 100x slower than float32";
    return p;
  }
  p.dtype = at::kFloat;
  p.note = "Mixed precision: " + cpu + ", where bf16 matmuls are emulated about 100x slower than float32; "
           "computing and communicating in float32 instead of training.mixed_precision_param = \"bfloat16\" "
           "(--training.cpu_bf16 always forces bf16)";
  return p;
}

bool DeviceInfo::native_bf16() const {
  if (device_.is_cuda()) return true;
  if (const char* force = std::getenv("TITAN_CPU_NATIVE_BF16"); force && *force) return std::string(force) != "0";
  return !cpu_bf16_feature().empty() && onednn_isa_allows_bf16();
}

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown host";
  return buf;
}

}  // namespace

std::string peak_cache_path() {
  if (const char* p = std::getenv("TITAN_PEAK_CACHE")) return std::string(p) == "off" ? "" : p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/titan/cpu_peak.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/titan/cpu_peak.json";
  return "";
}

PeakFlops DeviceInfo::peak_flops(at::ScalarType dtype) {
  if (device_.is_cuda()) {
    const std::string& n = name_;
    auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
    auto table = [&](double flops) { return PeakFlops{flops, "bf16 dense peak of " + n + ", from the table of known GPUs"}; };
    if (dtype == at::kFloat) {
      // float32 matmuls run as float32 (TF32 is off, as PyTorch's default): the float32 peak, where known.
      auto fp32 = [&](double flops) { return PeakFlops{flops, "float32 peak of " + n + ", from the table of known GPUs"}; };
      if (has("A100")) return fp32(19.5e12);
      if (has("H100")) return fp32(has("NVL") ? 60e12 : has("PCIe") ? 51e12 : 67e12);
      if (has("H200")) return fp32(67e12);
    }
    if (has("A100")) return table(312e12);
    if (has("H100")) return table(has("NVL") ? 835e12 : has("PCIe") ? 756e12 : 989e12);
    if (has("H200")) return table(989e12);
    if (has("B200")) return table(2.25e15);
    if (has("MI300X") || has("MI325X")) return table(1300e12);
    return {312e12, n + " is not in the table of known GPUs: A100's bf16 peak, as torchtitan"};
  }
  // One fixed size per dtype, so that every run measures the same thing: 1024 x 1024 matmuls,
  // or 256 x 256 where bf16 is emulated (about 100x slower); the best of repetitions over a
  // quarter of a second. Kept per host, CPU, thread count and dtype in a small cache file.
  const int threads = at::get_num_threads();
  const std::string key = host_name() + " | " + name_ + " | " + std::to_string(threads) + " threads | " + dtype_name(dtype);
  const std::string cache = peak_cache_path();
  nlohmann::json entries = nlohmann::json::object();
  if (!cache.empty()) {
    try {
      std::ifstream f(cache);
      if (f) entries = nlohmann::json::parse(f);
      if (!entries.is_object()) entries = nlohmann::json::object();
    } catch (const std::exception&) {
      entries = nlohmann::json::object();  // a damaged cache is measured again and rewritten
    }
    if (entries.contains(key) && entries[key].is_object() && entries[key].value("flops", 0.0) > 0)
      return {entries[key]["flops"].get<double>(),
              dtype_name(dtype) + " " + entries[key].value("size", std::string("?")) + " matmul measured on this CPU with " +
                  std::to_string(threads) + " threads on " + entries[key].value("measured", std::string("?")) +
                  ", read from " + cache + " (delete it to measure again)"};
  }
  at::NoGradGuard no_grad;
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto opts = at::TensorOptions().dtype(dtype);
  const int64_t n = dtype == at::kBFloat16 && !native_bf16() ? 256 : 1024;
  at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts), c = at::empty({n, n}, opts);
  at::mm_out(c, a, b);  // set-up of the BLAS and its threads
  const auto start = Clock::now();
  double best = 0;
  for (int rep = 0; rep < 2 || (seconds_since(start) < 0.25 && rep < 1000); ++rep) {
    const auto t0 = Clock::now();
    at::mm_out(c, a, b);
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / std::max(seconds_since(t0), 1e-9));
  }
  const std::string size = std::to_string(n) + "x" + std::to_string(n);
  std::string source = dtype_name(dtype) + " " + size + " matmul measured on this CPU with " + std::to_string(threads) +
                       " threads in " + log::format("%.2f", seconds_since(start)) + " s";
  if (!cache.empty()) {
    const std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M", std::localtime(&now));
    entries[key] = {{"flops", best}, {"size", size}, {"measured", date}};
    try {
      std::filesystem::create_directories(std::filesystem::path(cache).parent_path());
      write_file_atomically(cache, entries.dump(1) + "\n");
      source += ", kept in " + cache;
    } catch (const std::exception& e) {
      log::warning(std::string("cannot keep the measured peak in ") + cache + ": " + e.what());
    }
  }
  return {best, source};
}

}  // namespace titan::components
