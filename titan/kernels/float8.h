// Float8 training of linear layers with torchao's Float8Linear numerics (its dynamic scaling):
// each operand of the three GEMMs (output, input gradient, weight gradient) is scaled from its
// absolute maximum (per tensor, or per row / column along the contraction for the rowwise
// recipes), cast to e4m3 or e5m2 with saturation, and multiplied with the scales undone. The
// master weights and everything else stay in high precision.
//
// Where it runs: CUDA with compute capability 8.9 or newer multiplies in float8
// (at::_scaled_mm); elsewhere, and with `emulate`, the float8 values are dequantized to float32
// and multiplied there, which gives the same float8 rounding of every operand (torchao's
// emulation, the reference of the tests).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace titan::kernels {

enum class Float8Recipe {
  kTensorwise,        // one scale per tensor; e4m3 input and weight, e5m2 output gradient
  kRowwise,           // scales per row/column along the contraction; e4m3 throughout; power-of-2 scales
  kRowwiseWithGwHp,   // rowwise, but the weight gradient GEMM in high precision and the weight
                      // tensorwise in the input gradient GEMM
};

// "tensorwise", "rowwise", "rowwise_with_gw_hp"; nullopt for anything else.
std::optional<Float8Recipe> float8_recipe(std::string_view name);
const char* float8_recipe_name(Float8Recipe recipe);

// Tensor parallelism: the layer's weight is this rank's share of the whole, split on
// `weight_dim` (0: the output features, column-wise; 1: the input features, row-wise) over a
// group, and `max_over_group` replaces a tensor by its elementwise maximum over that group. Every
// operand whose scale spans the split (a tensorwise scale of a split operand, or a rowwise scale
// along the split dimension) has its amax reduced, so that scales and float8 values are those of
// one process holding the whole layer.
struct Float8Split {
  int64_t weight_dim = -1;  // -1: not split
  std::function<void(at::Tensor&)> max_over_group;
};

struct Float8Config {
  Float8Recipe recipe = Float8Recipe::kTensorwise;
  // Dequantize and multiply in float32 (any device). The caller sets it where the device has no
  // float8 GEMMs (the CPU; CUDA below compute capability 8.9 when the user asked to emulate).
  bool emulate = false;
  Float8Split split;
};

// A tensor cast to float8: data (float8, x's shape and layout) and the float32 scale that
// multiplied x (a scalar, or keepdim amax's shape along `dim`).
struct Float8Tensor {
  at::Tensor data, scale;
};
// torchao's dynamic cast: scale = float8_max / max(amax, 1e-12) (float64, stored float32;
// rounded down to a power of 2 when `pow2`), data = clamp(x * scale, ±max) in float8.
// `dim`: the dimension the amax runs along (rowwise scales), or nullopt for one per tensor.
// `max_amax`, when set, replaces the amax by its maximum over the ranks that share x.
Float8Tensor to_float8(const at::Tensor& x, at::ScalarType float8_dtype, std::optional<int64_t> dim, bool pow2,
                       const std::function<void(at::Tensor&)>* max_amax = nullptr);
// The two halves of to_float8: the float32 scale of an amax, and x cast with a given scale.
at::Tensor float8_scale(const at::Tensor& amax, at::ScalarType float8_dtype, bool pow2);
at::Tensor cast_to_float8(const at::Tensor& x, const at::Tensor& scale, at::ScalarType float8_dtype);

// A weight handed to a float8 layer already cast (FSDP's float8 all-gather: e4m3 with one
// tensorwise scale, gathered as float8 bytes). `weight` is the tensor the layer receives, which
// carries the gradient back (its values are not read); `value` is attached to it, lives as long
// as it (and its shallow copies), and is used in place of casting the weight. Tensorwise only.
void attach_float8_weight(at::Tensor& weight, Float8Tensor value);
std::optional<Float8Tensor> attached_float8_weight(const at::Tensor& weight);

// x (..., in), weight (out, in) -> (..., out) in x's dtype, differentiable in both: the
// recipe's three GEMMs in float8. Autocast does not reach inside (the caller casts x, as torchao
// does; the weight is cast to float8 from its own dtype, or comes attached). `config` must
// outlive the backward.
at::Tensor float8_linear(const at::Tensor& x, const at::Tensor& weight, const Float8Config& config);

// float8_linear in pieces, for code that splits the output GEMM (async tensor parallelism), on
// 2-D x (M,K) and w (N,K): the input's amax (per tensor, or (M,1) for the rowwise recipes; with
// the split's reductions), the weight cast for the output GEMM (w^T, or the attached value), the
// output GEMM of x with a given amax (rows of x may be any slice of those the amax came from),
// and the backward of the whole layer -> (grad_x, grad_w). `w8`: the attached weight, if any.
// An input cast already (tensorwise: the float8 all-gather of tensor parallelism) goes to
// float8_output, out_dtype being the layer's, and to the backward as `x8` (x unused then).
at::Tensor float8_input_amax(const at::Tensor& x, const Float8Config& config);
Float8Tensor float8_forward_weight(const at::Tensor& w, const Float8Config& config);
at::Tensor float8_forward(const at::Tensor& x, const at::Tensor& x_amax, const Float8Tensor& wt,
                          const Float8Config& config);
at::Tensor float8_output(const Float8Tensor& x8, const Float8Tensor& wt, at::ScalarType out_dtype,
                         const Float8Config& config);
std::pair<at::Tensor, at::Tensor> float8_linear_backward(const at::Tensor& x, const at::Tensor& w,
                                                         const at::Tensor& grad_out, const Float8Config& config,
                                                         const std::optional<Float8Tensor>& w8 = std::nullopt,
                                                         const std::optional<Float8Tensor>& x8 = std::nullopt);
// The backward in pieces, for code that splits the input-gradient GEMM by rows of grad_out
// (async tensor parallelism): the output gradient's amax (per tensor, or (M,1) per row for the
// rowwise recipes; with the split's reductions), the weight cast for the input gradient, the
// input-gradient GEMM of rows of grad_out with a given amax, and the weight gradient on the whole
// tensors (in grad_out's dtype).
at::Tensor float8_grad_amax(const at::Tensor& grad_out, const Float8Config& config);
Float8Tensor float8_backward_weight(const at::Tensor& w, const Float8Config& config,
                                    const std::optional<Float8Tensor>& w8 = std::nullopt);
at::Tensor float8_grad_input(const at::Tensor& grad_out, const at::Tensor& grad_amax, const Float8Tensor& wg,
                             const Float8Config& config);
at::Tensor float8_grad_weight(const at::Tensor& x, const at::Tensor& grad_out, const Float8Config& config,
                              const std::optional<Float8Tensor>& x8 = std::nullopt);

// Which linear layers a float8 conversion takes (torchtitan's filters): dims multiples of 16,
// no entry of `filter_fqns` inside the FQN, and with "auto_filter_small_kn" in the list the
// recipe's size thresholds (tensorwise: skip K <= 4096 and N <= 1024; rowwise: skip N <= 2048,
// K <= 1024, or N <= 4096 and K <= 2048). Returns "" to convert, else why not.
std::string float8_skip_reason(const std::string& fqn, int64_t out_features, int64_t in_features,
                               const std::vector<std::string>& filter_fqns, Float8Recipe recipe);

}  // namespace titan::kernels
