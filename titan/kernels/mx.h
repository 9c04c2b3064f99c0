// MX (mxfp8) training of linear layers with torchao's numbers (its mx_mm, emulated): each
// operand of the three GEMMs is cut into blocks of 32 consecutive elements along the
// contraction, each block scaled by a power of two (an e8m0 scale) from its absolute maximum
// and cast to e4m3 with saturation; the GEMMs multiply the dequantized values in the operands'
// dtype. The master weights and everything else stay in high precision.
//
// Where it runs: the GEMMs are emulated everywhere (the block-scaled hardware GEMMs of compute
// capability 10.x are not used yet); parallelize refuses CUDA GPUs below 10.0, as torchtitan does.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace titan::kernels {

// How a block's scale comes from its absolute maximum (torchao's ScaleCalculationMode):
// kFloor: 2^(floor(log2(amax)) - 8) (the OCP MX spec; recipe "mxfp8_cublas"); kRceil:
// 2^ceil(log2(amax / 448)) (recipe "mxfp8_cublas_rceil").
enum class MxScaleMode { kFloor, kRceil };

// "mxfp8_cublas" (floor) or "mxfp8_cublas_rceil" (rceil); nullopt for anything else.
std::optional<MxScaleMode> mx_recipe(std::string_view name);

constexpr int64_t kMxBlock = 32;

// x (rows, K) cast in blocks of 32 along K (K a multiple of 32): data e4m3 of x's shape, and the
// biased e8m0 exponents (rows, K/32) as uint8.
struct MxTensor {
  at::Tensor data, exponent;
};
MxTensor to_mx(const at::Tensor& x, MxScaleMode mode);
// Back to `dtype`: each block's values times 2^(exponent - 127).
at::Tensor mx_dequantize(const MxTensor& t, at::ScalarType dtype);

// x (..., in), weight (out, in) -> (..., out) in x's dtype, differentiable in both: the output,
// input-gradient and weight-gradient GEMMs on mxfp8 operands (blocks along in, out and the
// tokens respectively, so each of those must be a multiple of 32).
at::Tensor mx_linear(const at::Tensor& x, const at::Tensor& weight, MxScaleMode mode);

// Why a linear layer is not converted to MX ("" to convert): filter_fqns, or dims that are not
// multiples of 32.
std::string mx_skip_reason(const std::string& fqn, int64_t out_features, int64_t in_features,
                           const std::vector<std::string>& filter_fqns);

}  // namespace titan::kernels
