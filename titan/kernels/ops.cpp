#include "titan/kernels/ops.h"

#include <ATen/autocast_mode.h>
#include <c10/core/TensorImpl.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/generated/Functions.h>

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "titan/kernels/attention_cpu.h"
#include "titan/kernels/fused_ops.h"

namespace titan::kernels {

struct OpCheckpointScope::State {
  Mode mode;
  std::vector<at::Tensor>* kept;
  int64_t linears = 0;  // linear() calls so far in the region
  size_t next = 0;      // Replay: the next kept output to take

  at::Tensor take() {
    if (next >= kept->size())
      throw std::logic_error("op-level activation checkpointing: the recompute ran more kept ops than the forward");
    return (*kept)[next++];
  }
};

namespace {

thread_local OpCheckpointScope::State* t_state = nullptr;

using torch::autograd::SavedVariable;

bool flash_cpu_ok(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto dt = q.scalar_type();
  return q.is_cpu() && (dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf) && k.scalar_type() == dt &&
         v.scalar_type() == dt && q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.size(1) > 0 &&
         q.size(1) % k.size(1) == 0 && k.size(1) == v.size(1);
}

// A tensor over `t`'s memory with no autograd history and no view relation, to which a node
// can be attached as if an op had just produced it.
at::Tensor fresh_alias(const at::Tensor& t, at::IntArrayRef sizes, at::IntArrayRef strides) {
  at::Tensor a = at::empty({0}, t.options().requires_grad(false));
  a.set_(t.storage(), t.storage_offset(), sizes, strides);
  return a;
}

// What at::linear builds for a contiguous (..., in) input: a view to 2D, mm with weight.t(),
// an unsafe view back; with `out` (kept from the forward) as the mm result.
at::Tensor replay_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out) {
  const at::Tensor xc = autocast_matmul_input(x), wc = autocast_matmul_input(weight);
  const int64_t in = xc.size(-1), rows = xc.numel() / in, out_features = wc.size(0);
  at::Tensor x2d = xc.reshape({rows, in});
  at::Tensor wt = wc.t();
  const at::Tensor out_c = out.contiguous();  // at::linear's result is contiguous already
  at::Tensor out2d = fresh_alias(out_c, {rows, out_features}, {out_features, 1});
  if (torch::autograd::compute_requires_grad(x2d, wt)) {
    auto node = std::shared_ptr<torch::autograd::generated::MmBackward0>(new torch::autograd::generated::MmBackward0(),
                                                                         torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(x2d, wt));
    node->self_ = SavedVariable(x2d, false);
    node->self_layout = x2d.layout();
    node->self_sym_sizes = x2d.sym_sizes().vec();
    node->self_sym_strides = x2d.sym_strides().vec();
    node->mat2_ = SavedVariable(wt, false);
    node->mat2_layout = wt.layout();
    node->mat2_sym_sizes = wt.sym_sizes().vec();
    node->mat2_sym_strides = wt.sym_strides().vec();
    torch::autograd::set_history(out2d, node);
  }
  std::vector<int64_t> shape = xc.sizes().vec();
  shape.back() = out_features;
  return at::_unsafe_view(out2d, shape);
}

// What ATen's flash attention for CPU builds, with its kept output and logsumexp.
at::Tensor replay_flash_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const at::Tensor& out_kept, const at::Tensor& lse_kept) {
  at::Tensor out = fresh_alias(out_kept, out_kept.sizes(), out_kept.strides());
  at::Tensor lse = fresh_alias(lse_kept, lse_kept.sizes(), lse_kept.strides());
  if (torch::autograd::compute_requires_grad(q, k, v)) {
    using Node = torch::autograd::generated::ScaledDotProductFlashAttentionForCpuBackward0;
    auto node = std::shared_ptr<Node>(new Node(), torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(q, k, v));
    node->dropout_p = 0.0;
    node->is_causal = true;
    node->scale = scale;
    node->query_ = SavedVariable(q, false);
    node->key_ = SavedVariable(k, false);
    node->value_ = SavedVariable(v, false);
    torch::autograd::set_history(out, node);
    node->output_ = SavedVariable(out, true);
    node->logsumexp_ = SavedVariable(lse, true);
  }
  return out;
}

