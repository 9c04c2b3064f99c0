#include "titan/kernels/mx.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

namespace titan::kernels {

namespace {

constexpr double kE4m3Max = 448.0;
constexpr int kE4m3MaxPow2 = 8;  // the largest power of two below e4m3's maximum: 256
constexpr int kBias = 127;

// An e4m3 operand of one GEMM, dequantized: x (rows, K) cast along K, back in `dtype`.
at::Tensor mx_round_trip(const at::Tensor& x, MxScaleMode mode, at::ScalarType dtype) {
  return mx_dequantize(to_mx(x.contiguous(), mode), dtype);
}

struct MxLinearFunction : public torch::autograd::Function<MxLinearFunction> {
  // x (M,K), w (N,K) -> (M,N)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t mode) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["mode"] = mode;
    const auto m = static_cast<MxScaleMode>(mode);
    return at::mm(mx_round_trip(x, m, x.scalar_type()), mx_round_trip(w, m, w.scalar_type()).t());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const auto m = static_cast<MxScaleMode>(ctx->saved_data["mode"].toInt());
    const at::Tensor go = grads[0].contiguous();  // (M,N)
    // grad_input = go (M,N) @ w (N,K): both in blocks along N.
    const at::Tensor grad_x = at::mm(mx_round_trip(go, m, go.scalar_type()),
                                     mx_round_trip(w.t(), m, w.scalar_type()).t());
    // grad_weight = go^T (N,M) @ x (M,K): both in blocks along M.
    const at::Tensor grad_w = at::mm(mx_round_trip(go.t(), m, go.scalar_type()),
                                     mx_round_trip(x.t(), m, x.scalar_type()).t());
    return {grad_x, grad_w.to(w.scalar_type()), at::Tensor()};
  }
};

}  // namespace

std::optional<MxScaleMode> mx_recipe(std::string_view name) {
  if (name == "mxfp8_cublas") return MxScaleMode::kFloor;
  if (name == "mxfp8_cublas_rceil") return MxScaleMode::kRceil;
  return std::nullopt;
}

MxTensor to_mx(const at::Tensor& x, MxScaleMode mode) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(x.dim() == 2 && x.size(1) % kMxBlock == 0, "to_mx: (rows, K) with K a multiple of 32, got ",
              x.sizes());
  const int64_t rows = x.size(0), blocks = x.size(1) / kMxBlock;
  const at::Tensor blocked = x.contiguous().view({rows, blocks, kMxBlock});
  // The amax in x's dtype (exact in float32), as torchao takes it.
  const at::Tensor amax = blocked.abs().amax({-1}, /*keepdim=*/true).to(at::kFloat);
  const at::Tensor data = blocked.to(at::kFloat);
  at::Tensor exponent, scaled;
  if (mode == MxScaleMode::kFloor) {
    // floor(log2(amax)) from amax's exponent bits, less e4m3's largest power of two.
    const at::Tensor pow2 = at::bitwise_and(at::bitwise_right_shift(amax.view(at::kInt), 23), 0xFF) - kBias;
    exponent = (pow2 - kE4m3MaxPow2).clamp(-kBias, kBias + 1) + kBias;
    // NaN amax -> 255 (the e8m0 NaN), as torchao marks it.
    exponent = at::where(amax.isnan(), at::full({}, 255, exponent.options()), exponent);
    // The scale from the exponent's bits, at least float32's smallest normal.
    const at::Tensor scale = at::bitwise_left_shift(exponent.to(at::kInt), 23).view(at::kFloat)
                                 .clamp_min(std::ldexp(1.0, -126));
    scaled = data / scale;
  } else {
    const at::Tensor descale = amax / kE4m3Max;
    const at::Tensor e = (at::ceil(at::log2(descale)).clamp(-kBias, kBias) + kBias).to(at::kByte).to(at::kInt);
    exponent = at::where(descale.isnan(), at::full({}, 255, e.options()),
                         at::where(descale.isinf(), at::full({}, 254, e.options()), e));
    const at::Tensor rcp = at::where(
        exponent == 255, descale,
        at::where(exponent == 254, at::full({}, std::ldexp(1.0, -127), descale.options()),
                  at::where(exponent == 0, at::ones({}, descale.options()),
                            at::exp2(static_cast<double>(kBias) - exponent.to(at::kFloat)))));
    scaled = data * rcp;
  }
  const at::Tensor lp = scaled.clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn).view(x.sizes());
  return {lp, exponent.to(at::kByte).view({rows, blocks})};
}

at::Tensor mx_dequantize(const MxTensor& t, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  const int64_t rows = t.data.size(0), blocks = t.data.size(1) / kMxBlock;
  // 2^(e - 127) in float32 (2^-127 is a float32 subnormal), NaN for the NaN exponent.
  const at::Tensor offset = t.exponent.to(at::kShort) - kBias;
  at::Tensor s = at::pow(at::full({}, 2.0, at::TensorOptions().dtype(at::kFloat).device(offset.device())), offset);
  s = at::where(t.exponent != 255, s, at::full({}, NAN, s.options()));
  const at::Tensor data = t.data.to(dtype).view({rows, blocks, kMxBlock});
  return (data * s.to(dtype).unsqueeze(-1)).view({rows, blocks * kMxBlock});
}

at::Tensor mx_linear(const at::Tensor& x, const at::Tensor& weight, MxScaleMode mode) {
  // The emulated GEMMs run in the operands' dtypes: autocast must not change them inside.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t K = x.size(-1);
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  const at::Tensor w = weight.scalar_type() == x.scalar_type() ? weight : weight.to(x.scalar_type());
  return MxLinearFunction::apply(x.reshape({-1, K}), w, static_cast<int64_t>(mode)).view(out_shape);
}

std::string mx_skip_reason(const std::string& fqn, int64_t out_features, int64_t in_features,
                           const std::vector<std::string>& filter_fqns) {
  for (const auto& f : filter_fqns)
    if (!f.empty() && fqn.find(f) != std::string::npos) return "filter_fqns has \"" + f + "\"";
  if (out_features % kMxBlock != 0 || in_features % kMxBlock != 0)
    return "dims " + std::to_string(out_features) + "x" + std::to_string(in_features) +
           " are not multiples of the MX block (32)";
  return "";
}

}  // namespace titan::kernels
