// Fused kernels for the Llama 3 block, in place of what torch.compile fuses for torchtitan.
// Now: RoPE's rotation, forward and backward each in one pass over q/k with no saved tensors
// (the composite path goes through complex views, a complex multiply and copies). CPU kernel
// for float32/bfloat16; every other case (and TITAN_REFERENCE_KERNELS=1) takes the reference
// path built from ATen ops, and a test holds the two to each other.
#pragma once

#include <ATen/ATen.h>

namespace titan::kernels {

// Rotates interleaved pairs (2i, 2i+1) of x's last dim by position: x (B, T, H, hd),
// cos/sin (>= T, hd/2) float32. Computed in float32, returned in x's dtype. Autograd-aware.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Whether the fused CPU kernels are used (false when TITAN_REFERENCE_KERNELS=1 is set).
bool fused_kernels_enabled();
void set_fused_kernels_enabled(bool enabled);

}  // namespace titan::kernels
