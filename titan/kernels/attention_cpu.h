// titan.cpp's exact causal attention for the CPU, for the small heads where ATen's CPU flash
// kernel spends its time on per-block overhead (head size 16-64): queries in blocks of 128,
// each block's scores against all earlier keys held whole in float32, one BLAS matmul for the
// scores and one for the output (two more for each gradient), softmax rows vectorised
// (cpu/fused_cpu.h). Grouped-query heads read their key/value head without copies. Float32 or
// bfloat16 in, computed in float32. The reference is kernels::attention_reference.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <utility>

namespace titan::kernels {

// q (B,Hq,T,hd), k and v (B,Hk,S,hd), Hq a multiple of Hk, any strides -> output (B,Hq,T,hd)
// in q's dtype and the logsumexp of each score row (B,Hq,T), float32.
// Document masking (block-causal): `doc_starts` (B,T) int64, with S == T, holds for each position
// the first position of its document; a query then sees only the keys of its own document, and
// each block of queries reads only the keys from its first query's document on (the work falls
// with the documents' lengths). Undefined: causal over the whole sequence.
std::pair<at::Tensor, at::Tensor> cpu_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, double scale,
                                                        const at::Tensor& doc_starts = {});
// Gradients of q, k and v from the output's gradient and what the forward returned.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_attention_backward(const at::Tensor& grad_out,
                                                                      const at::Tensor& q, const at::Tensor& k,
                                                                      const at::Tensor& v, const at::Tensor& out,
                                                                      const at::Tensor& lse, double scale,
                                                                      const at::Tensor& doc_starts = {});

}  // namespace titan::kernels
