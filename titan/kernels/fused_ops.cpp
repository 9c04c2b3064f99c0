#include "titan/kernels/fused_ops.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>

#include "titan/kernels/cpu/fused_cpu.h"
#include "titan/kernels/cuda/fused_cuda.h"

#ifdef TITAN_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace titan::kernels {

namespace cpu {
const Table& cpu_table_DEFAULT();
#ifdef TITAN_CPU_AVX2
const Table& cpu_table_AVX2();
#endif
#ifdef TITAN_CPU_AVX512
const Table& cpu_table_AVX512();
#endif

const Table* cpu_table_named(const char* capability) {
  const std::string cap = capability;
  if (cap == "DEFAULT") return &cpu_table_DEFAULT();
#if defined(__x86_64__) || defined(__i386__)
#ifdef TITAN_CPU_AVX2
  if (cap == "AVX2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &cpu_table_AVX2();
#endif
#ifdef TITAN_CPU_AVX512
  if (cap == "AVX512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return &cpu_table_AVX512();
#endif
#endif
  return nullptr;
}

namespace {
std::atomic<const Table*> g_table_override{nullptr};
}  // namespace

void use_cpu_table(const Table* table) { g_table_override.store(table); }

// The build ATen itself dispatches its kernels to ("AVX512", "AVX2", "DEFAULT", ...; it honours
// ATEN_CPU_CAPABILITY), falling back to the widest build compiled here.
const Table& cpu_table() {
  if (const Table* forced = g_table_override.load()) return *forced;
  static const Table& table = []() -> const Table& {
    const std::string cap = at::get_cpu_capability();
    for (const char* c : {"AVX512", "AVX2"})
      if (cap == c || (cap == "AVX512" && std::string(c) == "AVX2"))
        if (const Table* t = cpu_table_named(c)) return *t;
    return cpu_table_DEFAULT();
  }();
  return table;
}
}  // namespace cpu

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

std::atomic<bool> g_fused{std::getenv("TITAN_REFERENCE_KERNELS") == nullptr};

cpu::Dtype raw(const at::Tensor& t) { return t.scalar_type() == at::kFloat ? cpu::Dtype::Float : cpu::Dtype::BFloat16; }
bool float_or_bf16(const at::Tensor& t) { return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16; }

#ifdef TITAN_HAVE_CUDA
void* stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#endif

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Every CUDA branch below holds a device guard: a kernel launches on the device of its tensors, whatever
// the thread's current device is (the stream of cuda:k with the current device cuda:0 is "invalid
// resource handle").

// ---- RMSNorm, alone or after the residual add ----------------------------------------------------

// Runs the forward kernel: h (only with delta), y, and the float rstd per row.
void rms_norm_forward(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w32, double eps, at::Tensor& h,
                      at::Tensor& y, at::Tensor& rstd) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const at::ScalarType h_dtype = delta.defined() ? at::result_type(x, delta) : x.scalar_type();
  if (delta.defined()) h = at::empty(x.sizes(), x.options().dtype(h_dtype));
  y = at::empty(x.sizes(), x.options().dtype(h_dtype));
  rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  const cpu::Dtype delta_dtype = delta.defined() ? raw(delta) : cpu::Dtype::Float;
  const cpu::Dtype hd = h_dtype == at::kFloat ? cpu::Dtype::Float : cpu::Dtype::BFloat16;
  if (x.is_cpu()) {
    cpu::cpu_table().rms_norm_fwd(x.data_ptr(), raw(x), ptr_or_null(delta), delta_dtype, w32.data_ptr<float>(),
                                  mut_ptr_or_null(h), hd, y.data_ptr(), hd, rstd.data_ptr<float>(), rows, D,
                                  static_cast<float>(eps));
  } else {
#ifdef TITAN_HAVE_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    cuda::rms_norm_fwd(x.data_ptr(), raw(x), ptr_or_null(delta), delta_dtype, w32.data_ptr<float>(),
                       mut_ptr_or_null(h), hd, y.data_ptr(), hd, rstd.data_ptr<float>(), rows, D,
                       static_cast<float>(eps), stream_of(x));
#endif
  }
}

