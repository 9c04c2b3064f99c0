#include "titan/kernels/linear_cross_entropy.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "titan/kernels/cpu/fused_cpu.h"
#include "titan/kernels/fused_ops.h"
#include "titan/kernels/ops.h"

namespace titan::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

constexpr int64_t kChunkLogitBytes = int64_t{64} << 20;
// Up to this many bytes of float32 logits, the forward keeps d loss / d logits (one tensor, where
// the unfused path keeps two of that size) and backward needs no second matmul for them.
constexpr int64_t kDefaultKeepLogitBytes = int64_t{256} << 20;

at::ScalarType reduce_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// loss, lse and d loss / d logits (in place of `logits`, float32) of rows [r, r + n).
void cross_entropy_chunk(at::Tensor& logits, const at::Tensor& target, at::Tensor& loss, at::Tensor& lse) {
  const int64_t n = logits.size(0), V = logits.size(1);
  if (logits.is_cpu() && logits.scalar_type() == at::kFloat && fused_kernels_enabled()) {
    cpu::cpu_table().cross_entropy_rows(logits.data_ptr<float>(), n, V, target.data_ptr<int64_t>(),
                                        loss.data_ptr<float>(), lse.data_ptr<float>());
    return;
  }
  const at::Tensor valid = target.ge(0), tgt = target.clamp_min(0).unsqueeze(1);
  at::Tensor l = at::logsumexp(logits, {1});
  lse.copy_(l);
  loss.copy_(at::where(valid, l - logits.gather(1, tgt).squeeze(1), at::zeros_like(l)));
  logits.sub_(l.unsqueeze(1)).exp_();
  logits.scatter_add_(1, tgt, at::where(valid, -1.0, 0.0).to(logits.scalar_type()).unsqueeze(1));
}

