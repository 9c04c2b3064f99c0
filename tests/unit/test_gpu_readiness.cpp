// What keeps a training step from waiting on the GPU, checked where it can be on the CPU: the
// clip coefficient and the gradient scaling computed on the device give the host's numbers bit for
// bit; a part of the step that measures its own memory peak does not hide the step's. On a GPU
// (skipped elsewhere): the optimizer with the scale on the device against the CPU, the step's read
// giving up when asked while it waits, and the stream timing of the pipeline's waits.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <cmath>
#include <cstring>
#include <limits>

#include "titan/components/device/device.h"
#include "titan/components/loss.h"
#include "titan/components/optim/optimizer.h"
#include "titan/distributed/flight_recorder.h"
#include "titan/kernels/fused_ops.h"

#ifdef TITAN_HAVE_CUDA
#include <ATen/cuda/Sleep.h>
#endif

using namespace titan;
using namespace titan::components;

namespace {
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }
}  // namespace

TEST(HostSync, ClipCoefficientOnTheDeviceEqualsTheHosts) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (double norm : {0.0, 1e-9, 0.5, 0.999999, 1.0, 1.000001, 5.0, 1e300, inf, nan})
    for (double max_norm : {1.0, 0.25, 0.0, -1.0}) {
      const double host = clip_coefficient(norm, max_norm);
      const double device = clip_coefficient(at::full({1}, norm, at::kDouble), max_norm).item<double>();
      EXPECT_TRUE(same_bits(host, device)) << "norm " << norm << " max_norm " << max_norm << ": " << host << " vs "
                                           << device;
    }
}

TEST(HostSync, GradientNormOnTheDeviceEqualsTheHosts) {
  at::manual_seed(3);
  at::Tensor a = at::zeros({300}).requires_grad_(true), b = at::zeros({7, 11}).requires_grad_(true);
  a.mutable_grad() = at::randn({300});
  b.mutable_grad() = at::randn({7, 11});
  const at::Tensor t = total_grad_norm_tensor({a, b});
  EXPECT_EQ(t.scalar_type(), at::kDouble);
  EXPECT_TRUE(same_bits(t.item<double>(), total_grad_norm({a, b})));
  EXPECT_EQ(total_grad_norm_tensor({at::zeros({2})}).item<double>(), 0.0);  // no gradients
}

TEST(HostSync, ScalingByADeviceScaleRoundsOnceInFloat32) {
  at::manual_seed(4);
  const double scale = 0.123456789012345;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    // In float32 with the scale rounded to float32 once, then rounded to the gradient's dtype: as the
    // fused optimizer kernels apply a scale (not the CPU's bf16 _foreach_mul_, which rounds the scale
    // to bf16 first).
    at::Tensor g = at::randn({1000}).to(dtype), got = g.clone();
    const at::Tensor want = (g.to(at::kFloat) * static_cast<float>(scale)).to(dtype);
    kernels::scale_gradients({got}, at::full({1}, scale, at::kDouble));
    EXPECT_TRUE(at::equal(got, want)) << c10::toString(dtype);
  }
}

TEST(HostSync, OptimizerWithATensorScaleEqualsTheDoubleScale) {
  for (const char* impl : {"fused", "foreach", "for-loop"}) {
    at::Tensor p1 = at::tensor({0.5f, -1.0f, 2.0f}).requires_grad_(true), p2 = p1.detach().clone().requires_grad_(true);
    OptimizerOptions o;
    o.implementation = impl;
    Optimizer a({p1}, o), b({p2}, o);
    for (int t = 0; t < 3; ++t) {
      p1.mutable_grad() = at::tensor({0.1f, 0.2f * t, -0.3f});
      p2.mutable_grad() = p1.grad().clone();
      a.step(1e-2, 0.37);
      b.step(1e-2, at::full({1}, 0.37, at::kDouble));
    }
    EXPECT_TRUE(at::equal(p1, p2)) << impl;
    // The non-fused implementations keep the step count on the host (no read of the device).
    EXPECT_EQ(b.step_count()[0].device().is_cpu(), true) << impl;
  }
}