// dx (in the dtype of `normed`) and dw (float32) from dy; dres is added to dx when defined.
void rms_norm_backward(const at::Tensor& dy, const at::Tensor& normed, const at::Tensor& w32, const at::Tensor& rstd,
                       const at::Tensor& dres, at::Tensor& dx, at::Tensor& dw) {
  const int64_t D = normed.size(-1), rows = normed.numel() / D;
  dx = at::empty(normed.sizes(), normed.options());
  const cpu::Dtype res_dtype = dres.defined() ? raw(dres) : cpu::Dtype::Float;
  if (normed.is_cpu()) {
    dw = at::empty({D}, normed.options().dtype(at::kFloat));
    cpu::cpu_table().rms_norm_bwd(dy.data_ptr(), raw(dy), normed.data_ptr(), raw(normed), w32.data_ptr<float>(),
                                  rstd.data_ptr<float>(), ptr_or_null(dres), res_dtype, dx.data_ptr(), raw(normed),
                                  dw.data_ptr<float>(), rows, D);
  } else {
#ifdef TITAN_HAVE_CUDA
    const c10::cuda::CUDAGuard guard(normed.device());
    const int64_t parts = std::min<int64_t>(rows, 512);
    at::Tensor partial = at::zeros({parts, D}, normed.options().dtype(at::kFloat));
    cuda::rms_norm_bwd(dy.data_ptr(), raw(dy), normed.data_ptr(), raw(normed), w32.data_ptr<float>(),
                       rstd.data_ptr<float>(), ptr_or_null(dres), res_dtype, dx.data_ptr(), raw(normed),
                       partial.data_ptr<float>(), parts, rows, D, stream_of(normed));
    dw = partial.sum(0);
#endif
  }
}

struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w, double eps) {
    at::Tensor x = x_in.contiguous(), w32 = w.detach().to(at::kFloat).contiguous();
    at::Tensor h, y, rstd;
    rms_norm_forward(x, at::Tensor(), w32, eps, h, y, rstd);
    ctx->save_for_backward({x, w32, rstd});
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    at::Tensor dx, dw;
    rms_norm_backward(grads[0].contiguous(), saved[0], saved[1], saved[2], at::Tensor(), dx, dw);
    return {dx, dw.to(static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt())), at::Tensor()};
  }
};

struct AddRmsNormFunction : public torch::autograd::Function<AddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& delta_in,
                               const at::Tensor& w, double eps) {
    at::Tensor x = x_in.contiguous(), delta = delta_in.contiguous(), w32 = w.detach().to(at::kFloat).contiguous();
    at::Tensor h, y, rstd;
    rms_norm_forward(x, delta, w32, eps, h, y, rstd);
    ctx->save_for_backward({h, w32, rstd});
    ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(x.scalar_type()),
                                                     static_cast<int64_t>(delta.scalar_type()),
                                                     static_cast<int64_t>(w.scalar_type())};
    return {h, y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
    at::Tensor dy = grads[1].defined() ? grads[1].contiguous() : at::zeros_like(saved[0]);
    at::Tensor dres = grads[0].defined() ? grads[0].contiguous() : at::Tensor();
    at::Tensor dh, dw;
    rms_norm_backward(dy, saved[0], saved[1], saved[2], dres, dh, dw);
    return {dh.to(static_cast<at::ScalarType>(dtypes[0])), dh.to(static_cast<at::ScalarType>(dtypes[1])),
            dw.to(static_cast<at::ScalarType>(dtypes[2])), at::Tensor()};
  }
};

bool norm_fusable(const at::Tensor& x, const at::Tensor& w) {
  return fusable(x) && float_or_bf16(w) && w.device() == x.device() && w.dim() == 1 && x.dim() >= 1 &&
         w.size(0) == x.size(-1) && x.numel() > 0;
}

// ---- SwiGLU ------------------------------------------------------------------------------------

