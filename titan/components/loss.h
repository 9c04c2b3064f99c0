// The training loss and gradient clipping, with torchtitan's semantics: cross entropy summed
// over valid tokens in float32 and divided by the global count of valid tokens; clipping by
// the total L2 norm over all gradients.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <vector>

namespace titan::components {

constexpr int64_t kIgnoreIndex = -100;

// logits (B,T,V) any float dtype; labels (B,T) int64 with kIgnoreIndex for ignored positions.
// Returns sum of per-token losses / `global_valid_tokens`, a float32 scalar (float64 for
// float64 logits, which the gradient checks use).
at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& labels,
                              int64_t global_valid_tokens);

// Per-token cross entropy (B,T) in float32 (float64 for float64 logits), 0 where ignored.
at::Tensor cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels);

// Number of labels != kIgnoreIndex.
int64_t count_valid_tokens(const at::Tensor& labels);

// Total L2 norm of the gradients (float32); if it exceeds max_norm the gradients are scaled by
// max_norm / (norm + 1e-6). max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// The parts the trainer uses, so that the fused optimizer applies the scale in its own pass:
// the total L2 norm of the parameters' gradients, and the factor clipping multiplies them by
// (min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0).
double total_grad_norm(const std::vector<at::Tensor>& params);
double clip_coefficient(double total_norm, double max_norm);
// The same on the device, nothing read on the host: the norm as a float64 tensor of one element on
// the gradients' device (0 without gradients), and the coefficient computed from it in float64
// with the same operations (a NaN norm gives 1, as std::min(1.0, NaN) does).
at::Tensor total_grad_norm_tensor(const std::vector<at::Tensor>& params);
at::Tensor clip_coefficient(const at::Tensor& total_norm, double max_norm);

// The pieces, for gradients split across ranks: sum of squared L2 norms (float64, shape {1},
// on the gradients' device), and the scaling by max_norm / (total_norm + 1e-6) when below 1.
at::Tensor sum_of_squares(const std::vector<at::Tensor>& grads);
void scale_to_max_norm(const std::vector<at::Tensor>& grads, double total_norm, double max_norm);

}  // namespace titan::components
