#include "titan/distributed/tensor_parallel.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "titan/distributed/ring.h"
#include "titan/kernels/float8.h"
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

// Identity; backward keeps the gradient on tp rank 0 and zeroes it elsewhere.
struct GradientOnce : public torch::autograd::Function<GradientOnce> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {group_of(ctx)->rank() == 0 ? grads[0] : at::zeros_like(grads[0]), at::Tensor()};
  }
};

// Identity; backward sums the gradient over the group.
struct SumGradient : public torch::autograd::Function<SumGradient> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor g = grads[0].contiguous().clone();
    group_of(ctx)->all_reduce(g).wait();
    return {g, at::Tensor()};
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

// ---- async tensor parallelism --------------------------------------------------------------

constexpr int kAsyncTag = 0x7a5;  // the tp group carries no other point-to-point traffic

// All-gather on dim 1 with work on each block as it arrives: fn(block, owner) runs on this
// rank's block while it travels to the next rank, then on each block received while the
// following one is in flight. Returns the gathered (B, W*t, ...).
at::Tensor ring_all_gather(const at::Tensor& x, Group& g, const std::function<void(const at::Tensor&, int)>& fn) {
  const int W = g.size(), r = g.rank();
  const int64_t t = x.size(1), seq = next_ring_seq(&g);
  ++comm_stats().calls[static_cast<size_t>(Collective::AllGather)];
  std::vector<int64_t> full = x.sizes().vec();
  full[1] *= W;
  at::Tensor out = at::empty(full, x.options());
  at::Tensor cur = x.contiguous();
  for (int step = 0; step < W; ++step) {
    const int owner = (r - step + W) % W;
    out.narrow(1, owner * t, t).copy_(cur);
    at::Tensor next;
    std::optional<RingStep> ring;
    if (step + 1 < W) {
      next = at::empty_like(cur);
      ring.emplace(g, cur, next, (r + 1) % W, (r - 1 + W) % W, kAsyncTag, "tp async all-gather", seq * W + step,
                   Collective::AllGather);
    }
    fn(cur, owner);
    if (ring) {
      ring->wait();
      cur = next;
    }
  }
  return out;
}

// Reduce-scatter on dim 1 of a sum whose blocks are computed on demand: partial(c) is this
// rank's term of block c (B, t, ...). Each rank computes one block's term while the running sum
// of the block before travels; it ends with the sum of its own block.
at::Tensor ring_reduce_scatter(Group& g, const std::function<at::Tensor(int)>& partial) {
  const int W = g.size(), r = g.rank();
  const int64_t seq = next_ring_seq(&g);
  ++comm_stats().calls[static_cast<size_t>(Collective::ReduceScatter)];
  // Step s works on block (r + s + 1) % W, the last on r's own; sums go to the previous rank.
  at::Tensor acc = partial((r + 1) % W).contiguous();
  for (int step = 0; step + 1 < W; ++step) {
    at::Tensor in = at::empty_like(acc);
    RingStep ring(g, acc, in, (r - 1 + W) % W, (r + 1) % W, kAsyncTag, "tp async reduce-scatter", seq * W + step,
                  Collective::ReduceScatter);
    at::Tensor mine = partial((r + step + 2) % W);
    ring.wait();
    acc = (in + mine).contiguous();
  }
  return acc;
}

// A linear layer's local product for async TP: x W^T, or its float8 GEMM with the input's amax
// given (so that a block of rows is cast with the scale of all of them).
at::Tensor local_product(const at::Tensor& x, const at::Tensor& w, const kernels::Float8Config* f8,
                         const at::Tensor& amax, const kernels::Float8Tensor* w8) {
  if (!f8) return at::linear(x, w);
  const int64_t K = x.size(-1);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = w.size(0);
  return kernels::float8_forward(x.reshape({-1, K}), amax.dim() ? amax.reshape({-1, 1}) : amax, *w8, *f8).view(shape);
}