struct LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
  // h (N,D), w (V,D) in the matmul dtype; target (N), -1 where ignored. Returns the loss per row (N).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w, const at::Tensor& target,
                            int64_t chunk, int64_t keep_bytes) {
    RECORD_FUNCTION("titan::cross_entropy_forward", std::vector<c10::IValue>());
    const int64_t N = h.size(0), V = w.size(0);
    const auto rd = reduce_dtype(h.scalar_type());
    const bool keep = N * V * 4 <= keep_bytes;
    at::Tensor loss = at::empty({N}, h.options().dtype(rd));
    at::Tensor lse = at::empty({N}, h.options().dtype(rd));
    at::Tensor dlogits = keep ? at::empty({N, V}, h.options().dtype(rd)) : at::Tensor();
    at::Tensor scratch = keep ? at::Tensor() : at::empty({std::min(chunk, N), V}, h.options().dtype(rd));
    const at::Tensor wt = w.t();
    for (int64_t r = 0; r < N; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      at::Tensor logits = (keep ? dlogits : scratch).narrow(0, 0 + (keep ? r : 0), n);
      if (rd == h.scalar_type()) at::mm_out(logits, h.narrow(0, r, n), wt);
      else logits.copy_(at::mm(h.narrow(0, r, n), wt));
      at::Tensor loss_c = loss.narrow(0, r, n), lse_c = lse.narrow(0, r, n);
      cross_entropy_chunk(logits, target.narrow(0, r, n), loss_c, lse_c);
    }
    ctx->save_for_backward({h, w, target, lse, dlogits});
    ctx->saved_data["chunk"] = chunk;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("titan::cross_entropy_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &w = saved[1], &target = saved[2], &lse = saved[3], &kept = saved[4];
    const int64_t N = h.size(0), V = w.size(0);
    const auto rd = lse.scalar_type();
    const bool same = rd == h.scalar_type();
    at::Tensor g = at::where(target.ge(0), grads[0].to(rd), at::zeros({}, lse.options())).contiguous();  // (N)
    if (kept.defined()) {  // d loss / d logits, kept by the forward: scale the rows, two matmuls
      const at::Tensor pc = kept.mul(g.unsqueeze(1)).to(h.scalar_type());
      return {at::mm(pc, w), at::mm(pc.t(), h), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    // Recomputed in blocks of vocabulary columns for every token, as many logits as a forward
    // chunk: each block of dW is one matmul (no accumulation across chunks), and dh, small,
    // accumulates in float.
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const int64_t block = std::max<int64_t>(1, chunk * V / std::max<int64_t>(N, 1));
    at::Tensor dh = at::zeros({N, h.size(1)}, h.options().dtype(rd));
    at::Tensor dw = at::empty(w.sizes(), w.options());
    at::Tensor scratch = at::empty({N * std::min(block, V)}, h.options().dtype(rd));
    for (int64_t v0 = 0; v0 < V; v0 += block) {
      const int64_t n = std::min(block, V - v0);
      const at::Tensor wb = w.narrow(0, v0, n);
      at::Tensor p = scratch.narrow(0, 0, N * n).view({N, n});
      if (same) at::mm_out(p, h, wb.t());
      else p.copy_(at::mm(h, wb.t()));
      if (p.is_cpu() && rd == at::kFloat && fused_kernels_enabled()) {
        cpu::cpu_table().cross_entropy_grad_block(p.data_ptr<float>(), N, n, v0, target.data_ptr<int64_t>(),
                                                  lse.data_ptr<float>(), g.data_ptr<float>());
      } else {
        p.sub_(lse.unsqueeze(1)).exp_();
        const at::Tensor in_block = target.ge(v0).logical_and(target.lt(v0 + n));
        p.scatter_add_(1, (target - v0).clamp(0, n - 1).unsqueeze(1),
                       at::where(in_block, -1.0, 0.0).to(rd).unsqueeze(1));
        p.mul_(g.unsqueeze(1));
      }
      const at::Tensor pc = same ? p : p.to(h.scalar_type());
      if (same) dh.addmm_(pc, wb);
      else dh.add_(at::mm(pc, wb));
      at::Tensor dwb = dw.narrow(0, v0, n);
      at::mm_out(dwb, pc.t(), h);
    }
    return {dh.to(h.scalar_type()), dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels) {
  at::Tensor flat = logits.flatten(0, 1).to(reduce_dtype(logits.scalar_type()));
  at::Tensor per = at::cross_entropy_loss(flat, labels.flatten(), std::nullopt, at::Reduction::None, kIgnoreIndex);
  return per.view(labels.sizes());
}

at::Tensor linear_cross_entropy_reference(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels) {
  return cross_entropy_per_token(at::linear(h, weight), labels);
}

at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                int64_t chunk_rows, int64_t keep_bytes) {
  // The casts autocast would make, recorded by autograd; then no autocast inside.
  at::Tensor hc = autocast_matmul_input(h), wc = autocast_matmul_input(weight);
  const int64_t D = h.size(-1), V = weight.size(0), N = h.numel() / D;
  if (chunk_rows <= 0) chunk_rows = std::max<int64_t>(1, kChunkLogitBytes / (V * 4));
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const at::Tensor flat = labels.reshape({N}).to(at::kLong);
  const at::Tensor target = at::where(flat.eq(kIgnoreIndex), at::full({}, -1, flat.options()), flat).contiguous();
  if (target.is_cpu() && N > 0) {
    const int64_t lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < V, "cross entropy: label ", lo < -1 ? lo : hi, " is outside [0, ", V,
                ") (and not the ignore index ", kIgnoreIndex, ")");
  }
  at::Tensor loss = LinearCrossEntropyFunction::apply(hc.reshape({N, D}), wc, target,
                                                      std::min(chunk_rows, std::max<int64_t>(N, 1)),
                                                      keep_bytes < 0 ? kDefaultKeepLogitBytes : keep_bytes);
  return loss.view(labels.sizes());
}

}  // namespace titan::kernels
