#include "titan/distributed/tensor_parallel.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "titan/kernels/linear_cross_entropy.h"
#include "titan/kernels/ops.h"

namespace titan::distributed::tp {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

Group* group_of(AutogradContext* ctx) { return reinterpret_cast<Group*>(ctx->saved_data["group"].toInt()); }

// (B, t, ...) on each of W ranks -> (B, W*t, ...), rank r's block at [r*t, (r+1)*t).
at::Tensor all_gather_dim1(const at::Tensor& x, Group& g) {
  const int W = g.size();
  at::Tensor in = x.contiguous();
  at::Tensor out = at::empty({W * in.numel()}, in.options());
  g.all_gather(out, in).wait();
  std::vector<int64_t> stacked{W};
  for (int64_t s : in.sizes()) stacked.push_back(s);
  std::vector<int64_t> full = in.sizes().vec();
  full[1] *= W;
  return out.view(stacked).transpose(0, 1).reshape(full);
}

// (B, W*t, ...) partial sums -> (B, t, ...) of this rank, summed over the ranks.
at::Tensor reduce_scatter_dim1(const at::Tensor& x, Group& g) {
  const int W = g.size();
  std::vector<int64_t> split{x.size(0), W, x.size(1) / W};
  for (int64_t d = 2; d < x.dim(); ++d) split.push_back(x.size(d));
  at::Tensor in = x.reshape(split).transpose(0, 1).contiguous();  // (W, B, t, ...)
  std::vector<int64_t> mine = x.sizes().vec();
  mine[1] /= W;
  at::Tensor out = at::empty(mine, x.options());
  g.reduce_scatter_sum(out, in).wait();
  return out;
}

struct GatherSequence : public torch::autograd::Function<GatherSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return all_gather_dim1(x, *g);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {reduce_scatter_dim1(grads[0], *group_of(ctx)), at::Tensor()};
  }
};

struct ReduceScatterSequence : public torch::autograd::Function<ReduceScatterSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return reduce_scatter_dim1(x, *g);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_dim1(grads[0], *group_of(ctx)), at::Tensor()};
  }
};

struct GatherLastDim : public torch::autograd::Function<GatherLastDim> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    ctx->saved_data["local"] = x.size(-1);
    const int W = g->size();
    at::Tensor in = x.contiguous();
    at::Tensor out = at::empty({W * in.numel()}, in.options());
    g->all_gather(out, in).wait();
    std::vector<int64_t> stacked{W};
    for (int64_t s : in.sizes()) stacked.push_back(s);
    std::vector<int64_t> full = in.sizes().vec();
    full.back() *= W;
    return out.view(stacked).movedim(0, -2).reshape(full);  // (..., W, v) -> (..., W*v)
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Group* g = group_of(ctx);
    const int64_t v = ctx->saved_data["local"].toInt();
    return {grads[0].narrow(-1, g->rank() * v, v).contiguous(), at::Tensor()};
  }
};

constexpr int64_t kChunkLogitBytes = int64_t{64} << 20, kKeepLogitBytes = int64_t{256} << 20;

