// Tokens per second of a full training step (forward, backward, clip, AdamW) of a Llama 3
// flavor on this machine. bench/run_bench.sh runs it next to bench/peer_train_step.py (Python
// PyTorch eager, same model, batch, sequence length and threads) and prints the ratio.
// usage: bench_train_step [--flavor debugmodel] [--batch 8] [--seq 512] [--steps 10]
//                         [--warmup 3] [--threads N] [--seed 0] [--device cpu|cuda]
//                         [--compile 0|1]   (1: the fused kernels of compile.enable, model and loss)
//                         [--bf16 0|1]      (1: forward and loss under bf16 autocast, as AMP)
//        bench_train_step --matmul-peak N [--threads T]   (rate of an N^3 float32 matmul)
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "titan/components/loss.h"
#include "titan/components/optim/optimizer.h"
#include "titan/models/llama3/model.h"

int main(int argc, char** argv) {
  std::string flavor = "debugmodel";
  int64_t batch = 8, seq = 512, steps = 10, warmup = 3, threads = 0, seed = 0;
  std::string device_name = "cpu";
  bool compile = false, bf16 = false;
  int64_t matmul_peak = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    if (k == "--flavor") flavor = v;
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--seq") seq = std::stoll(v);
    else if (k == "--steps") steps = std::stoll(v);
    else if (k == "--warmup") warmup = std::stoll(v);
    else if (k == "--threads") threads = std::stoll(v);
    else if (k == "--seed") seed = std::stoll(v);
    else if (k == "--device") device_name = v;
    else if (k == "--compile") compile = v == "1";
    else if (k == "--bf16") bf16 = v == "1";
    else if (k == "--matmul-peak") matmul_peak = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  if (matmul_peak > 0) {  // the best of 5 float32 n x n x n matmuls
    const int64_t n = matmul_peak;
    at::Tensor a = at::randn({n, n}), b = at::randn({n, n}), c = at::empty({n, n});
    at::mm_out(c, a, b);
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      at::mm_out(c, a, b);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("{\"impl\":\"matmul\",\"n\":%lld,\"flops_per_s\":%.4g,\"threads\":%d}\n",
                static_cast<long long>(n), 2.0 * n * n * n / best, at::get_num_threads());
    return 0;
  }
  auto args = titan::models::llama3::flavor(flavor);
  args.max_seq_len = seq;
  const at::Device device(device_name);
  titan::models::llama3::Transformer model(args, at::TensorOptions().device(device));
  model.init_weights(static_cast<uint64_t>(seed));
  model.set_fused_kernels(compile, compile);
  auto params = model.parameters();
  titan::components::OptimizerOptions oo;  // AdamW lr 8e-4, betas (0.9, 0.95), wd 0.1, fused
  titan::components::Optimizer opt(params, oo);
  at::manual_seed(seed);
  at::Tensor tokens = at::randint(0, args.vocab_size, {batch, seq + 1}, at::kLong).to(device);
  at::Tensor inputs = tokens.narrow(1, 0, seq).contiguous(), labels = tokens.narrow(1, 1, seq).contiguous();
  const int64_t valid = batch * seq;
  std::vector<double> ms;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    if (bf16) {
      at::autocast::set_autocast_enabled(device.type(), true);
      at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
    }
    at::Tensor loss = model.forward_loss(inputs, labels).sum() / static_cast<double>(valid);
    if (bf16) {
      at::autocast::set_autocast_enabled(device.type(), false);
      at::autocast::clear_cache();
    }
    loss.backward();
    const double norm = titan::components::total_grad_norm(params);
    opt.step(oo.lr, titan::components::clip_coefficient(norm, 1.0));
    loss.item<double>();
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("{\"impl\":\"%s\",\"tokens_per_s\":%.1f,\"step_ms_median\":%.2f,\"batch\":%lld,"
              "\"seq\":%lld,\"threads\":%d,\"device\":\"%s\",\"bf16\":%s,\"flops_per_token\":%lld}\n",
              compile ? "titan.cpp-compile" : "titan.cpp", batch * seq / (median / 1000.0), median, static_cast<long long>(batch),
              static_cast<long long>(seq), at::get_num_threads(), device_name.c_str(), bf16 ? "true" : "false",
              static_cast<long long>(titan::models::llama3::flops_per_token(args, seq)));
  return 0;
}