struct SwiGLUFunction : public torch::autograd::Function<SwiGLUFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a_in, const at::Tensor& b_in) {
    at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
    at::Tensor out = at::empty_like(a);
    if (a.is_cpu()) {
      cpu::cpu_table().swiglu_fwd(a.data_ptr(), b.data_ptr(), out.data_ptr(), raw(a), a.numel());
    } else {
#ifdef TITAN_HAVE_CUDA
      const c10::cuda::CUDAGuard guard(a.device());
      cuda::swiglu_fwd(a.data_ptr(), b.data_ptr(), out.data_ptr(), raw(a), a.numel(), stream_of(a));
#endif
    }
    ctx->save_for_backward({a, b});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& a = saved[0];
    const at::Tensor& b = saved[1];
    at::Tensor g = grads[0].to(a.scalar_type()).contiguous();
    at::Tensor da = at::empty_like(a), db = at::empty_like(b);
    if (a.is_cpu()) {
      cpu::cpu_table().swiglu_bwd(g.data_ptr(), a.data_ptr(), b.data_ptr(), da.data_ptr(), db.data_ptr(), raw(a),
                                  a.numel());
    } else {
#ifdef TITAN_HAVE_CUDA
      const c10::cuda::CUDAGuard guard(a.device());
      cuda::swiglu_bwd(g.data_ptr(), a.data_ptr(), b.data_ptr(), da.data_ptr(), db.data_ptr(), raw(a), a.numel(),
                       stream_of(a));
#endif
    }
    return {da, db};
  }
};

// ---- Grouped SwiGLU experts (CPU) --------------------------------------------------------------

// Expert e's rows [first[e], first[e] + n[e]) of x (R, D), through w1[e] w3[e] (H, D), silu(a) * b
// fused, and w2[e] (D, H): one GEMM per matrix and expert into slices of preallocated outputs.
// Saves x, the weights, a, b and h = silu(a) * b; backward recomputes nothing, fuses the SwiGLU
// gradient into one pass, accumulates dx from both input projections in one GEMM each and
// writes each expert's weight gradients in place.
// Experts in `parts` consecutive ranges of about equal rows (the work), as boundaries 0 = b_0 <= ...
// <= b_parts = E. Each range runs on one thread with single-threaded GEMMs: per-expert GEMMs are
// small, and splitting each over the threads costs more in synchronisation and packing than it
// gains (except for an expert with more than a thread's share of the rows: over_expert_ranges).
std::vector<size_t> expert_ranges(const std::vector<int64_t>& counts, int64_t parts) {
  int64_t total = 0;
  for (int64_t n : counts) total += n;
  std::vector<size_t> bounds{0};
  int64_t seen = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    seen += counts[e];
    // Close a range once it holds its share (never leaving more ranges than experts past it).
    const auto k = static_cast<int64_t>(bounds.size());
    if (k < parts && seen * parts >= k * total && e + 1 < counts.size()) bounds.push_back(e + 1);
  }
  while (static_cast<int64_t>(bounds.size()) < parts + 1) bounds.push_back(counts.size());
  return bounds;
}

