// Tensor parallelism with sequence parallelism (Megatron-style, as torchtitan applies it): the
// autograd-aware collectives over the "tp" group, each with its dual in backward, and the
// styles parallelize installs on a model's hooks (titan/common/module.h). Knows no model: a
// style is a function of a layer's input and its local weight.
//
// Activations between blocks are sharded on the sequence (dim 1). A block's attention and
// feed-forward gather the sequence once at their input; column-wise linears then compute their
// share of the output features, row-wise linears their partial sums, which a reduce-scatter
// returns to sequence shards. The embedding is row-wise over the vocabulary; the output head is
// column-wise with the loss computed vocab-parallel (never gathering the logits), or with the
// logits gathered (parallelism.disable_loss_parallel).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "titan/common/module.h"
#include "titan/distributed/process_group.h"
#include "titan/kernels/float8.h"

namespace titan::distributed::tp {

// (B, T/tp, ...) -> (B, T, ...): all-gather on dim 1; backward reduce-scatters (sums) on dim 1.
at::Tensor gather_sequence(const at::Tensor& x, Group& group);
// (B, T, ...) partial sums -> (B, T/tp, ...) summed: reduce-scatter on dim 1; backward all-gathers.
at::Tensor reduce_scatter_sequence(const at::Tensor& x, Group& group);
// (..., V/tp) -> (..., V): all-gather on the last dim; backward keeps this rank's slice (every
// rank computes the same loss from the gathered tensor).
at::Tensor gather_last_dim(const at::Tensor& x, Group& group);

// Column-wise linears on a sequence-sharded x (B,T/tp,D) -> each layer's output (B,T,out/tp), the
// sequence gathered once for all of them. `float8[i]` (or null) is layer i's float8 conversion.
// - async (parallelism.enable_async_tensor_parallel): the all-gather split into tp blocks that
//   pass around the group point to point, each block multiplied by every weight as it arrives
//   while the next block is in flight.
// - float8_gather, where every layer is float8 tensorwise (gathers_float8), as torchao's float8 TP
//   styles: x is cast to e4m3 once, with the whole sequence's scale (the ranks' amaxes
//   all-reduced), and gathered as float8 bytes; the layers multiply the gathered float8 input.
// Scales are those of the whole sequence, so the numbers are those of a gather in high precision
// followed by each layer. Backward: the layers' input gradients summed and reduce-scattered, in
// high precision. `float8` must outlive the backward.
std::vector<at::Tensor> all_gather_linears(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                                           const std::vector<const kernels::Float8Config*>& float8, Group& group,
                                           bool async, bool float8_gather);
bool gathers_float8(const std::vector<const kernels::Float8Config*>& float8);
// Async TP's row-wise linear x (B,T,in/tp), weight (out, in/tp) -> (B,T/tp,out): block c's partial product
// computed while the running sum of the block before travels. Backward: the output gradient
// gathered, then the layer's backward.
at::Tensor linear_reduce_scatter(const at::Tensor& x, const at::Tensor& weight, const kernels::Float8Config* float8,
                                 Group& group);

// Styles. `group` must outlive the model's use of the style.
// Row-wise linear: x (B,T,in/tp) with weight (out, in/tp) -> (B,T/tp,out), reduce-scattered.
// `local` computes this rank's partial product (unset: x W^T; a float8 layer passes its own).
LinearStyle rowwise_linear(Group& group, LinearStyle local = {});
// Module input under sequence parallelism: (B,T/tp,D) -> (B,T,D).
InputStyle gather_input(Group& group);
// A module's partial-sum output back to sequence shards: (B,T,D) -> (B,T/tp,D), reduce-scattered.
InputStyle reduce_scatter_output(Group& group);
// For a computation every tp rank repeats on the same gathered input (a MoE router): identity;
// backward keeps the input's gradient on tp rank 0 only, so that the sequence's reduce-scatter
// counts it once.
InputStyle gradient_once(Group& group);
// For a value whose gradient is a partial sum over tp (the router's scores, multiplying the
// experts' partial outputs): identity; backward all-reduces the gradient.
InputStyle sum_gradient(Group& group);
// Row-wise embedding: this rank holds vocabulary rows [first, first + V/tp); tokens (B,T) ->
// (B,T/tp,D), reduce-scattered.
EmbeddingStyle rowwise_embedding(Group& group, int64_t first_row);
// The output head, column-wise (weight (V/tp, D), rows from first_row) on the gathered
// sequence, with the cross entropy computed vocab-parallel (loss_parallel) or on gathered
// logits; -> the loss of each token (B,T), the same on every tp rank.
HeadLossStyle vocab_parallel_head_loss(Group& group, int64_t first_row, bool loss_parallel);

}  // namespace titan::distributed::tp
