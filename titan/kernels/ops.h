// The two ops of a transformer block that op-level selective activation checkpointing keeps
// (torchtitan's "op" policy): a linear layer and causal attention. Model code calls these in
// place of at::linear and at::scaled_dot_product_attention; outside a checkpointed region they
// are exactly those ATen ops (attention with the fastest exact backend ATen has on the device).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace titan::kernels {

// x (..., in), weight (out, in) -> (..., out), no bias: at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight);

// Exact causal attention with scale: q (B,Hq,T,hd), k and v (B,Hk,T,hd), Hq a multiple of Hk
// (grouped-query attention without copying k and v where the backend allows). CPU: titan.cpp's
// kernel (attention_cpu.h) when `fused`, else ATen's flash-attention kernel for CPU; CUDA:
// ATen's scaled_dot_product_attention, which picks flash (bf16/fp16) or memory-efficient
// attention; anything else: ATen's math path.
// Document masking (block-causal, attn_mask_type = "block_causal"): `doc_starts` (B,T) int64
// holds each position's document's first position (document_starts); a query attends only to
// the earlier keys of its document. titan.cpp's CPU kernel skips the keys before a block's first
// document; elsewhere ATen's scaled_dot_product_attention runs with the boolean mask.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool fused = false,
                     const at::Tensor& doc_starts = {});
// Each position's document's first position, for tokens (B,T) whose documents end with `eos`
// (an EOS belongs to the document it ends, as torchtitan's document mask has it) -> (B,T) int64.
at::Tensor document_starts(const at::Tensor& tokens, int64_t eos);
// What autocast does to a matmul input on its device: the cast to the autocast dtype (an
// autograd-recorded .to()), or `t` itself when autocast is off or `t` is not floating point.
at::Tensor autocast_matmul_input(const at::Tensor& t);

// The math path (softmax(q k^T * scale + causal mask) v in the input dtype), for tests; with
// `doc_starts`, the block-causal mask.
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                               const at::Tensor& doc_starts = {});
// Attention over a part of the keys, with its logsumexp, for context parallelism to merge
// (attention_cpu.h's merge_partial_attention): q (B,Hq,T,hd), k and v (B,Hk,S,hd); query t sits
// at key position t + `offset` and sees the keys up to it, from its document's first key on when
// `doc_starts` (B,T) int64 gives it in key positions. -> output (B,Hq,T,hd) float32 (0 for a
// query that sees no key) and logsumexp (B,Hq,T) float32 (-inf there). CPU (float32, bfloat16):
// titan.cpp's kernel; elsewhere the math in ATen ops, the scores held whole.
std::pair<at::Tensor, at::Tensor> attention_part_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         double scale, const at::Tensor& doc_starts, int64_t offset);
// The part's gradients of q, k and v (float32) given `out` and `lse` of the whole attention.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_part_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                                       const at::Tensor& k, const at::Tensor& v,
                                                                       const at::Tensor& out, const at::Tensor& lse,
                                                                       double scale, const at::Tensor& doc_starts,
                                                                       int64_t offset);
// Which backend `attention` uses for this device and dtype (for the log).
std::string attention_backend(at::Device device, at::ScalarType dtype, bool fused);

// Op-level selective activation checkpointing of one region (a block). In the region's
// forward (autograd off) the recorder keeps the outputs of every attention and of the 1st,
// 3rd, 5th, ... linear; in backward the region is run again with autograd on, and those ops
// are not recomputed: their kept outputs are attached to the same autograd nodes ATen would
// have built, so gradients are bitwise those of a run without checkpointing.
class OpCheckpointScope {
 public:
  enum class Mode { Record, Replay };
  // Until destroyed, linear() and attention() on this thread record their kept outputs into
  // `kept` (Record) or take them from it in the same order (Replay).
  OpCheckpointScope(Mode mode, std::vector<at::Tensor>& kept);
  ~OpCheckpointScope();
  OpCheckpointScope(const OpCheckpointScope&) = delete;
  OpCheckpointScope& operator=(const OpCheckpointScope&) = delete;
  // Replay: throws if the region did not take exactly what was recorded.
  void finish() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
  State* previous_;
};

// Op-level checkpointing of an attention computed elsewhere (context parallelism's): the mode of
// the region this thread is in (none outside one); in a recorded forward keep the attention's
// output and logsumexp, and in the recompute take them back in the same order.
std::optional<OpCheckpointScope::Mode> op_checkpoint_mode();
void op_checkpoint_keep(const at::Tensor& t);
at::Tensor op_checkpoint_take();

}  // namespace titan::kernels