// Runs fn(first expert, end expert, first row) over every expert once. Experts with more than a
// thread's share of the rows run alone, their GEMMs over every thread; the runs of experts between
// them in ranges of about equal rows, one per thread, in parallel.
template <typename Fn>
void over_expert_ranges(const std::vector<int64_t>& counts, const Fn& fn) {
  const size_t E = counts.size();
  const int64_t threads = at::get_num_threads();
  std::vector<int64_t> first_row(E + 1, 0);
  for (size_t e = 0; e < E; ++e) first_row[e + 1] = first_row[e] + counts[e];
  if (threads <= 1) {
    if (E > 0) fn(0, E, 0);
    return;
  }
  const int64_t share = (first_row[E] + threads - 1) / threads;
  auto in_ranges = [&](size_t lo, size_t hi) {
    const int64_t parts = std::min<int64_t>(threads, static_cast<int64_t>(hi - lo));
    if (parts <= 1) {  // no parallel region: the GEMMs use every thread
      fn(lo, hi, first_row[lo]);
      return;
    }
    const std::vector<size_t> bounds =
        expert_ranges(std::vector<int64_t>(counts.begin() + static_cast<std::ptrdiff_t>(lo),
                                           counts.begin() + static_cast<std::ptrdiff_t>(hi)),
                      parts);
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      at::NoGradGuard no_grad;  // grad mode is per thread: the workers' too
      for (int64_t t = begin; t < end; ++t) {
        const size_t a = lo + bounds[static_cast<size_t>(t)], b = lo + bounds[static_cast<size_t>(t) + 1];
        if (a < b) fn(a, b, first_row[a]);
      }
    });
  };
  size_t e = 0;
  while (e < E) {
    if (counts[e] > share) {
      fn(e, e + 1, first_row[e]);
      ++e;
      continue;
    }
    size_t end = e;
    while (end < E && counts[end] <= share) ++end;
    in_ranges(e, end);
    e = end;
  }
}

struct GroupedSwiGLUFunction : public torch::autograd::Function<GroupedSwiGLUFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                            const at::Tensor& w3, std::vector<int64_t> counts) {
    at::NoGradGuard no_grad;
    const int64_t R = x.size(0), D = x.size(1), H = w1.size(1);
    at::Tensor a = at::empty({R, H}, x.options()), b = at::empty({R, H}, x.options()),
               h = at::empty({R, H}, x.options()), y = at::empty({R, D}, x.options());
    over_expert_ranges(counts, [&](size_t lo, size_t hi, int64_t r0) {
      for (size_t e = lo; e < hi; ++e) {
        const int64_t n = counts[e];
        if (n == 0) continue;
        const at::Tensor xe = x.narrow(0, r0, n);
        at::Tensor ae = a.narrow(0, r0, n), be = b.narrow(0, r0, n), he = h.narrow(0, r0, n), ye = y.narrow(0, r0, n);
        const auto i = static_cast<int64_t>(e);
        at::mm_out(ae, xe, w1[i].t());
        at::mm_out(be, xe, w3[i].t());
        cpu::cpu_table().swiglu_fwd(ae.data_ptr(), be.data_ptr(), he.data_ptr(), raw(x), n * H);
        at::mm_out(ye, he, w2[i].t());
        r0 += n;
      }
    });
    ctx->save_for_backward({x, w1, w2, w3, a, b, h});
    ctx->saved_data["counts"] = c10::List<int64_t>(counts);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::NoGradGuard no_grad;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w1 = saved[1], &w2 = saved[2], &w3 = saved[3], &a = saved[4], &b = saved[5],
                     &h = saved[6];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const at::Tensor dy = grads[0].to(x.scalar_type()).contiguous();
    const int64_t H = w1.size(1);
    at::Tensor dx = at::empty_like(x), dw1 = at::empty_like(w1), dw2 = at::empty_like(w2), dw3 = at::empty_like(w3);
    over_expert_ranges(counts, [&](size_t lo, size_t hi, int64_t r0) {
      int64_t most = 0;  // one expert's dh, da, db at a time, per range
      for (size_t e = lo; e < hi; ++e) most = std::max(most, counts[e]);
      at::Tensor dh = at::empty({most, H}, x.options()), da = at::empty_like(dh), db = at::empty_like(dh);
      for (size_t e = lo; e < hi; ++e) {
        const int64_t n = counts[e];
        const auto i = static_cast<int64_t>(e);
        at::Tensor dw1e = dw1[i], dw2e = dw2[i], dw3e = dw3[i];
        if (n == 0) {  // an expert no row reached
          dw1e.zero_();
          dw2e.zero_();
          dw3e.zero_();
          continue;
        }
        const at::Tensor xe = x.narrow(0, r0, n), dye = dy.narrow(0, r0, n);
        at::Tensor dhe = dh.narrow(0, 0, n), dae = da.narrow(0, 0, n), dbe = db.narrow(0, 0, n),
                   dxe = dx.narrow(0, r0, n);
        at::mm_out(dhe, dye, w2[i]);
        cpu::cpu_table().swiglu_bwd(dhe.data_ptr(), a.narrow(0, r0, n).data_ptr(), b.narrow(0, r0, n).data_ptr(),
                                    dae.data_ptr(), dbe.data_ptr(), raw(x), n * H);
        at::mm_out(dw2e, dye.t(), h.narrow(0, r0, n));
        at::mm_out(dw1e, dae.t(), xe);
        at::mm_out(dw3e, dbe.t(), xe);
        at::mm_out(dxe, dae, w1[i]);
        dxe.addmm_(dbe, w3[i]);
        r0 += n;
      }
    });
    return {dx, dw1, dw2, dw3, at::Tensor()};
  }
};

