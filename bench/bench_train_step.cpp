// Tokens per second of a full training step (forward, backward, clip, AdamW) of a Llama 3
// flavor on this machine. bench/run_bench.sh runs it next to bench/peer_train_step.py (Python
// PyTorch eager, same model, batch, sequence length and threads) and prints the ratio.
// usage: bench_train_step [--flavor debugmodel] [--batch 8] [--seq 512] [--steps 10]
//                         [--warmup 3] [--threads N] [--seed 0] [--device cpu|cuda]
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "titan/components/loss.h"
#include "titan/components/optimizer.h"
#include "titan/models/llama3/model.h"

int main(int argc, char** argv) {
  std::string flavor = "debugmodel";
  int64_t batch = 8, seq = 512, steps = 10, warmup = 3, threads = 0, seed = 0;
  std::string device_name = "cpu";
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
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  auto args = titan::models::llama3::flavor(flavor);
  args.max_seq_len = seq;
  const at::Device device(device_name);
  titan::models::llama3::Transformer model(args, at::TensorOptions().device(device));
  model.init_weights(static_cast<uint64_t>(seed));
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
    at::Tensor loss = titan::components::cross_entropy_loss(model.forward(inputs), labels, valid);
    loss.backward();
    titan::components::clip_grad_norm(params, 1.0);
    opt.step(oo.lr);
    loss.item<double>();
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("{\"impl\":\"titan.cpp\",\"tokens_per_s\":%.1f,\"step_ms_median\":%.2f,\"batch\":%lld,"
              "\"seq\":%lld,\"threads\":%d,\"device\":\"%s\"}\n",
              batch * seq / (median / 1000.0), median, static_cast<long long>(batch),
              static_cast<long long>(seq), at::get_num_threads(), device_name.c_str());
  return 0;
}
