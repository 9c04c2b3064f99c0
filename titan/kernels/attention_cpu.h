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
#include <vector>

namespace titan::kernels {

// q (B,Hq,T,hd), k and v (B,Hk,S,hd), Hq a multiple of Hk, any strides -> output (B,Hq,T,hd)
// in q's dtype and the logsumexp of each score row (B,Hq,T), float32.
// Document masking (block-causal): `doc_starts` (B,T) int64 holds for each query the first key of
// its document (in key positions; negative: before the first key); a query then sees only the
// keys of its own document, and each block of queries reads only the keys from its first query's
// document on (the work falls with the documents' lengths). Undefined: causal over all the keys.
// `causal_offset` >= 0: the queries sit that many positions after the keys (query t sees keys up
// to t + causal_offset), for attention over a part of the keys, as context parallelism computes
// it. Without documents every query sees a key; with them a query whose document starts after
// the last key sees none: its output is 0 and its logsumexp -inf.
std::pair<at::Tensor, at::Tensor> cpu_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, double scale,
                                                        const at::Tensor& doc_starts = {}, int64_t causal_offset = 0);
// Gradients of q, k and v from the output's gradient and what the forward returned. Over a part
// of the keys, `out` and `lse` are those of the whole attention (merge_partial_attention): the
// gradients are then this part's share (q's summed over the parts).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_attention_backward(const at::Tensor& grad_out,
                                                                      const at::Tensor& q, const at::Tensor& k,
                                                                      const at::Tensor& v, const at::Tensor& out,
                                                                      const at::Tensor& lse, double scale,
                                                                      const at::Tensor& doc_starts = {},
                                                                      int64_t causal_offset = 0);
// The attention over all the keys from the attentions over parts of them: outputs (B,H,T,hd) and
// logsumexps (B,H,T) float32 -> the whole's output (float32) and logsumexp, weighting each part
// by exp(lse_part - lse).
std::pair<at::Tensor, at::Tensor> merge_partial_attention(const std::vector<at::Tensor>& outs,
                                                          const std::vector<at::Tensor>& lses);

}  // namespace titan::kernels