// ---- RoPE --------------------------------------------------------------------------------------

// q, k (B,T,H,hd) contiguous (k may be undefined); cos/sin (T, hd/2) contiguous float.
std::pair<at::Tensor, at::Tensor> rope_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                           const at::Tensor& sin, float sign) {
  at::Tensor qo = at::empty_like(q), ko = k.defined() ? at::empty_like(k) : at::Tensor();
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), hd = q.size(3), Hk = k.defined() ? k.size(2) : 0;
  if (q.is_cpu()) {
    cpu::cpu_table().rope_qk(q.data_ptr(), ptr_or_null(k), qo.data_ptr(), mut_ptr_or_null(ko), raw(q),
                             cos.data_ptr<float>(), sin.data_ptr<float>(), B, T, Hq, Hk, hd, sign);
  } else {
#ifdef TITAN_HAVE_CUDA
    const c10::cuda::CUDAGuard guard(q.device());
    cuda::rope_qk(q.data_ptr(), ptr_or_null(k), qo.data_ptr(), mut_ptr_or_null(ko), raw(q), cos.data_ptr<float>(),
                  sin.data_ptr<float>(), B, T, Hq, Hk, hd, sign, stream_of(q));
#endif
  }
  return {qo, ko};
}

struct RopeQKFunction : public torch::autograd::Function<RopeQKFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                               const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    auto [qo, ko] = rope_run(q.contiguous(), k.contiguous(), cos, sin, 1.0f);
    return {qo, ko};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // Rotating back by the same angle; an output without a gradient gives none.
    const at::Tensor c = ctx->saved_data["cos"].toTensor(), s = ctx->saved_data["sin"].toTensor();
    auto back = [&](const at::Tensor& g) {
      return g.defined() ? rope_run(g.contiguous(), at::Tensor(), c, s, -1.0f).first : at::Tensor();
    };
    if (grads[0].defined() && grads[1].defined() && grads[0].scalar_type() == grads[1].scalar_type()) {
      auto [dq, dk] = rope_run(grads[0].contiguous(), grads[1].contiguous(), c, s, -1.0f);
      return {dq, dk, at::Tensor(), at::Tensor()};
    }
    return {back(grads[0]), back(grads[1]), at::Tensor(), at::Tensor()};
  }
};

struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rope_run(x.contiguous(), at::Tensor(), cos, sin, 1.0f).first;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {rope_run(grads[0].contiguous(), at::Tensor(), ctx->saved_data["cos"].toTensor(),
                     ctx->saved_data["sin"].toTensor(), -1.0f)
                .first,
            at::Tensor(), at::Tensor()};
  }
};

bool rope_fusable(const at::Tensor& x) { return fusable(x) && x.dim() == 4 && x.size(3) % 2 == 0; }

}  // namespace

bool fused_kernels_enabled() { return g_fused.load(); }
void set_fused_kernels_enabled(bool enabled) { g_fused.store(enabled); }

bool fusable(const at::Tensor& t) {
  if (!g_fused.load() || !float_or_bf16(t)) return false;
  if (t.device().is_cpu()) return true;
#ifdef TITAN_HAVE_CUDA
  if (t.device().is_cuda()) return true;
#endif
  return false;
}