// titan.cpp's CPU attention (attention_cpu.h) as an autograd function.
struct CpuAttentionFunction : public torch::autograd::Function<CpuAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale, const at::Tensor* doc_starts) {
    auto [out, lse] = cpu_attention_forward(q, k, v, scale, *doc_starts);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["docs"] = *doc_starts;
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dq, dk, dv] = cpu_attention_backward(grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["scale"].toDouble(),
                                               ctx->saved_data["docs"].toTensor());
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

// The same node with the output kept by op-level checkpointing: nothing is recomputed.
struct Kept {
  at::Tensor out, lse;
};
struct CpuAttentionReplayFunction : public torch::autograd::Function<CpuAttentionReplayFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale, const at::Tensor* doc_starts, const Kept* kept) {
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["docs"] = *doc_starts;
    ctx->saved_data["out"] = kept->out;
    ctx->saved_data["lse"] = kept->lse;
    ctx->saved_data["scale"] = scale;
    return fresh_alias(kept->out, kept->out.sizes(), kept->out.strides());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dq, dk, dv] = cpu_attention_backward(grads[0], s[0], s[1], s[2], ctx->saved_data["out"].toTensor(),
                                               ctx->saved_data["lse"].toTensor(), ctx->saved_data["scale"].toDouble(),
                                               ctx->saved_data["docs"].toTensor());
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool titan_cpu_ok(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return flash_cpu_ok(q, k, v) && q.scalar_type() != at::kHalf && fusable(q) && k.size(2) == q.size(2);
}

}  // namespace

at::Tensor autocast_matmul_input(const at::Tensor& t) {
  // As autocast's cached_cast: floating-point tensors go to the lower-precision dtype.
  const auto device = t.device().type();
  if (!at::autocast::is_autocast_enabled(device) || !t.is_floating_point()) return t;
  const auto dtype = at::autocast::get_autocast_dtype(device);
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

OpCheckpointScope::OpCheckpointScope(Mode mode, std::vector<at::Tensor>& kept)
    : state_(new State{mode, &kept}), previous_(t_state) {
  t_state = state_.get();
}

OpCheckpointScope::~OpCheckpointScope() { t_state = previous_; }

void OpCheckpointScope::finish() const {
  if (state_->mode == Mode::Replay && state_->next != state_->kept->size())
    throw std::logic_error("op-level activation checkpointing: the recompute ran fewer kept ops than the forward");
}

std::optional<OpCheckpointScope::Mode> op_checkpoint_mode() {
  if (!t_state) return std::nullopt;
  return t_state->mode;
}

void op_checkpoint_keep(const at::Tensor& t) {
  TORCH_CHECK(t_state && t_state->mode == OpCheckpointScope::Mode::Record, "op_checkpoint_keep: not recording");
  t_state->kept->push_back(t);
}

at::Tensor op_checkpoint_take() {
  TORCH_CHECK(t_state && t_state->mode == OpCheckpointScope::Mode::Replay, "op_checkpoint_take: not replaying");
  return t_state->take();
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight) {
  OpCheckpointScope::State* st = t_state;
  if (!st) return at::linear(x, weight);
  // torchtitan's "op" policy: keep every second matmul, starting with the first.
  const bool keep = ++st->linears % 2 == 1;
  if (st->mode == OpCheckpointScope::Mode::Record) {
    at::Tensor out = at::linear(x, weight);
    if (keep) st->kept->push_back(out);
    return out;
  }
  if (!keep) return at::linear(x, weight);
  return replay_linear(x, weight, st->take());
}

// The block-causal mask (B,1,T,T): key j is seen by query i when start[i] <= j <= i.
static at::Tensor document_mask(const at::Tensor& doc_starts, int64_t T, const at::Device& device) {
  const at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device));
  const at::Tensor starts = doc_starts.to(device).unsqueeze(-1);  // (B,T,1)
  return pos.view({1, 1, T}).le(pos.view({1, T, 1})).logical_and(pos.view({1, 1, T}).ge(starts)).unsqueeze(1);
}

