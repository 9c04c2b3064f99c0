#include "titan/kernels/fused_ops.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cmath>
#include <cstdlib>

namespace titan::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

std::atomic<bool> g_fused{std::getenv("TITAN_REFERENCE_KERNELS") == nullptr};

bool cpu_fusable(const at::Tensor& t) {
  return g_fused.load() && t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
}

constexpr int64_t kGrain = 1 << 14;  // elements per parallel chunk

// ---- RoPE --------------------------------------------------------------------------------------

// x (B, T, H, hd) contiguous; out = rotate(x) (sign = +1) or its transpose (sign = -1, the
// backward: rotating by the negative angle).
template <typename T>
void rope_apply(const T* x, const float* cos, const float* sin, T* out, int64_t B, int64_t Tn, int64_t H,
                int64_t hd, float sign) {
  const int64_t half = hd / 2;
  at::parallel_for(0, B * Tn, 1 + kGrain / (H * hd), [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % Tn;
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int64_t h = 0; h < H; ++h) {
        const T* xi = x + (bt * H + h) * hd;
        T* oi = out + (bt * H + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = static_cast<float>(xi[2 * i]), x1 = static_cast<float>(xi[2 * i + 1]);
          const float si = sign * s[i];
          oi[2 * i] = static_cast<T>(x0 * c[i] - x1 * si);
          oi[2 * i + 1] = static_cast<T>(x0 * si + x1 * c[i]);
        }
      }
    }
  });
}

at::Tensor rope_run(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin, float sign) {
  at::Tensor x = x_in.contiguous();
  at::Tensor c = cos.contiguous(), s = sin.contiguous();
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "rope", [&] {
    rope_apply<scalar_t>(x.data_ptr<scalar_t>(), c.data_ptr<float>(), s.data_ptr<float>(), out.data_ptr<scalar_t>(),
                         x.size(0), x.size(1), x.size(2), x.size(3), sign);
  });
  return out;
}

struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rope_run(x, cos, sin, 1.0f);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor g = rope_run(grads[0], ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), -1.0f);
    return {g, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool fused_kernels_enabled() { return g_fused.load(); }
void set_fused_kernels_enabled(bool enabled) { g_fused.store(enabled); }

at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // Pairs as complex numbers times the unit rotation, in float32 (float64 for float64 input).
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), hd = x.size(3);
  const bool wide = x.scalar_type() == at::kDouble;
  const at::ScalarType real = wide ? at::kDouble : at::kFloat;
  at::Tensor pairs = at::view_as_complex(x.to(real).reshape({B, T, H, hd / 2, 2}));
  at::Tensor cis = at::complex(cos.narrow(0, 0, T).to(real), sin.narrow(0, 0, T).to(real)).view({1, T, 1, hd / 2});
  return at::view_as_real(pairs * cis).flatten(3).to(x.scalar_type());
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (!cpu_fusable(x) || x.dim() != 4) return rope_reference(x, cos, sin);
  const int64_t T = x.size(1);
  return RopeFunction::apply(x, cos.narrow(0, 0, T), sin.narrow(0, 0, T));
}

}  // namespace titan::kernels
