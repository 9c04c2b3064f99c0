// The output projection and the cross-entropy loss together, chunk by chunk over the tokens,
// forward and backward: the (tokens x vocab) logits are never held whole (with Llama 3's
// 128,256-token vocabulary, batch 8 x seq 2048 logits are 8.4 GB in float32). Next to it, the
// reference: at::linear then ATen's cross entropy, as the unfused model computes them.
#pragma once

#include <ATen/ATen.h>

namespace titan::kernels {

constexpr int64_t kIgnoreIndex = -100;

// h (B,T,D), weight (V,D), labels (B,T) int64 with kIgnoreIndex where ignored -> the loss of
// each token, (B,T) float32 (float64 for float64 input), 0 where ignored. The logits are
// computed in the matmul dtype (autocast's, if on) and reduced in float32. `chunk_rows` tokens
// at a time (0: as many as fit 64 MiB of float32 logits). Autograd-aware for h and weight.
// Backward computes the logits again, in blocks of vocabulary columns for all tokens (so each
// block of the weight's gradient is one matmul), unless all of them take at most `keep_bytes`
// (-1: 256 MiB) in float32: then the forward keeps their gradient (one such tensor; the unfused
// path keeps two).
at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                int64_t chunk_rows = 0, int64_t keep_bytes = -1);
at::Tensor linear_cross_entropy_reference(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels);

// Per-token cross entropy of given logits (B,T,V): float32 (float64 for float64 logits).
at::Tensor cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace titan::kernels
