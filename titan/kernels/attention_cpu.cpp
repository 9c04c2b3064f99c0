#include "titan/kernels/attention_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "titan/kernels/cpu/fused_cpu.h"

// MKL, where torch's BLAS is MKL: its matmuls inside our parallel loop must stay on one thread
// (weak: absent with another BLAS, then nothing is set).
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

namespace titan::kernels {

namespace {

// Queries per block: the scores of a block (block x keys) are held whole, in float32, and stay
// within about half a MiB (a core's L2) for long sequences: 128 queries up to 1,024 keys.
int64_t query_block(int64_t keys) { return std::clamp<int64_t>((int64_t{1} << 17) / std::max<int64_t>(keys, 1), 16, 128); }

at::Tensor to_f32(const at::Tensor& t) { return t.detach().to(at::kFloat).contiguous(); }

// Runs the tasks [0, n) in parallel, each thread's matmuls on that thread alone, in inference
// mode (no autograd or version counting for the many small views; thread-local, so set here).
template <typename F>
void parallel_tasks(int64_t n, const F& body) {
  at::parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
    c10::InferenceMode no_autograd;
    const int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
    body(lo, hi);
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  });
}

// A (rows x cols) row-major float matrix at `p` with row stride `ld`: a view, no copy.
at::Tensor mat(float* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(p, {rows, cols}, {ld, 1}, at::TensorOptions().dtype(at::kFloat));
}
at::Tensor mat(const float* p, int64_t rows, int64_t cols, int64_t ld) { return mat(const_cast<float*>(p), rows, cols, ld); }

// The first key of each query's document, (B,T) int64 contiguous, or null for causal.
const int64_t* starts_of(const at::Tensor& doc_starts, int64_t B, int64_t T) {
  if (!doc_starts.defined()) return nullptr;
  TORCH_CHECK(doc_starts.scalar_type() == at::kLong && doc_starts.is_contiguous() && doc_starts.size(0) == B &&
                  doc_starts.size(1) == T,
              "attention: document starts must be (B,T) int64, one per query");
  return doc_starts.data_ptr<int64_t>();
}

// The rows of a block of queries [q0, q0+n) that see a key: with documents, those whose
// document starts before the last key (a prefix: starts do not fall along a sequence). The
// first key any of them sees is k0.
struct BlockRows {
  int64_t n, k0;
};
BlockRows block_rows(const int64_t* starts, int64_t q0, int64_t n, int64_t S) {
  if (!starts) return {n, 0};
  int64_t seen = 0;
  while (seen < n && starts[q0 + seen] < S) ++seen;
  return {seen, seen ? std::max<int64_t>(starts[q0], 0) : 0};
}