TEST(HostSync, ReadsAreCounted) {
  const int64_t before = host_reads();
  at::Tensor t = read_to_host(at::arange(4, at::kDouble));
  EXPECT_EQ(host_reads() - before, 1);
  EXPECT_EQ(t[3].item<double>(), 3.0);
}

TEST(HostSync, APeakTakenInsideTheStepStillCountsInTheStepsPeak) {
  // The pipeline measures its schedule's own peak; the step line's peak must still include it.
  DeviceInfo dev(at::Device(at::kCPU));
  dev.memory_stats_and_reset();
  {
    at::Tensor big = at::ones({int64_t{64} << 20}, at::kFloat);  // 256 MiB, touched
    EXPECT_EQ(big[123].item<float>(), 1.0f);
  }
  const int64_t taken = dev.take_peak_bytes();  // resets the process's peak to the current size
  const double reported = dev.memory_stats_and_reset().max_active_gib * 1073741824.0;
  EXPECT_GE(static_cast<double>(taken), 256.0 * 1048576);
  EXPECT_GE(reported, static_cast<double>(taken));
}

TEST(HostSync, TheFlightRecorderSaysHowLongTheOldestQueuedCollectiveHasRun) {
  // What the step's read asks while it waits on NCCL (a collective the host only queued).
  auto& recorder = distributed::FlightRecorder::instance();
  recorder.configure(16, 0, 2, (std::filesystem::temp_directory_path() /
                                ("titan_fr_" + std::to_string(::getpid()))).string(), 1);
  EXPECT_EQ(recorder.oldest_pending_seconds(), 0.0);
  std::atomic<bool> done{false};
  const int64_t slot = recorder.started("world[0,1]", 0, "all_reduce", at::zeros({4}));
  recorder.finished_when(slot, [&done] { return done.load(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_GE(recorder.oldest_pending_seconds(), 0.05);
  done = true;
  EXPECT_EQ(recorder.oldest_pending_seconds(), 0.0);  // finished: no longer counted
  recorder.configure(0, 0, 1, "", 0);
}

TEST(Gpu, OptimizerWithTheScaleOnTheDeviceMatchesTheCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const char* impl : {"fused", "foreach", "for-loop"}) {
    at::Tensor pc = at::tensor({0.5f, -1.0f, 2.0f}).requires_grad_(true);
    at::Tensor pg = pc.detach().cuda().requires_grad_(true);
    OptimizerOptions o;
    o.implementation = impl;
    Optimizer cpu({pc}, o), gpu({pg}, o);
    for (int t = 0; t < 3; ++t) {
      pc.mutable_grad() = at::tensor({0.1f, 0.2f * t, -0.3f});
      pg.mutable_grad() = pc.grad().cuda();
      cpu.step(1e-2, 0.37);
      gpu.step(1e-2, at::full({1}, 0.37, at::TensorOptions().dtype(at::kDouble).device(at::kCUDA)));
    }
    EXPECT_TRUE(at::allclose(pg.cpu(), pc.detach(), 1e-6, 1e-7)) << impl;
  }
}

TEST(Gpu, TheStepsReadGivesUpWhenAskedWhileItWaits) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#ifdef TITAN_HAVE_CUDA
  at::Tensor x = at::ones({4}, at::TensorOptions().device(at::kCUDA));
  EXPECT_EQ(read_to_host(x * 2, [] { return std::string(); })[0].item<float>(), 2.0f);
  at::cuda::sleep(int64_t{4} << 30);  // a few seconds of the stream's time
  const auto start = std::chrono::steady_clock::now();
  // What the trainer asks: whether a collective has run too long; here, whether 200 ms have passed.
  auto stuck = [&] {
    return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(200) ? std::string("stuck") : "";
  };
  EXPECT_THROW(read_to_host(x, stuck), std::runtime_error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  // The stream's own clock sees the sleep; the host never waited for it.
  StreamIntervals timer(x.device());
  timer.begin();
  at::cuda::sleep(int64_t{1} << 26);
  timer.end();
  read_to_host(x);  // waits for everything before
  EXPECT_GT(timer.collect(), 0.0);
  EXPECT_EQ(timer.collect(), 0.0);  // collected once
#endif
}