at::Tensor document_starts(const at::Tensor& tokens, int64_t eos) {
  // Documents counted up to each position, an EOS closing its own: the document of position t is
  // the number of EOS before t; its first position is one past the last EOS before t.
  const int64_t T = tokens.size(1);
  const at::Tensor pos = at::arange(T, tokens.options().dtype(at::kLong));
  const at::Tensor after_eos = at::where(tokens.eq(eos), pos + 1, at::zeros_like(pos));  // (B,T)
  // start[t] = max over s < t of after_eos[s] (0 when none): a running maximum shifted by one.
  at::Tensor running = std::get<0>(at::cummax(after_eos, 1));
  return at::cat({at::zeros({tokens.size(0), 1}, running.options()), running.narrow(1, 0, T - 1)}, 1).contiguous();
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool fused,
                     const at::Tensor& doc_starts) {
  OpCheckpointScope::State* st = t_state;
  const bool replay = st && st->mode == OpCheckpointScope::Mode::Replay;
  const bool documents = doc_starts.defined();
  if (fused && titan_cpu_ok(q, k, v)) {
    if (replay) {
      Kept kept{st->take(), st->take()};
      return CpuAttentionReplayFunction::apply(q, k, v, scale, &doc_starts, &kept);
    }
    if (st) {  // recording (autograd is off in a checkpointed forward)
      auto [out, lse] = cpu_attention_forward(q, k, v, scale, doc_starts);
      st->kept->insert(st->kept->end(), {out, lse});
      return out;
    }
    return CpuAttentionFunction::apply(q, k, v, scale, &doc_starts);
  }
  if (!documents && flash_cpu_ok(q, k, v)) {
    if (replay) {
      at::Tensor out = st->take(), lse = st->take();
      return replay_flash_cpu(q, k, v, scale, out, lse);
    }
    auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, /*is_causal=*/true, std::nullopt,
                                                                      scale);
    if (st) st->kept->insert(st->kept->end(), {out, lse});
    return out;
  }
  // Other devices, and document masks off titan.cpp's CPU kernel: ATen's choice of kernel. Under
  // op-level checkpointing it is recomputed.
  const int64_t rep = q.size(1) / k.size(1);
  const std::optional<at::Tensor> mask =
      documents ? std::optional<at::Tensor>(document_mask(doc_starts, q.size(2), q.device())) : std::nullopt;
  if (rep > 1 && (documents || (q.is_cuda() && q.scalar_type() != at::kBFloat16 && q.scalar_type() != at::kHalf))) {
    // Flash attention (bf16/fp16) takes grouped-query heads as they are; for float32 (and with a
    // mask) the memory-efficient kernel does not, and enable_gqa would fall back to the math
    // kernel (the whole score matrix in memory): K and V are repeated per query head instead, as
    // torchtitan does.
    return at::scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), mask, 0.0,
                                            /*is_causal=*/!documents, scale, /*enable_gqa=*/false);
  }
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/!documents, scale,
                                          /*enable_gqa=*/rep > 1);
}

at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                               const at::Tensor& doc_starts) {
  const int64_t rep = q.size(1) / k.size(1), T = q.size(2), S = k.size(2);
  at::Tensor kk = rep == 1 ? k : k.repeat_interleave(rep, 1), vv = rep == 1 ? v : v.repeat_interleave(rep, 1);
  at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)) * scale;  // (B,H,T,S)
  at::Tensor mask = doc_starts.defined() ? document_mask(doc_starts, T, q.device())
                                         : at::ones({T, S}, q.options().dtype(at::kBool)).tril();
  scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1), vv);
}

namespace {

bool part_on_titan_cpu(const at::Tensor& q) {
  return q.is_cpu() && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16);
}

