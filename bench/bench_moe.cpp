// The MoE layer (titan/models/common/moe.h), forward and backward, timed: the C++ side of
// bench/bench_moe.py, which runs the PyTorch eager peer in the same run. Random weights (seed 0),
// float32; prints the median milliseconds of --repeats runs after one untimed.
//
// Usage: build/bench_moe --tokens N --dim D --hidden H --experts E --top-k K [--score softmax|sigmoid]
//        [--loop | --fused] [--repeats 5] [--threads T] [--device cpu|cuda] [--dtype float32|bfloat16]
// On a GPU each timed step ends by reading one gradient value back, which waits for the device.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "titan/models/common/moe.h"

namespace {

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

bool has(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t N = std::atoll(arg(argc, argv, "--tokens", "2048")), D = std::atoll(arg(argc, argv, "--dim", "256"));
  const int64_t H = std::atoll(arg(argc, argv, "--hidden", "768")), E = std::atoll(arg(argc, argv, "--experts", "64"));
  const int repeats = std::atoi(arg(argc, argv, "--repeats", "5"));
  at::set_num_threads(std::atoi(arg(argc, argv, "--threads", "2")));
  titan::models::common::MoeLayer m;
  m.args.num_experts = E;
  m.args.num_shared_experts = 0;
  m.args.top_k = std::atoll(arg(argc, argv, "--top-k", "8"));
  m.args.score_func = arg(argc, argv, "--score", "softmax");
  m.args.route_norm = true;
  m.args.score_before_experts = false;
  m.args.use_grouped_mm = !has(argc, argv, "--loop");
  m.fused = has(argc, argv, "--fused");
  const at::Device device(arg(argc, argv, "--device", "cpu"));
  const std::string dtype_name = arg(argc, argv, "--dtype", "float32");
  if (dtype_name != "float32" && dtype_name != "bfloat16") {
    std::fprintf(stderr, "bench_moe: --dtype %s: use float32 or bfloat16\n", dtype_name.c_str());
    return 2;
  }
  const at::TensorOptions on = at::TensorOptions().device(device).dtype(dtype_name == "float32" ? at::kFloat : at::kBFloat16);
  at::manual_seed(0);
  auto weight = [&](std::vector<int64_t> shape) { return (at::randn(shape) * 0.02).to(on).requires_grad_(true); };
  m.gate = weight({E, D});
  m.w1 = weight({E, H, D});
  m.w2 = weight({E, D, H});
  m.w3 = weight({E, H, D});
  m.expert_bias = at::zeros({E}, at::TensorOptions().device(device));
  m.tokens_per_expert = at::zeros({E}, at::TensorOptions().device(device));
  const at::Tensor x0 = at::randn({1, N, D}).to(on), go = at::randn({1, N, D}).to(on);
  auto wait = [&]() {  // a value read back waits for the device's queue
    if (!device.is_cpu() && m.w1.grad().defined()) (void)m.w1.grad().reshape(-1)[0].item<float>();
  };
  std::vector<double> times;
  for (int i = 0; i <= repeats; ++i) {
    for (at::Tensor* w : {&m.gate, &m.w1, &m.w2, &m.w3}) w->mutable_grad() = at::Tensor();
    const at::Tensor x = x0.clone().requires_grad_(true);
    if (!device.is_cpu()) (void)x.reshape(-1)[0].item<float>();
    const auto t0 = std::chrono::steady_clock::now();
    m.forward(x).backward(go);
    wait();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  std::printf("%.3f\n", times[times.size() / 2]);
  return 0;
}
