// Fused kernels against their reference paths, forward and backward, in float32 and bfloat16.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/function.h>

#include <algorithm>

#include "titan/kernels/fused_ops.h"

namespace k = titan::kernels;

namespace {
double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}
}  // namespace

TEST(Kernels, RopeMatchesReference) {
  at::manual_seed(1);
  at::Tensor angles = at::rand({20, 8}) * 6;
  at::Tensor cos = angles.cos(), sin = angles.sin();
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = at::randn({2, 13, 3, 16}).to(dtype), g = at::randn({2, 13, 3, 16}).to(dtype);
    at::Tensor xf = x.clone().requires_grad_(true), xr = x.clone().requires_grad_(true);
    at::Tensor yf = k::rope(xf, cos, sin), yr = k::rope_reference(xr, cos, sin);
    yf.backward(g);
    yr.backward(g);
    // bfloat16: both round the float32 result once; allow one bf16 step of the magnitude.
    const double tol = dtype == at::kFloat ? 1e-6 : 1.6e-2 * std::max(1.0, x.abs().max().item<double>());
    EXPECT_LT(max_abs_diff(yf, yr), tol) << dtype;
    EXPECT_LT(max_abs_diff(xf.grad(), xr.grad()), tol) << dtype;
  }
}

TEST(Kernels, ReferencePathWhenDisabledOrNotFusable) {
  at::Tensor d = at::randn({1, 2, 1, 4}, at::kDouble).requires_grad_(true);
  at::Tensor ones = at::ones({2, 2}), zeros = at::zeros({2, 2});
  EXPECT_EQ(k::rope(d, ones, zeros).grad_fn()->name().find("RopeFunction"), std::string::npos);  // float64
  k::set_fused_kernels_enabled(false);
  at::Tensor x = at::randn({1, 2, 1, 4}).requires_grad_(true);
  at::Tensor cs = at::ones({2, 2}), sn = at::zeros({2, 2});
  at::Tensor y = k::rope(x, cs, sn);  // angle 0: identity
  EXPECT_TRUE(at::allclose(y, x));
  EXPECT_EQ(y.grad_fn()->name().find("RopeFunction"), std::string::npos) << y.grad_fn()->name();
  k::set_fused_kernels_enabled(true);
  EXPECT_NE(k::rope(x, cs, sn).grad_fn()->name().find("RopeFunction"), std::string::npos);
}