const char* cpu_capability() { return cpu::cpu_table().capability; }

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return at::rms_norm(x, {weight.size(0)}, weight, eps);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!norm_fusable(x, weight)) return rms_norm_reference(x, weight, eps);
  return RmsNormFunction::apply(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x, const at::Tensor& delta,
                                                          const at::Tensor& weight, double eps) {
  at::Tensor h = x + delta;
  return {h, rms_norm_reference(h, weight, eps)};
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight,
                                                double eps) {
  if (!norm_fusable(x, weight) || !fusable(delta) || delta.sizes() != x.sizes() || delta.device() != x.device())
    return add_rms_norm_reference(x, delta, weight, eps);
  auto out = AddRmsNormFunction::apply(x, delta, weight, eps);
  return {out[0], out[1]};
}

at::Tensor swiglu_reference(const at::Tensor& a, const at::Tensor& b) { return at::silu(a) * b; }

at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b) {
  if (!fusable(a) || a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type() || a.device() != b.device())
    return swiglu_reference(a, b);
  return SwiGLUFunction::apply(a, b);
}

bool grouped_swiglu_fusable(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3) {
  if (!x.is_cpu() || !fusable(x) || x.dim() != 2 || w1.dim() != 3) return false;
  for (const at::Tensor* w : {&w1, &w2, &w3})
    if (w->scalar_type() != x.scalar_type() || !w->is_cpu()) return false;
  return true;
}

at::Tensor grouped_swiglu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3,
                          const std::vector<int64_t>& counts) {
  TORCH_CHECK(grouped_swiglu_fusable(x, w1, w2, w3), "grouped_swiglu: CPU float32/bfloat16 tensors of one dtype");
  return GroupedSwiGLUFunction::apply(x.contiguous(), w1, w2, w3, counts);
}

at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // Pairs as complex numbers times the unit rotation, in float32 (float64 for float64 input).
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), hd = x.size(3);
  const bool wide = x.scalar_type() == at::kDouble;
  const at::ScalarType real = wide ? at::kDouble : at::kFloat;
  at::Tensor pairs = at::view_as_complex(x.to(real).reshape({B, T, H, hd / 2, 2}));
  at::Tensor cis = at::complex(cos.narrow(0, 0, T).to(real), sin.narrow(0, 0, T).to(real)).view({1, T, 1, hd / 2});
  return at::view_as_real(pairs * cis).flatten(3).to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> rope_qk_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                     const at::Tensor& sin) {
  return {rope_reference(q, cos, sin), rope_reference(k, cos, sin)};
}

std::tuple<at::Tensor, at::Tensor> rope_qk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                           const at::Tensor& sin) {
  if (!rope_fusable(q) || !rope_fusable(k) || k.scalar_type() != q.scalar_type() || k.size(0) != q.size(0) ||
      k.size(1) != q.size(1) || k.size(3) != q.size(3) || k.device() != q.device())
    return rope_qk_reference(q, k, cos, sin);
  const int64_t T = q.size(1);
  auto c = cos.narrow(0, 0, T).to(q.device(), at::kFloat).contiguous();
  auto s = sin.narrow(0, 0, T).to(q.device(), at::kFloat).contiguous();
  auto out = RopeQKFunction::apply(q, k, c, s);
  return {out[0], out[1]};
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (!rope_fusable(x)) return rope_reference(x, cos, sin);
  const int64_t T = x.size(1);
  auto c = cos.narrow(0, 0, T).to(x.device(), at::kFloat).contiguous();
  auto s = sin.narrow(0, 0, T).to(x.device(), at::kFloat).contiguous();
  return RopeFunction::apply(x, c, s);
}

// ---- Adam(W) ----------------------------------------------------------------------------------