// The math path of a part: masked scores (B,Hq,T,S) float32 and the keys and values per query head.
struct PartScores {
  at::Tensor scores, kk, vv;
};
PartScores part_scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                       const at::Tensor& doc_starts, int64_t offset) {
  const int64_t rep = q.size(1) / k.size(1), T = q.size(2), S = k.size(2);
  PartScores p;
  p.kk = (rep == 1 ? k : k.repeat_interleave(rep, 1)).to(at::kFloat);
  p.vv = (rep == 1 ? v : v.repeat_interleave(rep, 1)).to(at::kFloat);
  const auto longs = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor qpos = (at::arange(T, longs) + offset).view({T, 1}), kpos = at::arange(S, longs).view({1, S});
  at::Tensor allowed = kpos.le(qpos).view({1, 1, T, S});
  if (doc_starts.defined()) allowed = allowed.logical_and(kpos.view({1, 1, 1, S}).ge(doc_starts.to(q.device()).view({-1, 1, T, 1})));
  p.scores = (at::matmul(q.to(at::kFloat), p.kk.transpose(-2, -1)) * scale)
                 .masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return p;
}

// exp(scores - lse), 0 in rows that see no key (lse -inf).
at::Tensor part_probs(const at::Tensor& scores, const at::Tensor& lse) {
  const at::Tensor finite = at::where(at::isinf(lse), at::zeros_like(lse), lse);
  return (scores - finite.unsqueeze(-1)).exp();
}

// (B,Hq,S,hd) summed over each key/value head's group of query heads -> (B,Hk,S,hd).
at::Tensor sum_groups(const at::Tensor& g, int64_t Hk) {
  const int64_t rep = g.size(1) / Hk;
  return rep == 1 ? g : g.view({g.size(0), Hk, rep, g.size(2), g.size(3)}).sum(2);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> attention_part_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         double scale, const at::Tensor& doc_starts, int64_t offset) {
  if (part_on_titan_cpu(q)) {
    auto [out, lse] = cpu_attention_forward(q.to(at::kFloat), k, v, scale, doc_starts, offset);
    return {out, lse};
  }
  // Plain float32 math (the caller owns the gradients), autocast or not.
  const at::NoGradGuard no_grad;
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const PartScores p = part_scores(q, k, v, scale, doc_starts, offset);
  const at::Tensor lse = at::logsumexp(p.scores, -1);
  return {at::matmul(part_probs(p.scores, lse), p.vv), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_part_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                                       const at::Tensor& k, const at::Tensor& v,
                                                                       const at::Tensor& out, const at::Tensor& lse,
                                                                       double scale, const at::Tensor& doc_starts,
                                                                       int64_t offset) {
  if (part_on_titan_cpu(q)) {
    auto [dq, dk, dv] = cpu_attention_backward(grad_out.to(at::kFloat), q.to(at::kFloat), k.to(at::kFloat),
                                               v.to(at::kFloat), out, lse, scale, doc_starts, offset);
    return {dq, dk, dv};
  }
  const at::NoGradGuard no_grad;
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const PartScores p = part_scores(q, k, v, scale, doc_starts, offset);
  const at::Tensor probs = part_probs(p.scores, lse.to(at::kFloat));
  const at::Tensor dout = grad_out.to(at::kFloat);
  const at::Tensor di = (dout * out.to(at::kFloat)).sum(-1, /*keepdim=*/true);
  const at::Tensor ds = probs * (at::matmul(dout, p.vv.transpose(-2, -1)) - di);  // (B,Hq,T,S)
  const int64_t Hk = k.size(1);
  return {at::matmul(ds, p.kk) * scale, sum_groups(at::matmul(ds.transpose(-2, -1), q.to(at::kFloat)) * scale, Hk),
          sum_groups(at::matmul(probs.transpose(-2, -1), dout), Hk)};
}

std::string attention_backend(at::Device device, at::ScalarType dtype, bool fused) {
  if (fused && device.is_cpu() && (dtype == at::kFloat || dtype == at::kBFloat16) && fused_kernels_enabled())
    return "titan.cpp's causal attention for CPU (fused kernels), grouped-query heads without copies";
  if (device.is_cpu() && (dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf))
    return "flash attention for CPU (ATen), causal, grouped-query heads without copies";
  if (device.is_cuda())
    return dtype == at::kBFloat16 || dtype == at::kHalf
               ? "ATen's scaled_dot_product_attention on CUDA (flash), causal, grouped-query heads without copies"
               : "ATen's scaled_dot_product_attention on CUDA (memory-efficient), causal, K and V repeated per query "
                 "head";
  return "ATen's scaled_dot_product_attention (math), causal";
}

}  // namespace titan::kernels
