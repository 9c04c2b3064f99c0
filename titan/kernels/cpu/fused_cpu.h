// The CPU bodies of the fused kernels, on raw pointers. fused_cpu.cpp is compiled once per
// CPU capability (DEFAULT, AVX2, AVX512; flags in cmake/targets.cmake) with ATen's
// at::vec::Vectorized, and `cpu_table()` picks the build that ATen itself dispatches to
// (at::native::get_cpu_capability(), which also honours ATEN_CPU_CAPABILITY).
#pragma once

#include <cstdint>

namespace titan::kernels::cpu {

enum class Dtype : uint8_t { Float, BFloat16 };

struct Table {
  // Rows of length D: h = x (+ delta), rounded to h_dtype and written to h when h != nullptr;
  // y = h * rstd * w with rstd = 1/sqrt(mean(h^2) + eps), written in y_dtype; rstd (rows) in float.
  void (*rms_norm_fwd)(const void* x, Dtype x_dtype, const void* delta, Dtype delta_dtype, const float* w, void* h,
                       Dtype h_dtype, void* y, Dtype y_dtype, float* rstd, int64_t rows, int64_t D, float eps);
  // dx = rstd * (w*dy - xhat * mean(w*dy*xhat)) (+ dres), xhat = h*rstd, in dx_dtype; dw (D) is
  // the sum over rows of dy*xhat, in float.
  void (*rms_norm_bwd)(const void* dy, Dtype dy_dtype, const void* h, Dtype h_dtype, const float* w, const float* rstd,
                       const void* dres, Dtype dres_dtype, void* dx, Dtype dx_dtype, float* dw, int64_t rows,
                       int64_t D);
  // out = silu(a) * b, elementwise over n, one dtype.
  void (*swiglu_fwd)(const void* a, const void* b, void* out, Dtype dtype, int64_t n);
  // da = g * b * sig(a) * (1 + a * (1 - sig(a))), db = g * silu(a).
  void (*swiglu_bwd)(const void* g, const void* a, const void* b, void* da, void* db, Dtype dtype, int64_t n);
  // Rotates interleaved pairs of q (B,T,Hq,hd) and k (B,T,Hk,hd), contiguous, by the angle of
  // each position (cos/sin (T, hd/2) float); sign -1 rotates back (the backward).
  void (*rope_qk)(const void* q, const void* k, void* q_out, void* k_out, Dtype dtype, const float* cos,
                  const float* sin, int64_t B, int64_t T, int64_t Hq, int64_t Hk, int64_t hd, float sign);
  // One Adam(W) update of n elements; the gradient is multiplied by grad_scale first (the
  // clipping coefficient). param/exp_avg/exp_avg_sq/grad share `dtype`.
  void (*adam)(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, Dtype dtype, int64_t n, double lr,
               double beta1, double beta2, double weight_decay, double eps, double step, bool decoupled,
               double grad_scale);
  // Causal attention, rows of a score block S (rows x cols, leading dimension ld; row r is query
  // position pos0 + r, column c key position c; keys after the query are masked):
  // forward: S <- softmax(S * scale) in place (0 where masked), lse[r] = logsumexp of the row.
  void (*attn_softmax_fwd)(float* s, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale,
                           float* lse);
  // backward: S <- P = exp(S * scale - lse) in place (0 where masked).
  void (*attn_probs)(float* s, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale, const float* lse);
  // backward: dP <- P * (dP - di[r]) * scale in place (the gradient of the scores).
  void (*attn_dscores)(const float* p, float* dp, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale,
                       const float* di);
  // Cross entropy of rows of logits (rows x V, float, in place): lse[r] = logsumexp of the row,
  // loss[r] = lse[r] - logit[target[r]] (0 when target[r] < 0), and the row becomes
  // softmax - onehot(target) (its gradient; plain softmax when target[r] < 0).
  void (*cross_entropy_rows)(float* logits, int64_t rows, int64_t V, const int64_t* target, float* loss, float* lse);
  // A block of logit columns [v0, v0 + cols) of every row (rows x cols, float, in place):
  // (exp(logit - lse[r]) - [target[r] == v0 + c]) * g[r], the gradient of the loss there.
  void (*cross_entropy_grad_block)(float* logits, int64_t rows, int64_t cols, int64_t v0, const int64_t* target,
                                   const float* lse, const float* g);
  const char* capability;
};

const Table& cpu_table();
// The build for "DEFAULT", "AVX2" or "AVX512", or nullptr where it was not compiled or this
// CPU cannot run it; and, for tests, which build cpu_table() returns (nullptr: ATen's choice).
const Table* cpu_table_named(const char* capability);
void use_cpu_table(const Table* table);

}  // namespace titan::kernels::cpu