void adam_step_reference(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                         const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
                         const std::vector<at::Tensor>& steps, const AdamHyper& h, double grad_scale) {
  if (params.empty()) return;
  std::vector<at::Tensor> g = grad_scale == 1.0 ? grads : at::_foreach_mul(grads, grad_scale);
  if (h.decoupled)
    at::_fused_adamw_(params, g, exp_avg, exp_avg_sq, {}, steps, h.lr, h.beta1, h.beta2, h.weight_decay, h.eps, false,
                      false);
  else
    at::_fused_adam_(params, g, exp_avg, exp_avg_sq, {}, steps, h.lr, h.beta1, h.beta2, h.weight_decay, h.eps, false,
                     false);
}

void scale_gradients(const std::vector<at::Tensor>& grads, const at::Tensor& scale) {
  if (grads.empty()) return;
  const at::Tensor s32 = scale.reshape({}).to(at::kFloat);
  std::vector<at::Tensor> f32;
  for (const auto& g : grads) {
    if (g.scalar_type() == at::kFloat) f32.push_back(g);
    else g.copy_(g.to(at::kFloat).mul_(s32));  // in float, rounded once, as with a scalar scale
  }
  if (!f32.empty()) at::_foreach_mul_(f32, s32);
}

void adam_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
               const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
               const std::vector<at::Tensor>& steps, const AdamHyper& h, double grad_scale,
               const at::Tensor& scale_on_device) {
  if (scale_on_device.defined() && scale_on_device.is_cpu())  // free to read: no device to wait for
    return adam_step(params, grads, exp_avg, exp_avg_sq, steps, h, scale_on_device.item<double>());
  std::vector<at::Tensor> rp, rg, rm, rv, rs;  // the ones without a fused kernel
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const bool same = grads[i].scalar_type() == p.scalar_type() && exp_avg[i].scalar_type() == p.scalar_type() &&
                      exp_avg_sq[i].scalar_type() == p.scalar_type() && p.is_contiguous() &&
                      grads[i].is_contiguous() && exp_avg[i].is_contiguous() && exp_avg_sq[i].is_contiguous();
    if (!fusable(p) || !same) {
      rp.push_back(p), rg.push_back(grads[i]), rm.push_back(exp_avg[i]), rv.push_back(exp_avg_sq[i]);
      rs.push_back(steps[i]);
      continue;
    }
    if (p.is_cpu()) {
      cpu::cpu_table().adam(p.data_ptr(), grads[i].data_ptr(), exp_avg[i].data_ptr(), exp_avg_sq[i].data_ptr(), raw(p),
                            p.numel(), h.lr, h.beta1, h.beta2, h.weight_decay, h.eps, steps[i].item<double>(),
                            h.decoupled, grad_scale);
    } else {
#ifdef TITAN_HAVE_CUDA
      // The step count and the clip scale stay on the device (read by the kernel): no synchronisation.
      const c10::cuda::CUDAGuard guard(p.device());
      const double* scale = nullptr;
      if (scale_on_device.defined()) {
        TORCH_CHECK(scale_on_device.device() == p.device() && scale_on_device.scalar_type() == at::kDouble &&
                        scale_on_device.numel() == 1,
                    "adam_step: the scale must be one float64 on the parameters' device");
        scale = scale_on_device.data_ptr<double>();
      }
      cuda::adam(p.data_ptr(), grads[i].data_ptr(), exp_avg[i].data_ptr(), exp_avg_sq[i].data_ptr(), raw(p),
                 p.numel(), h.lr, h.beta1, h.beta2, h.weight_decay, h.eps, steps[i].data_ptr<float>(), h.decoupled,
                 grad_scale, scale, stream_of(p));
#endif
    }
  }
  if (scale_on_device.defined() && !rp.empty()) {
    std::vector<at::Tensor> scaled;  // copies: the caller's gradients stay as they are
    for (const auto& g : rg) scaled.push_back(g.clone());
    scale_gradients(scaled, scale_on_device);
    adam_step_reference(rp, scaled, rm, rv, rs, h, 1.0);
    return;
  }
  adam_step_reference(rp, rg, rm, rv, rs, h, grad_scale);
}

}  // namespace titan::kernels