// Block-causal: the scores of rows [q0, q0+n) against keys from k0 on hold -inf where a key lies
// before the row's document (its causal end is the softmax's to mask).
void mask_documents(float* s, int64_t n, int64_t ld, const int64_t* starts, int64_t q0, int64_t k0) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0, end = std::min(starts[q0 + i] - k0, ld); j < end; ++j) s[i * ld + j] = -INFINITY;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> cpu_attention_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                                        const at::Tensor& v_in, double scale,
                                                        const at::Tensor& doc_starts, int64_t causal_offset) {
  RECORD_FUNCTION("titan::attention_forward", std::vector<c10::IValue>());
  const at::Tensor q = to_f32(q_in), k = to_f32(k_in), v = to_f32(v_in);
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), hd = q.size(3), Hk = k.size(1), rep = Hq / Hk;
  const int64_t S = k.size(2);
  const int64_t* starts = starts_of(doc_starts, B, T);
  TORCH_CHECK(causal_offset >= 0, "attention: a causal offset must be >= 0");
  const int64_t d = causal_offset;
  // With documents some rows may see no key of this part: their output is 0 and their
  // logsumexp -inf (they weigh nothing in a merge).
  at::Tensor out = starts ? at::zeros({B, Hq, T, hd}, q.options()) : at::empty({B, Hq, T, hd}, q.options());
  at::Tensor lse = starts ? at::full({B, Hq, T}, -INFINITY, q.options()) : at::empty({B, Hq, T}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  float *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>();
  const int64_t kQueryBlock = query_block(S), blocks = (T + kQueryBlock - 1) / kQueryBlock;
  const auto& table = cpu::cpu_table();
  parallel_tasks(B * Hq * blocks, [&](int64_t lo, int64_t hi) {
    at::Tensor scratch = at::empty({kQueryBlock * S}, at::TensorOptions().dtype(at::kFloat));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / (Hq * blocks), h = (task / blocks) % Hq, q0 = (task % blocks) * kQueryBlock;
      const auto [n, k0] = block_rows(starts ? starts + b * T : nullptr, q0, std::min(kQueryBlock, T - q0), S);
      if (n == 0) continue;
      const int64_t keys = std::min(S, q0 + n + d) - k0;  // causal: no later key
      const int64_t qh = (b * Hq + h) * T, kh = (b * Hk + h / rep) * S + k0;  // first row of the head, first key
      at::Tensor scores = mat(scratch.data_ptr<float>(), n, keys, keys);
      at::mm_out(scores, mat(qp + (qh + q0) * hd, n, hd, hd), mat(kp + kh * hd, keys, hd, hd).t());
      if (starts) mask_documents(scores.data_ptr<float>(), n, keys, starts + b * T, q0, k0);
      table.attn_softmax_fwd(scores.data_ptr<float>(), n, keys, keys, q0 + d - k0, static_cast<float>(scale), lp + qh + q0);
      at::Tensor o = mat(op + (qh + q0) * hd, n, hd, hd);
      at::mm_out(o, scores, mat(vp + kh * hd, keys, hd, hd));
    }
  });
  return {out.to(q_in.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_attention_backward(const at::Tensor& grad_out,
                                                                      const at::Tensor& q_in, const at::Tensor& k_in,
                                                                      const at::Tensor& v_in, const at::Tensor& out,
                                                                      const at::Tensor& lse_in, double scale,
                                                                      const at::Tensor& doc_starts,
                                                                      int64_t causal_offset) {
  RECORD_FUNCTION("titan::attention_backward", std::vector<c10::IValue>());
  const at::Tensor q = to_f32(q_in), k = to_f32(k_in), v = to_f32(v_in), dout = to_f32(grad_out);
  const at::Tensor lse = to_f32(lse_in);
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), hd = q.size(3), Hk = k.size(1), rep = Hq / Hk;
  const int64_t S = k.size(2);
  const int64_t* starts = starts_of(doc_starts, B, T);
  TORCH_CHECK(causal_offset >= 0, "attention: a causal offset must be >= 0");
  const int64_t d = causal_offset;
  const at::Tensor di = (dout * to_f32(out)).sum(-1).contiguous();  // (B,Hq,T): rowsum(dO * O)
  at::Tensor dq = starts ? at::zeros({B, Hq, T, hd}, q.options()) : at::empty({B, Hq, T, hd}, q.options());
  at::Tensor dk = at::zeros({B, Hk, S, hd}, q.options()), dv = at::zeros({B, Hk, S, hd}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const float *dop = dout.data_ptr<float>(), *lp = lse.data_ptr<float>(), *dip = di.data_ptr<float>();
  float *dqp = dq.data_ptr<float>(), *dkp = dk.data_ptr<float>(), *dvp = dv.data_ptr<float>();
  const int64_t kQueryBlock = query_block(S), blocks = (T + kQueryBlock - 1) / kQueryBlock;
  const auto& table = cpu::cpu_table();
  // One task per key/value head: it owns that head's dk and dv and adds every query head of its
  // group into them.
  parallel_tasks(B * Hk, [&](int64_t lo, int64_t hi) {
    at::Tensor scratch = at::empty({2 * kQueryBlock * S}, at::TensorOptions().dtype(at::kFloat));
    float* pp = scratch.data_ptr<float>();
    float* dsp = pp + kQueryBlock * S;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / Hk, g = task % Hk;
      for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
        const int64_t qh = (b * Hq + h) * T;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t q0 = blk * kQueryBlock;
          const auto [n, k0] = block_rows(starts ? starts + b * T : nullptr, q0, std::min(kQueryBlock, T - q0), S);
          if (n == 0) continue;
          const int64_t keys = std::min(S, q0 + n + d) - k0;
          const int64_t kh = (b * Hk + g) * S + k0;  // the block's first key
          const at::Tensor qb = mat(qp + (qh + q0) * hd, n, hd, hd), dob = mat(dop + (qh + q0) * hd, n, hd, hd);
          const at::Tensor kb = mat(kp + kh * hd, keys, hd, hd), vb = mat(vp + kh * hd, keys, hd, hd);
          at::Tensor p = mat(pp, n, keys, keys), ds = mat(dsp, n, keys, keys);
          at::mm_out(p, qb, kb.t());
          if (starts) mask_documents(pp, n, keys, starts + b * T, q0, k0);
          table.attn_probs(pp, n, keys, keys, q0 + d - k0, static_cast<float>(scale), lp + qh + q0);
          mat(dvp + kh * hd, keys, hd, hd).addmm_(p.t(), dob);
          at::mm_out(ds, dob, vb.t());
          table.attn_dscores(pp, dsp, n, keys, keys, q0 + d - k0, static_cast<float>(scale), dip + qh + q0);
          at::Tensor dqb = mat(dqp + (qh + q0) * hd, n, hd, hd);
          at::mm_out(dqb, ds, kb);
          mat(dkp + kh * hd, keys, hd, hd).addmm_(ds.t(), qb);
        }
      }
    }
  });
  return {dq.to(q_in.scalar_type()), dk.to(k_in.scalar_type()), dv.to(v_in.scalar_type())};
}

std::pair<at::Tensor, at::Tensor> merge_partial_attention(const std::vector<at::Tensor>& outs,
                                                          const std::vector<at::Tensor>& lses) {
  TORCH_CHECK(!outs.empty() && outs.size() == lses.size(), "merge_partial_attention: one logsumexp per output");
  const at::Tensor lse = at::logsumexp(at::stack(lses), 0);  // (B,H,T)
  at::Tensor out = at::zeros_like(outs[0], outs[0].options().dtype(at::kFloat));
  for (size_t i = 0; i < outs.size(); ++i) out.add_(outs[i].to(at::kFloat) * (lses[i] - lse).exp().unsqueeze(-1));
  return {out, lse};
}

}  // namespace titan::kernels