// Rows of a linear layer's input gradient, go (..., N) rows @ w -> (rows, K). A float8 layer takes
// the output gradient's amax (that of the whole, or of these rows for the rowwise recipes) and the
// weight cast for this GEMM; when undefined, they come from go, which must then be the whole.
at::Tensor input_grad_rows(const at::Tensor& go, const at::Tensor& w, const kernels::Float8Config* f8,
                           at::Tensor amax, const std::optional<kernels::Float8Tensor>& wg) {
  const at::Tensor g2 = go.reshape({-1, w.size(0)});
  if (!f8) return g2.mm(w);
  if (!amax.defined()) amax = kernels::float8_grad_amax(g2, *f8);
  return kernels::float8_grad_input(g2, amax, wg ? *wg : kernels::float8_backward_weight(w, *f8), *f8);
}

// A linear layer's weight gradient on the whole tensors: go (..., N)^T @ x (..., K). With `x8` (a
// float8 layer's input as it was cast for the forward) x is not read.
at::Tensor weight_grad(const at::Tensor& x, const at::Tensor& go, const at::Tensor& w, const kernels::Float8Config* f8,
                       const std::optional<kernels::Float8Tensor>& x8 = std::nullopt) {
  const int64_t N = w.size(0), K = w.size(1);
  const at::Tensor g2 = go.reshape({-1, N});
  if (!f8) return g2.t().mm(x.reshape({-1, K}));
  return kernels::float8_grad_weight(x8 ? at::Tensor() : x.reshape({-1, K}), g2.contiguous(), *f8, x8);
}

using Float8List = std::vector<const kernels::Float8Config*>;

// Whether every layer of a list is float8 tensorwise: then their input is cast to float8 once and
// gathered as float8.
bool float8_input(const Float8List& f8) {
  return std::all_of(f8.begin(), f8.end(),
                     [](const auto* c) { return c && c->recipe == kernels::Float8Recipe::kTensorwise; });
}

// Async TP's backward of column-wise linears: their summed input gradient (B,T,K), reduce-scattered
// on the sequence as a ring, each block's rows computed while the running sum of the block before
// travels. Float8 scales are those of the whole output gradients. -> (B,T/tp,K), or undefined
// when no layer has a gradient.
at::Tensor async_input_grad(const at::Tensor& full, const std::vector<at::Tensor>& saved,
                            const variable_list& grads, const std::vector<const kernels::Float8Config*>& f8,
                            Group& g) {
  const size_t n = saved.size() - 1;
  const int64_t B = full.size(0), t = full.size(1) / g.size(), K = full.size(-1);
  std::vector<at::Tensor> amax(n);
  std::vector<std::optional<kernels::Float8Tensor>> wg(n);
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    if (!grads[i].defined()) continue;
    any = true;
    if (const auto* c = f8[i]) {
      const at::Tensor& w = saved[i + 1];
      amax[i] = kernels::float8_grad_amax(grads[i].reshape({-1, w.size(0)}), *c);
      if (amax[i].dim()) amax[i] = amax[i].view({B, -1, 1});  // per row (token)
      wg[i] = kernels::float8_backward_weight(w, *c);
    }
  }
  if (!any) return {};
  return ring_reduce_scatter(g, [&](int block) {
    at::Tensor sum;  // summed last layer first, as autograd adds them up in the per-layer form
    for (size_t i = n; i-- > 0;) {
      if (!grads[i].defined()) continue;
      at::Tensor a = amax[i];
      if (a.defined() && a.dim()) a = a.narrow(1, block * t, t).reshape({-1, 1});
      const at::Tensor gx = input_grad_rows(grads[i].narrow(1, block * t, t), saved[i + 1], f8[i], a, wg[i]);
      sum = sum.defined() ? sum + gx : gx;
    }
    return sum.view({B, t, K});
  });
}

