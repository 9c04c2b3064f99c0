// Precision that fits the machine: native-bf16 detection, the compute dtype chosen from it, a
// peak-rate measurement that is quick in any dtype, and MFU that never exceeds 100%.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "titan/train/options.h"
#include "titan/components/device/device.h"
#include "titan/components/metrics/metrics.h"
#include "titan/config/job_config.h"

using namespace titan;
using namespace titan::components;

namespace {

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string cpu_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) return line + " ";
  return "";
}

}  // namespace

TEST(Precision, NativeBf16DetectionAgreesWithTheKernel) {
  const std::string flags = cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags on this system";
  const bool kernel_says = flags.find(" avx512_bf16 ") != std::string::npos ||
                           flags.find(" amx_bf16 ") != std::string::npos || flags.find(" bf16 ") != std::string::npos;
  EXPECT_EQ(!cpu_bf16_feature().empty(), kernel_says) << "cpuid says '" << cpu_bf16_feature() << "'";
  ScopedEnv no_override("TITAN_CPU_NATIVE_BF16", nullptr);
  ScopedEnv no_cap("ONEDNN_MAX_CPU_ISA", nullptr);
  DeviceInfo cpu(at::Device(at::kCPU));
  EXPECT_EQ(cpu.native_bf16(), kernel_says);
  // oneDNN capped below its bf16 instructions emulates bf16 even on a CPU that has them.
  ScopedEnv cap("ONEDNN_MAX_CPU_ISA", "AVX2");
  EXPECT_FALSE(cpu.native_bf16());
}

TEST(Precision, Bf16BecomesFloat32OnlyWhereItWouldBeEmulated) {
  DeviceInfo cpu(at::Device(at::kCPU));
  {
    ScopedEnv emulated("TITAN_CPU_NATIVE_BF16", "0");
    auto p = resolve_compute_precision(cpu, at::kBFloat16, at::kFloat, "auto");
    EXPECT_EQ(p.dtype, at::kFloat);
    EXPECT_NE(p.note.find("no native bf16"), std::string::npos) << p.note;
    EXPECT_NE(p.note.find("--training.cpu_bf16 always"), std::string::npos) << p.note;
    EXPECT_TRUE(p.warning.empty());
    p = resolve_compute_precision(cpu, at::kBFloat16, at::kFloat, "always");
    EXPECT_EQ(p.dtype, at::kBFloat16);
    EXPECT_TRUE(p.note.empty());
    EXPECT_NE(p.warning.find("emulated"), std::string::npos) << p.warning;
    p = resolve_compute_precision(cpu, at::kBFloat16, at::kBFloat16, "auto");  // training.dtype = bfloat16
    EXPECT_EQ(p.dtype, at::kBFloat16);
    EXPECT_NE(p.warning.find("training.dtype"), std::string::npos) << p.warning;
    p = resolve_compute_precision(cpu, at::kFloat, at::kFloat, "auto");
    EXPECT_EQ(p.dtype, at::kFloat);
    EXPECT_TRUE(p.note.empty() && p.warning.empty());
  }
  {
    ScopedEnv native("TITAN_CPU_NATIVE_BF16", "1");
    auto p = resolve_compute_precision(cpu, at::kBFloat16, at::kFloat, "auto");
    EXPECT_EQ(p.dtype, at::kBFloat16);
    EXPECT_TRUE(p.note.empty() && p.warning.empty());
  }
}

TEST(Precision, PeakRateIsMeasuredOnceAtOneSizeAndKept) {
  const auto cache = std::filesystem::temp_directory_path() / ("titan_peak_" + std::to_string(getpid()) + ".json");
  setenv("TITAN_PEAK_CACHE", cache.string().c_str(), 1);
  DeviceInfo cpu(at::Device(at::kCPU));
  for (auto dtype : {at::kFloat, at::kBFloat16}) {  // bf16 may be emulated here: a smaller size, as quick
    const auto t0 = std::chrono::steady_clock::now();
    const PeakFlops peak = cpu.peak_flops(dtype);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // A quarter of a second of repetitions plus the set-up: bounded, not timed (a loaded machine, an
    // emulated bf16 CPU and ASan each slow it); a measurement that ran on for minutes would show here.
    EXPECT_LT(took, 20.0) << dtype_name(dtype);
    EXPECT_GT(peak.flops, 1e8) << dtype_name(dtype);
    const std::string size = dtype == at::kBFloat16 && !cpu.native_bf16() ? "256x256" : "1024x1024";
    EXPECT_NE(peak.source.find(dtype_name(dtype) + " " + size + " matmul measured on this CPU"), std::string::npos)
        << peak.source;
    EXPECT_NE(peak.source.find("kept in " + cache.string()), std::string::npos) << peak.source;
    // The next run reads it: the same rate, and the log says where it came from.
    const PeakFlops again = cpu.peak_flops(dtype);
    EXPECT_EQ(again.flops, peak.flops);
    EXPECT_NE(again.source.find("read from " + cache.string()), std::string::npos) << again.source;
  }
  std::filesystem::remove(cache);
  unsetenv("TITAN_PEAK_CACHE");
}

TEST(Precision, MfuNeverExceedsOneHundredPercent) {
  const auto dump = std::filesystem::temp_directory_path() / ("titan_mfu_" + std::to_string(getpid()));
  auto cfg = config::load_config({"--job.dump_folder", dump.string(), "--metrics.log_freq", "1"});
  DeviceInfo cpu(at::Device(at::kCPU));
  // 1e6 FLOPs per token against a peak of 1 FLOP/s: any real step is far "above" the peak.
  MetricsProcessor metrics(titan::train::metrics_options(cfg), 0, 1000000, 1.0, 1, cpu);
  for (int64_t step = 1; step <= 2; ++step) {
    StepValues v;
    v.step = step;
    v.tokens = 1000;
    v.step_seconds = 0.5;
    metrics.record(v);
  }
  EXPECT_GE(metrics.peak_flops(), 1e9);  // raised to the achieved rate
  std::ifstream f(dump / "metrics.jsonl");
  std::string line;
  int rows = 0;
  while (std::getline(f, line)) {
    const auto at = line.find("\"mfu\": ");
    ASSERT_NE(at, std::string::npos) << line;
    EXPECT_LE(std::stod(line.substr(at + 7)), 100.0 + 1e-9) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 2);
  std::filesystem::remove_all(dump);
}
