#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <chrono>
#include <cstdio>
#include <functional>
#include <tuple>
#include "titan/kernels/fused_ops.h"
#include "titan/kernels/linear_cross_entropy.h"
#include "titan/kernels/ops.h"
namespace k = titan::kernels;
double timeit(std::function<void()> f, int n = 10) {
  f();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n;
}
int main() {
  at::set_num_threads(2);
  printf("cap %s\n", k::cpu_capability());
  at::Tensor x = at::randn({8, 512, 256}), w = at::rand({256}), g = at::randn({8, 512, 256});
  for (int fused = 0; fused < 2; ++fused) {
    double t = timeit([&] { auto xx = x.clone().requires_grad_(true); auto ww = w.clone().requires_grad_(true);
      auto y = fused ? k::rms_norm(xx, ww, 1e-5) : k::rms_norm_reference(xx, ww, 1e-5); y.backward(g); });
    printf("rms_norm fused=%d %.2f ms\n", fused, t);
    t = timeit([&] { auto xx = x.clone().requires_grad_(true); auto dd = x.clone().requires_grad_(true); auto ww = w.clone().requires_grad_(true);
      auto [h, y] = fused ? k::add_rms_norm(xx, dd, ww, 1e-5) : k::add_rms_norm_reference(xx, dd, ww, 1e-5); torch::autograd::backward({h, y}, {g, g}); });
    printf("add_rms_norm fused=%d %.2f ms\n", fused, t);
  }
  at::Tensor a = at::randn({8, 512, 768}), b = at::randn({8, 512, 768}), ga = at::randn({8, 512, 768});
  for (int fused = 0; fused < 2; ++fused) {
    double t = timeit([&] { auto aa = a.clone().requires_grad_(true); auto bb = b.clone().requires_grad_(true);
      auto y = fused ? k::swiglu(aa, bb) : k::swiglu_reference(aa, bb); y.backward(ga); });
    printf("swiglu fused=%d %.2f ms\n", fused, t);
  }
  at::Tensor q = at::randn({8, 512, 16, 16}), kk = at::randn({8, 512, 16, 16}), ang = at::rand({512, 8});
  at::Tensor c = ang.cos(), s = ang.sin();
  for (int fused = 0; fused < 2; ++fused) {
    double t = timeit([&] { auto qq = q.clone().requires_grad_(true); auto k2 = kk.clone().requires_grad_(true);
      auto [a1, b1] = fused ? k::rope_qk(qq, k2, c, s) : k::rope_qk_reference(qq, k2, c, s); torch::autograd::backward({a1, b1}, {q, kk}); });
    printf("rope fused=%d %.2f ms\n", fused, t);
  }
  at::Tensor h = at::randn({8, 512, 256}), W = at::randn({2048, 256}) * 0.05; at::Tensor lab = at::randint(0, 2048, {8, 512}, at::kLong);
  at::Tensor gl = at::ones({8, 512});
  for (int fused = 0; fused < 2; ++fused) {
    double t = timeit([&] { auto hh = h.clone().requires_grad_(true); auto WW = W.clone().requires_grad_(true);
      auto l = fused ? k::linear_cross_entropy(hh, WW, lab) : k::linear_cross_entropy_reference(hh, WW, lab); l.backward(gl); });
    printf("lce fused=%d %.2f ms\n", fused, t);
  }
  for (auto [T, hd, H] : {std::tuple<int64_t, int64_t, int64_t>{512, 16, 16}, {2048, 16, 16}, {2048, 64, 4}, {2048, 128, 2}}) {
    at::Tensor qa = at::randn({8, H, T, hd}), ka = at::randn({8, H, T, hd}), va = at::randn({8, H, T, hd}), go = at::randn({8, H, T, hd});
    if (T == 2048) { qa = qa.narrow(0, 0, 2); ka = ka.narrow(0, 0, 2); va = va.narrow(0, 0, 2); go = go.narrow(0, 0, 2); }
    for (int fused = 0; fused < 2; ++fused) {
      double t = timeit([&] { auto q1 = qa.clone().requires_grad_(true), k1 = ka.clone().requires_grad_(true), v1 = va.clone().requires_grad_(true);
        auto o = k::attention(q1, k1, v1, 0.25, fused); o.backward(go); }, 3);
      printf("attention B=%ld T=%ld hd=%ld H=%ld fused=%d %.2f ms\n", (long)qa.size(0), (long)T, (long)hd, (long)H, fused, t);
    }
  }
  {  // a vocabulary whose logits exceed the 256 MiB the forward keeps: backward recomputes them
    at::Tensor hb = at::randn({1, 2048, 512}), Wb = at::randn({32768, 512}) * 0.05;
    at::Tensor lb = at::randint(0, 32768, {1, 2048}, at::kLong), gb = at::ones({1, 2048});
    for (int fused = 0; fused < 2; ++fused) {
      double t = timeit([&] { auto hh = hb.clone().requires_grad_(true); auto WW = Wb.clone().requires_grad_(true);
        auto l = fused ? k::linear_cross_entropy(hh, WW, lb) : k::linear_cross_entropy_reference(hh, WW, lb); l.backward(gb); }, 2);
      printf("lce N=2048 D=512 V=32768 fused=%d %.2f ms\n", fused, t);
    }
  }
  // copies for baseline
  printf("clone x %.2f ms\n", timeit([&] { auto y = x.clone(); }));
}
