// Block-causal attention (documents) against causal attention over the whole sequence, forward
// and backward, in one run: titan.cpp's CPU kernel both ways, and ATen's scaled_dot_product_attention
// with the explicit block-causal mask (what PyTorch eager runs for a document mask without flex
// attention). Debug-model heads (16 heads of 16) by default, one sequence of --seq tokens cut
// into documents of --doc tokens.
//
// Usage: build/bench_documents [--seq 8192] [--doc 512] [--heads 16] [--head-dim 16] [--repeats 3]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "titan/kernels/ops.h"

namespace k = titan::kernels;

namespace {

// The median of `repeats` timed runs of f (after one untimed), in milliseconds.
double median_ms(const std::function<void()>& f, int repeats) {
  f();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int64_t flag(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t T = flag(argc, argv, "--seq", 8192), doc = flag(argc, argv, "--doc", 512);
  const int64_t H = flag(argc, argv, "--heads", 16), hd = flag(argc, argv, "--head-dim", 16);
  const int repeats = static_cast<int>(flag(argc, argv, "--repeats", 3));
  at::set_num_threads(static_cast<int>(std::max<int64_t>(1, flag(argc, argv, "--threads", at::get_num_threads()))));
  at::manual_seed(0);
  const at::Tensor q = at::randn({1, H, T, hd}), kk = at::randn({1, H, T, hd}), v = at::randn({1, H, T, hd});
  const at::Tensor go = at::randn({1, H, T, hd});
  // One sequence of documents of `doc` tokens, each ending with the EOS (id 1).
  at::Tensor tokens = at::full({1, T}, 2, at::kLong);
  for (int64_t t = doc - 1; t < T; t += doc) tokens[0][t] = 1;
  const at::Tensor starts = k::document_starts(tokens, 1);
  auto run = [&](bool fused, const at::Tensor& docs) {
    return median_ms([&] {
      at::Tensor q1 = q.clone().requires_grad_(true), k1 = kk.clone().requires_grad_(true);
      at::Tensor v1 = v.clone().requires_grad_(true);
      k::attention(q1, k1, v1, 1.0 / std::sqrt(static_cast<double>(hd)), fused, docs).backward(go);
    }, repeats);
  };
  std::printf("attention forward + backward, 1 sequence of %ld tokens, %ld heads of %ld, documents of %ld tokens, "
              "float32, %d threads, median of %d\n",
              static_cast<long>(T), static_cast<long>(H), static_cast<long>(hd), static_cast<long>(doc),
              at::get_num_threads(), repeats);
  const double causal = run(true, at::Tensor());
  const double blocks = run(true, starts);
  const double masked = run(false, starts);
  std::printf("titan causal (whole sequence)        : %9.1f ms (1.00x)\n", causal);
  std::printf("titan block-causal                   : %9.1f ms (%.2fx causal, %.1fx less)\n", blocks, blocks / causal,
              causal / blocks);
  std::printf("ATen SDPA with the block-causal mask : %9.1f ms (%.2fx causal; titan block-causal %.1fx faster)\n",
              masked, masked / causal, masked / blocks);
  return 0;
}
