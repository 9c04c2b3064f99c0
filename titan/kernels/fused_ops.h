// Fused kernels for the Llama 3 block and the optimizer, in place of what torch.compile fuses for
// torchtitan: RMSNorm (alone and after the residual add), SwiGLU, RoPE on q and k in one pass,
// and Adam(W) with the gradient-clipping scale folded in. Each has a reference path built from
// ATen ops next to it; a unit test holds the two to each other, forward and backward. The fused
// path runs on the CPU (at::vec, one build per CPU capability, float32/bfloat16) and on CUDA
// (kernels/cuda/); other devices and dtypes take the reference path.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace titan::kernels {

// Whether a fused kernel exists for this tensor's device and dtype.
bool fusable(const at::Tensor& t);
// The CPU build the fused kernels run in ("AVX512", "AVX2" or "DEFAULT").
const char* cpu_capability();

// y = x / sqrt(mean(x^2, -1) + eps) * weight. x (..., D), weight (D). Autograd-aware; the fused
// path keeps only x and one float per row for backward.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// The residual add and the next norm in one pass: h = x + delta, y = rms_norm(h). Returns {h, y}.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                                const at::Tensor& weight, double eps);
std::tuple<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x, const at::Tensor& delta,
                                                          const at::Tensor& weight, double eps);

// silu(a) * b elementwise, a and b (..., F) of one shape. The fused path saves a and b only.
at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b);
at::Tensor swiglu_reference(const at::Tensor& a, const at::Tensor& b);

// A mixture-of-experts layer's routed experts on the CPU: rows x (R, D) sorted by expert, counts[e]
// of them for expert e; each expert's silu(x w1[e]^T) * (x w3[e]^T) then w2[e]^T (w1, w3 (E, H, D),
// w2 (E, D, H)) -> (R, D), as at::_grouped_mm computes it, with the SwiGLU fused and its backward
// in one pass per expert. grouped_swiglu_fusable says where it runs (CPU float32/bfloat16).
bool grouped_swiglu_fusable(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3);
at::Tensor grouped_swiglu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3,
                          const std::vector<int64_t>& counts);

// Rotates interleaved pairs (2i, 2i+1) of the last dim of q (B,T,Hq,hd) and k (B,T,Hk,hd) by
// position; cos/sin (>= T, hd/2) float32. Computed in float32, returned in the inputs' dtype.
std::tuple<at::Tensor, at::Tensor> rope_qk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                           const at::Tensor& sin);
std::tuple<at::Tensor, at::Tensor> rope_qk_reference(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& cos, const at::Tensor& sin);
// One tensor (B,T,H,hd), the same rotation.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// One Adam (decoupled = false) or AdamW step over parameters with gradients, the gradients
// multiplied by grad_scale first (the clipping coefficient, 1 = none); `steps` are the float
// step counters, already incremented. Tensors on a device or in a dtype without a fused kernel
// go through the reference (ATen's multi-tensor ops).
struct AdamHyper {
  double lr, beta1, beta2, weight_decay, eps;
  bool decoupled;
};
// The gradients are multiplied by `grad_scale`, or by `scale_on_device` (a float64 of one element
// on the parameters' device, read by the kernels: no host synchronisation) when that is defined.
void adam_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
               const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
               const std::vector<at::Tensor>& steps, const AdamHyper& h, double grad_scale,
               const at::Tensor& scale_on_device = {});
// grads *= scale (a float64 tensor of one element on their device), computed in float32 with the
// scale rounded to float32 once, as mul_ by a Python float does.
void scale_gradients(const std::vector<at::Tensor>& grads, const at::Tensor& scale);
void adam_step_reference(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                         const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
                         const std::vector<at::Tensor>& steps, const AdamHyper& h, double grad_scale);

// Set to false (or TITAN_REFERENCE_KERNELS=1 in the environment) to run every reference path.
bool fused_kernels_enabled();
void set_fused_kernels_enabled(bool enabled);

}  // namespace titan::kernels