// Column-wise linears on a sequence-sharded input x (B,t,D): the all-gather (blocking, or a ring
// pipelined with their products) and each layer's product. With float8 tensorwise layers the
// input is cast to e4m3 before the gather, with the scale of the whole sequence.
struct AllGatherLinears : public torch::autograd::Function<AllGatherLinears> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights, Group* g,
                               const Float8List* f8, bool async, bool cast_input) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    ctx->saved_data["f8"] = reinterpret_cast<int64_t>(f8);
    ctx->saved_data["async"] = async;
    const int W = g->size();
    const int64_t B = x.size(0), t = x.size(1), D = x.size(-1);
    TORCH_CHECK(!cast_input || float8_input(*f8), "a float8 all-gather needs float8 tensorwise layers");
    std::vector<kernels::Float8Tensor> w8(weights.size());
    for (size_t i = 0; i < weights.size(); ++i)
      if (const auto* c = (*f8)[i]) w8[i] = kernels::float8_forward_weight(weights[i], *c);
    // A tensorwise scale spans the whole sequence: the maximum of the ranks' amaxes, one
    // all-reduce for all the layers.
    at::Tensor amax;
    if (std::any_of(f8->begin(), f8->end(),
                    [](const auto* c) { return c && c->recipe == kernels::Float8Recipe::kTensorwise; })) {
      amax = x.abs().max().to(at::kFloat).reshape({1});
      g->all_reduce(amax, /*max=*/true).wait();
      amax = amax.reshape({});
    }
    at::Tensor scale, gathered;  // gathered: the input (B,W*t,D) in x's dtype, or as e4m3 bytes
    if (cast_input) {
      scale = kernels::float8_scale(amax, at::kFloat8_e4m3fn, /*pow2=*/false);
      ctx->saved_data["x_scale"] = scale;
    }
    const at::Tensor mine = cast_input ? kernels::cast_to_float8(x, scale, at::kFloat8_e4m3fn).view(at::kByte) : x;
    // Each layer's product on a block of the sequence (B,n,D) -> (B,n,out/tp).
    auto product = [&](size_t i, const at::Tensor& block) {
      const int64_t n = block.size(1);
      const at::Tensor rows = block.reshape({-1, D});
      at::Tensor out;
      if (cast_input) {
        out = kernels::float8_output({rows.view(at::kFloat8_e4m3fn), scale}, w8[i], x.scalar_type(), *(*f8)[i]);
      } else if (const auto* c = (*f8)[i]) {
        out = kernels::float8_forward(rows, amax.defined() && c->recipe == kernels::Float8Recipe::kTensorwise
                                                ? amax
                                                : kernels::float8_input_amax(rows, *c),
                                      w8[i], *c);
      } else {
        out = at::linear(rows, weights[i]);
      }
      return out.view({B, n, -1});
    };
    std::vector<at::Tensor> outs;
    if (async) {
      for (const auto& w : weights) outs.push_back(at::empty({B, W * t, w.size(0)}, x.options()));
      gathered = ring_all_gather(mine, *g, [&](const at::Tensor& block, int owner) {
        for (size_t i = 0; i < weights.size(); ++i) outs[i].narrow(1, owner * t, t).copy_(product(i, block));
      });
    } else {
      gathered = all_gather_dim1(mine, *g);
      for (size_t i = 0; i < weights.size(); ++i) outs.push_back(product(i, gathered));
    }
    std::vector<at::Tensor> saved{gathered};
    for (const auto& w : weights) saved.push_back(w);
    ctx->save_for_backward(saved);
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    Group* g = group_of(ctx);
    const auto* f8 = reinterpret_cast<const Float8List*>(ctx->saved_data["f8"].toInt());
    const at::Tensor& full = saved[0];
    std::optional<kernels::Float8Tensor> x8;
    if (ctx->saved_data.count("x_scale"))
      x8 = kernels::Float8Tensor{full.view(at::kFloat8_e4m3fn).reshape({-1, full.size(-1)}),
                                 ctx->saved_data["x_scale"].toTensor()};
    const size_t n = saved.size() - 1;
    variable_list out{at::Tensor()};
    if (ctx->saved_data["async"].toBool()) {
      out[0] = async_input_grad(full, saved, grads, *f8, *g);
    } else {
      // Summed last layer first, the order in which autograd adds them up in the per-layer form
      // (for attention: v's, k's, then q's), so that the two give the same bits.
      at::Tensor grad_full;
      for (size_t i = n; i-- > 0;) {
        if (!grads[i].defined()) continue;
        const at::Tensor gx = input_grad_rows(grads[i], saved[i + 1], (*f8)[i], {}, {});
        grad_full = grad_full.defined() ? grad_full + gx : gx;
      }
      if (grad_full.defined()) out[0] = reduce_scatter_dim1(grad_full.view(full.sizes()), *g);
    }
    for (size_t i = 0; i < n; ++i) {
      if (!grads[i].defined()) {
        out.emplace_back();
        continue;
      }
      const at::Tensor& w = saved[i + 1];
      out.push_back(weight_grad(full, grads[i], w, (*f8)[i], x8).to(w.scalar_type()));
    }
    out.emplace_back();  // group
    out.emplace_back();  // f8
    out.emplace_back();  // async
    out.emplace_back();  // cast_input
    return out;
  }
};