// Cross entropy over a vocabulary split across the tp ranks, each holding the logits of rows
// [first, first + V/tp) of the head: max, sum of exponentials and the target's logit reduced
// over the group, chunk by chunk over the tokens.
struct VocabParallelCrossEntropy : public torch::autograd::Function<VocabParallelCrossEntropy> {
  // h (N,D), w (Vl,D) in the matmul dtype, target (N) with -1 where ignored -> loss (N) float.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w, const at::Tensor& target,
                            int64_t first, Group* g) {
    RECORD_FUNCTION("titan::cross_entropy_forward", std::vector<c10::IValue>());
    const int64_t N = h.size(0), V = w.size(0);
    const int64_t chunk = std::max<int64_t>(1, kChunkLogitBytes / (V * 4));
    const bool keep = N * V * 4 <= kKeepLogitBytes;
    const auto f32 = h.options().dtype(at::kFloat);
    at::Tensor loss = at::empty({N}, f32), lse = at::empty({N}, f32);
    at::Tensor kept = keep ? at::empty({N, V}, f32) : at::Tensor();
    const at::Tensor local = target - first, in_range = local.ge(0).logical_and(local.lt(V));
    const at::Tensor index = at::where(in_range, local, at::zeros_like(local)).unsqueeze(1);
    for (int64_t r = 0; r < N; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      at::Tensor logits = at::mm(h.narrow(0, r, n), w.t()).to(at::kFloat);  // (n, V)
      at::Tensor m = std::get<0>(logits.max(1)).contiguous();
      g->all_reduce(m, /*max=*/true).wait();
      at::Tensor e = (logits - m.unsqueeze(1)).exp_();
      at::Tensor picked = at::where(in_range.narrow(0, r, n), logits.gather(1, index.narrow(0, r, n)).squeeze(1),
                                    at::zeros({n}, f32));
      at::Tensor sums = at::stack({e.sum(1), picked}).contiguous();  // (2, n): one reduction for both
      g->all_reduce(sums).wait();
      at::Tensor l = m + sums[0].log();
      lse.narrow(0, r, n).copy_(l);
      loss.narrow(0, r, n).copy_(at::where(target.narrow(0, r, n).ge(0), l - sums[1], at::zeros({n}, f32)));
      if (keep) {  // softmax over the whole vocabulary, this rank's columns, minus the one-hot
        at::Tensor p = kept.narrow(0, r, n);
        at::div_out(p, e, sums[0].unsqueeze(1));
        p.scatter_add_(1, index.narrow(0, r, n), at::where(in_range.narrow(0, r, n), -1.0, 0.0).to(at::kFloat).unsqueeze(1));
      }
    }
    ctx->save_for_backward({h, w, target, lse, kept, index, in_range});
    ctx->saved_data["chunk"] = chunk;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("titan::cross_entropy_backward", std::vector<c10::IValue>());
    const auto s = ctx->get_saved_variables();
    const at::Tensor &h = s[0], &w = s[1], &target = s[2], &lse = s[3], &kept = s[4], &index = s[5], &in_range = s[6];
    const int64_t N = h.size(0), chunk = ctx->saved_data["chunk"].toInt();
    at::Tensor g = at::where(target.ge(0), grads[0].to(at::kFloat), at::zeros({}, lse.options()));
    at::Tensor dh = at::empty_like(h), dw = at::zeros(w.sizes(), w.options().dtype(at::kFloat));
    for (int64_t r = 0; r < N; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      const at::Tensor hc = h.narrow(0, r, n);
      at::Tensor p;
      if (kept.defined()) {
        p = kept.narrow(0, r, n).mul(g.narrow(0, r, n).unsqueeze(1));
      } else {
        p = at::mm(hc, w.t()).to(at::kFloat).sub_(lse.narrow(0, r, n).unsqueeze(1)).exp_();
        p.scatter_add_(1, index.narrow(0, r, n),
                       at::where(in_range.narrow(0, r, n), -1.0, 0.0).to(at::kFloat).unsqueeze(1));
        p.mul_(g.narrow(0, r, n).unsqueeze(1));
      }
      const at::Tensor pc = p.to(h.scalar_type());
      dh.narrow(0, r, n).copy_(at::mm(pc, w));  // this rank's columns: a partial sum over tp
      dw.add_(at::mm(pc.t(), hc).to(at::kFloat));
    }
    return {dh, dw.to(w.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor gather_sequence(const at::Tensor& x, Group& group) {
  return group.trivial() ? x : GatherSequence::apply(x, &group);
}

at::Tensor reduce_scatter_sequence(const at::Tensor& x, Group& group) {
  return group.trivial() ? x : ReduceScatterSequence::apply(x, &group);
}

at::Tensor gather_last_dim(const at::Tensor& x, Group& group) {
  return group.trivial() ? x : GatherLastDim::apply(x, &group);
}

LinearStyle rowwise_linear(Group& group, LinearStyle local) {
  return [&group, local = std::move(local)](const at::Tensor& x, const at::Tensor& w) {
    const at::Tensor partial = local ? local(x, w) : kernels::linear(x, w);
    return reduce_scatter_sequence(partial, group);  // (B,T,out) partial -> (B,T/tp,out)
  };
}

InputStyle gather_input(Group& group) {
  return [&group](const at::Tensor& x) { return gather_sequence(x, group); };
}

EmbeddingStyle rowwise_embedding(Group& group, int64_t first_row) {
  return [&group, first_row](const at::Tensor& tokens, const at::Tensor& w) {
    const at::Tensor local = tokens - first_row;
    const at::Tensor mine = local.ge(0).logical_and(local.lt(w.size(0)));
    at::Tensor e = at::embedding(w, at::where(mine, local, at::zeros_like(local)));  // (B,T,D)
    e = e * mine.unsqueeze(-1).to(e.scalar_type());  // tokens of other ranks' rows add nothing
    return reduce_scatter_sequence(e, group);
  };
}

HeadLossStyle vocab_parallel_head_loss(Group& group, int64_t first_row, bool loss_parallel) {
  return [&group, first_row, loss_parallel](const at::Tensor& h, const at::Tensor& w, const at::Tensor& labels) {
    const at::Tensor full = gather_sequence(h, group);  // (B,T,D)
    if (!loss_parallel) return kernels::cross_entropy_per_token(gather_last_dim(at::linear(full, w), group), labels);
    const at::Tensor hc = kernels::autocast_matmul_input(full), wc = kernels::autocast_matmul_input(w);
    const int64_t D = hc.size(-1), N = hc.numel() / D;
    const at::Tensor flat = labels.reshape({N}).to(at::kLong);
    const at::Tensor target = at::where(flat.eq(kernels::kIgnoreIndex), at::full({}, -1, flat.options()), flat);
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    return VocabParallelCrossEntropy::apply(hc.reshape({N, D}), wc, target.contiguous(), first_row, &group)
        .view(labels.sizes());
  };
}

}  // namespace titan::distributed::tp