// A row-wise linear: its partial products reduce-scattered on the sequence, block by block while
// the running sums travel.
struct LinearReduceScatter : public torch::autograd::Function<LinearReduceScatter> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, Group* g,
                            const kernels::Float8Config* f8) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    ctx->saved_data["f8"] = reinterpret_cast<int64_t>(f8);
    ctx->save_for_backward({x, w});
    const int W = g->size();
    const int64_t t = x.size(1) / W;
    kernels::Float8Tensor w8;
    at::Tensor amax;  // the whole input's (its split reduced over tp), rows as (B, T, 1) when rowwise
    if (f8) {
      w8 = kernels::float8_forward_weight(w, *f8);
      amax = kernels::float8_input_amax(x.reshape({-1, x.size(-1)}), *f8);
      if (amax.dim()) amax = amax.view({x.size(0), x.size(1), 1});
    }
    return ring_reduce_scatter(*g, [&](int c) {
      const at::Tensor a = amax.defined() && amax.dim() ? amax.narrow(1, c * t, t) : amax;
      return local_product(x.narrow(1, c * t, t), w, f8, a, &w8);
    });
  }

  // The output gradient gathered as a ring, each block's rows of the input gradient computed while
  // the next block is in flight; then the weight gradient on the whole.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    Group* g = group_of(ctx);
    const auto* f8 = reinterpret_cast<const kernels::Float8Config*>(ctx->saved_data["f8"].toInt());
    const at::Tensor &x = saved[0], &w = saved[1], go = grads[0].contiguous();
    const int64_t B = go.size(0), t = go.size(1), K = w.size(1);
    at::Tensor amax;  // tensorwise: the whole gradient's, the maximum over the ranks' blocks
    std::optional<kernels::Float8Tensor> wg;
    if (f8) {
      wg = kernels::float8_backward_weight(w, *f8);
      if (f8->recipe == kernels::Float8Recipe::kTensorwise) {
        amax = go.abs().max().to(at::kFloat).reshape({1});
        g->all_reduce(amax, /*max=*/true).wait();
        amax = amax.reshape({});
      }
    }
    at::Tensor gx = at::empty({B, g->size() * t, K}, go.options());
    const at::Tensor go_full = ring_all_gather(go, *g, [&](const at::Tensor& block, int owner) {
      gx.narrow(1, owner * t, t).copy_(input_grad_rows(block, w, f8, amax, wg).view({B, t, K}));
    });
    return {gx, weight_grad(x, go_full, w, f8).to(w.scalar_type()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<at::Tensor> all_gather_linears(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                                           const std::vector<const kernels::Float8Config*>& float8, Group& group,
                                           bool async, bool float8_gather) {
  return AllGatherLinears::apply(x, at::TensorList(weights), &group, &float8, async, float8_gather);
}

bool gathers_float8(const std::vector<const kernels::Float8Config*>& float8) { return float8_input(float8); }

at::Tensor linear_reduce_scatter(const at::Tensor& x, const at::Tensor& weight, const kernels::Float8Config* float8,
                                 Group& group) {
  return LinearReduceScatter::apply(x, weight, &group, float8);
}

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

InputStyle reduce_scatter_output(Group& group) {
  return [&group](const at::Tensor& x) { return reduce_scatter_sequence(x, group); };
}

InputStyle gradient_once(Group& group) {
  return [&group](const at::Tensor& x) { return GradientOnce::apply(x, &group); };
}

InputStyle sum_gradient(Group& group) {
  return [&group](const at::Tensor& x) { return SumGradient::apply(x, &group); };
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
