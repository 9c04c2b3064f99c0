// Fused CPU kernels (see fused_cpu.h), compiled once per CPU capability: CPU_CAPABILITY names
// the build (DEFAULT, AVX2, AVX512) and selects ATen's Vectorized implementation, as ATen's own
// kernels are built. Everything here has internal linkage except the one table per build, and
// the code calls no out-of-line template of the standard library (std::vector, std::fill_n, ...):
// the linker keeps one copy of such a template for all three builds, possibly an AVX-512 one.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "titan/kernels/cpu/fused_cpu.h"

#ifndef CPU_CAPABILITY
#error "fused_cpu.cpp is compiled once per CPU capability, with -DCPU_CAPABILITY=<DEFAULT|AVX2|AVX512>"
#endif

#define TITAN_CAT2(a, b) a##b
#define TITAN_CAT(a, b) TITAN_CAT2(a, b)

namespace titan::kernels::cpu {

namespace {

using BF16 = c10::BFloat16;
using Vec = at::vec::Vectorized<float>;
constexpr int64_t kW = Vec::size();  // floats per vector
constexpr int64_t kStep = 2 * kW;    // elements per loop step (one bf16 vector, two float vectors)

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// A float buffer from malloc (see the note at the top about standard-library templates).
class Scratch {
 public:
  explicit Scratch(int64_t n, bool zero = false)
      : p_(static_cast<float*>(zero ? std::calloc(static_cast<size_t>(imax(n, 1)), sizeof(float))
                                    : std::malloc(static_cast<size_t>(imax(n, 1)) * sizeof(float)))) {}
  ~Scratch() { std::free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() { return p_; }
  float& operator[](int64_t i) { return p_[i]; }

 private:
  float* p_;
};

inline void load2(const float* p, Vec& a, Vec& b) {
  a = Vec::loadu(p);
  b = Vec::loadu(p + kW);
}
inline void load2(const BF16* p, Vec& a, Vec& b) { at::vec::load_to_float(p, a, b); }
inline void store2(float* p, const Vec& a, const Vec& b) {
  a.store(p);
  b.store(p + kW);
}
inline void store2(BF16* p, const Vec& a, const Vec& b) { at::vec::convert_from_float<BF16>(a, b).store(p); }

// A row of n elements of either dtype to float, and back (round to nearest even for bf16).
void to_float(const void* src, Dtype dtype, float* dst, int64_t n) {
  if (dtype == Dtype::Float) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const BF16* s = static_cast<const BF16*>(src);
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    Vec a, b;
    load2(s + i, a, b);
    store2(dst + i, a, b);
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}

void from_float(const float* src, void* dst, Dtype dtype, int64_t n) {
  if (dtype == Dtype::Float) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  BF16* d = static_cast<BF16*>(dst);
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    Vec a, b;
    load2(src + i, a, b);
    store2(d + i, a, b);
  }
  for (; i < n; ++i) d[i] = static_cast<BF16>(src[i]);
}

size_t elem_size(Dtype d) { return d == Dtype::Float ? 4 : 2; }
const void* row_ptr(const void* base, Dtype d, int64_t row, int64_t D) {
  return static_cast<const char*>(base) + static_cast<size_t>(row * D) * elem_size(d);
}
void* row_ptr(void* base, Dtype d, int64_t row, int64_t D) {
  return static_cast<char*>(base) + static_cast<size_t>(row * D) * elem_size(d);
}

// ---- RMSNorm (with the residual add) ---------------------------------------------------------

void rms_norm_fwd(const void* x, Dtype x_dtype, const void* delta, Dtype delta_dtype, const float* w, void* h,
                  Dtype h_dtype, void* y, Dtype y_dtype, float* rstd, int64_t rows, int64_t D, float eps) {
  at::parallel_for(0, rows, imax(1, 16384 / D), [&](int64_t lo, int64_t hi) {
    Scratch hrow(D), tmp(delta ? D : 0);
    for (int64_t r = lo; r < hi; ++r) {
      to_float(row_ptr(x, x_dtype, r, D), x_dtype, hrow.data(), D);
      if (delta) {
        to_float(row_ptr(delta, delta_dtype, r, D), delta_dtype, tmp.data(), D);
        int64_t i = 0;
        for (; i + kW <= D; i += kW) (Vec::loadu(hrow.data() + i) + Vec::loadu(tmp.data() + i)).store(hrow.data() + i);
        for (; i < D; ++i) hrow[i] += tmp[i];
      }
      if (h) {
        void* hr = row_ptr(h, h_dtype, r, D);
        from_float(hrow.data(), hr, h_dtype, D);
        if (h_dtype != Dtype::Float) to_float(hr, h_dtype, hrow.data(), D);  // normalise what was stored
      }
      Vec acc(0.f);
      int64_t i = 0;
      for (; i + kW <= D; i += kW) {
        Vec v = Vec::loadu(hrow.data() + i);
        acc = at::vec::fmadd(v, v, acc);
      }
      float ss = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc);
      for (; i < D; ++i) ss += hrow[i] * hrow[i];
      const float rs = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
      rstd[r] = rs;
      const Vec vrs(rs);
      for (i = 0; i + kW <= D; i += kW)
        (Vec::loadu(hrow.data() + i) * vrs * Vec::loadu(w + i)).store(hrow.data() + i);
      for (; i < D; ++i) hrow[i] = hrow[i] * rs * w[i];
      from_float(hrow.data(), row_ptr(y, y_dtype, r, D), y_dtype, D);
    }
  });
}

void rms_norm_bwd(const void* dy, Dtype dy_dtype, const void* h, Dtype h_dtype, const float* w, const float* rstd,
                  const void* dres, Dtype dres_dtype, void* dx, Dtype dx_dtype, float* dw, int64_t rows, int64_t D) {
  // dw is summed per block of rows and the blocks in order: the same bits for any thread count.
  constexpr int64_t kRowsPerBlock = 32;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  Scratch partial(blocks * D, /*zero=*/true);
  at::parallel_for(0, blocks, 1, [&](int64_t blo, int64_t bhi) {
    Scratch g(D), xh(D), extra(dres ? D : 0);
    for (int64_t blk = blo; blk < bhi; ++blk) {
      float* dwb = partial.data() + blk * D;
      for (int64_t r = blk * kRowsPerBlock; r < imin(rows, (blk + 1) * kRowsPerBlock); ++r) {
        to_float(row_ptr(dy, dy_dtype, r, D), dy_dtype, g.data(), D);
        to_float(row_ptr(h, h_dtype, r, D), h_dtype, xh.data(), D);
        const Vec vrs(rstd[r]);
        Vec acc(0.f);
        int64_t i = 0;
        for (; i + kW <= D; i += kW) {
          const Vec gv = Vec::loadu(g.data() + i), xv = Vec::loadu(xh.data() + i) * vrs;
          xv.store(xh.data() + i);
          (Vec::loadu(dwb + i) + gv * xv).store(dwb + i);
          const Vec wg = gv * Vec::loadu(w + i);
          wg.store(g.data() + i);
          acc = at::vec::fmadd(wg, xv, acc);
        }
        float dot = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc);
        for (; i < D; ++i) {
          xh[i] *= rstd[r];
          dwb[i] += g[i] * xh[i];
          g[i] *= w[i];
          dot += g[i] * xh[i];
        }
        const float mean = dot / static_cast<float>(D);
        const Vec vmean(mean);
        for (i = 0; i + kW <= D; i += kW)
          (vrs * (Vec::loadu(g.data() + i) - Vec::loadu(xh.data() + i) * vmean)).store(g.data() + i);
        for (; i < D; ++i) g[i] = rstd[r] * (g[i] - xh[i] * mean);
        if (dres) {
          to_float(row_ptr(dres, dres_dtype, r, D), dres_dtype, extra.data(), D);
          for (i = 0; i + kW <= D; i += kW)
            (Vec::loadu(g.data() + i) + Vec::loadu(extra.data() + i)).store(g.data() + i);
          for (; i < D; ++i) g[i] += extra[i];
        }
        from_float(g.data(), row_ptr(dx, dx_dtype, r, D), dx_dtype, D);
      }
    }
  });
  std::memset(dw, 0, static_cast<size_t>(D) * sizeof(float));
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const float* p = partial.data() + blk * D;
    for (int64_t i = 0; i < D; ++i) dw[i] += p[i];
  }
}

// ---- SwiGLU ----------------------------------------------------------------------------------

constexpr int64_t kGrain = 1 << 14;  // elements per parallel chunk

inline Vec sigmoid(const Vec& a) { return Vec(1.f) / (Vec(1.f) + a.neg().exp()); }

template <typename T>
void swiglu_fwd_impl(const T* a, const T* b, T* out, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + kStep <= hi; i += kStep) {
      Vec a0, a1, b0, b1;
      load2(a + i, a0, a1);
      load2(b + i, b0, b1);
      store2(out + i, a0 * sigmoid(a0) * b0, a1 * sigmoid(a1) * b1);
    }
    for (; i < hi; ++i) {
      const float av = static_cast<float>(a[i]);
      out[i] = static_cast<T>(av / (1.f + std::exp(-av)) * static_cast<float>(b[i]));
    }
  });
}

template <typename T>
void swiglu_bwd_impl(const T* g, const T* a, const T* b, T* da, T* db, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    const Vec one(1.f);
    int64_t i = lo;
    for (; i + kStep <= hi; i += kStep) {
      Vec g0, g1, a0, a1, b0, b1;
      load2(g + i, g0, g1);
      load2(a + i, a0, a1);
      load2(b + i, b0, b1);
      const Vec s0 = sigmoid(a0), s1 = sigmoid(a1);
      store2(db + i, g0 * a0 * s0, g1 * a1 * s1);
      store2(da + i, g0 * b0 * s0 * (one + a0 * (one - s0)), g1 * b1 * s1 * (one + a1 * (one - s1)));
    }
    for (; i < hi; ++i) {
      const float gv = static_cast<float>(g[i]), av = static_cast<float>(a[i]), bv = static_cast<float>(b[i]);
      const float s = 1.f / (1.f + std::exp(-av));
      db[i] = static_cast<T>(gv * av * s);
      da[i] = static_cast<T>(gv * bv * s * (1.f + av * (1.f - s)));
    }
  });
}

void swiglu_fwd(const void* a, const void* b, void* out, Dtype dtype, int64_t n) {
  if (dtype == Dtype::Float)
    swiglu_fwd_impl(static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(out), n);
  else
    swiglu_fwd_impl(static_cast<const BF16*>(a), static_cast<const BF16*>(b), static_cast<BF16*>(out), n);
}

void swiglu_bwd(const void* g, const void* a, const void* b, void* da, void* db, Dtype dtype, int64_t n) {
  if (dtype == Dtype::Float)
    swiglu_bwd_impl(static_cast<const float*>(g), static_cast<const float*>(a), static_cast<const float*>(b),
                    static_cast<float*>(da), static_cast<float*>(db), n);
  else
    swiglu_bwd_impl(static_cast<const BF16*>(g), static_cast<const BF16*>(a), static_cast<const BF16*>(b),
                    static_cast<BF16*>(da), static_cast<BF16*>(db), n);
}

// ---- RoPE on q and k ------------------------------------------------------------------------

template <typename T>
void rotate_heads(const T* x, T* out, const float* c, const float* s, int64_t H, int64_t hd, float sign) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < H; ++h) {
    const T* xi = x + h * hd;
    T* oi = out + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = static_cast<float>(xi[2 * i]), x1 = static_cast<float>(xi[2 * i + 1]);
      const float si = sign * s[i];
      oi[2 * i] = static_cast<T>(x0 * c[i] - x1 * si);
      oi[2 * i + 1] = static_cast<T>(x0 * si + x1 * c[i]);
    }
  }
}

template <typename T>
void rope_qk_impl(const T* q, const T* k, T* q_out, T* k_out, const float* cos, const float* sin, int64_t B,
                  int64_t Tn, int64_t Hq, int64_t Hk, int64_t hd, float sign) {
  const int64_t half = hd / 2;
  at::parallel_for(0, B * Tn, 1 + kGrain / ((Hq + Hk) * hd), [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % Tn;
      rotate_heads(q + bt * Hq * hd, q_out + bt * Hq * hd, cos + t * half, sin + t * half, Hq, hd, sign);
      if (k) rotate_heads(k + bt * Hk * hd, k_out + bt * Hk * hd, cos + t * half, sin + t * half, Hk, hd, sign);
    }
  });
}

void rope_qk(const void* q, const void* k, void* q_out, void* k_out, Dtype dtype, const float* cos, const float* sin,
             int64_t B, int64_t T, int64_t Hq, int64_t Hk, int64_t hd, float sign) {
  if (dtype == Dtype::Float)
    rope_qk_impl(static_cast<const float*>(q), static_cast<const float*>(k), static_cast<float*>(q_out),
                 static_cast<float*>(k_out), cos, sin, B, T, Hq, Hk, hd, sign);
  else
    rope_qk_impl(static_cast<const BF16*>(q), static_cast<const BF16*>(k), static_cast<BF16*>(q_out),
                 static_cast<BF16*>(k_out), cos, sin, B, T, Hq, Hk, hd, sign);
}

// ---- Adam(W) with the clipping scale folded in ------------------------------------------------

template <typename T>
void adam_impl(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double wd,
               double eps, double step, bool decoupled, double grad_scale) {
  // The update of ATen's fused Adam, in float: decay, lerp of the first moment, the second
  // moment, then param -= step_size * m / (sqrt(v) / sqrt(bc2) + eps).
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, step)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, step)));
  const float decay = static_cast<float>(lr * wd), l2 = static_cast<float>(wd);
  const float w1 = static_cast<float>(1.0 - beta1), b2 = static_cast<float>(beta2), w2 = static_cast<float>(1.0 - beta2);
  const float scale = static_cast<float>(grad_scale), e = static_cast<float>(eps);
  auto one = [&](float& pv, float gv, float& mv, float& vv) {
    gv *= scale;
    if (wd != 0) {
      if (decoupled) pv = pv - decay * pv;
      else gv = gv + pv * l2;
    }
    mv = mv + w1 * (gv - mv);
    vv = vv * b2 + w2 * gv * gv;
    pv = pv - step_size * mv / (std::sqrt(vv) / bc2_sqrt + e);
  };
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    const Vec vscale(scale), vdecay(decay), vl2(l2), vw1(w1), vb2(b2), vw2(w2), vstep(step_size), vbc2(bc2_sqrt),
        veps(e);
    auto vone = [&](Vec& pv, Vec gv, Vec& mv, Vec& vv) {
      gv = gv * vscale;
      if (wd != 0) {
        if (decoupled) pv = pv - vdecay * pv;
        else gv = gv + pv * vl2;
      }
      mv = mv + vw1 * (gv - mv);
      vv = vv * vb2 + vw2 * gv * gv;
      pv = pv - vstep * mv / (vv.sqrt() / vbc2 + veps);
    };
    int64_t i = lo;
    for (; i + kStep <= hi; i += kStep) {
      Vec p0, p1, g0, g1, m0, m1, v0, v1;
      load2(p + i, p0, p1);
      load2(g + i, g0, g1);
      load2(m + i, m0, m1);
      load2(v + i, v0, v1);
      vone(p0, g0, m0, v0);
      vone(p1, g1, m1, v1);
      store2(p + i, p0, p1);
      store2(m + i, m0, m1);
      store2(v + i, v0, v1);
    }
    for (; i < hi; ++i) {
      float pv = static_cast<float>(p[i]), mv = static_cast<float>(m[i]), vv = static_cast<float>(v[i]);
      one(pv, static_cast<float>(g[i]), mv, vv);
      p[i] = static_cast<T>(pv);
      m[i] = static_cast<T>(mv);
      v[i] = static_cast<T>(vv);
    }
  });
}

void adam(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, Dtype dtype, int64_t n, double lr,
          double beta1, double beta2, double weight_decay, double eps, double step, bool decoupled, double grad_scale) {
  if (dtype == Dtype::Float)
    adam_impl(static_cast<float*>(param), static_cast<const float*>(grad), static_cast<float*>(exp_avg),
              static_cast<float*>(exp_avg_sq), n, lr, beta1, beta2, weight_decay, eps, step, decoupled, grad_scale);
  else
    adam_impl(static_cast<BF16*>(param), static_cast<const BF16*>(grad), static_cast<BF16*>(exp_avg),
              static_cast<BF16*>(exp_avg_sq), n, lr, beta1, beta2, weight_decay, eps, step, decoupled, grad_scale);
}

// ---- Causal attention rows ------------------------------------------------------------------

// Valid columns of row r: keys 0 .. pos0 + r, within the block's cols.
inline int64_t valid_cols(int64_t r, int64_t pos0, int64_t cols) { return imin(cols, pos0 + r + 1); }

void attn_softmax_fwd(float* s, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale, float* lse) {
  const Vec vscale(scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const int64_t n = valid_cols(r, pos0, cols);
    Vec vmax(-INFINITY);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) vmax = at::vec::maximum(vmax, Vec::loadu(row + i) * vscale);
    float m = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
    for (; i < n; ++i) m = row[i] * scale > m ? row[i] * scale : m;
    const Vec vm(m);
    Vec vsum(0.f);
    for (i = 0; i + kW <= n; i += kW) {
      const Vec e = (Vec::loadu(row + i) * vscale - vm).exp();
      e.store(row + i);
      vsum = vsum + e;
    }
    float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, vsum);
    for (; i < n; ++i) {
      row[i] = std::exp(row[i] * scale - m);
      sum += row[i];
    }
    lse[r] = m + std::log(sum);
    const Vec vinv(1.0f / sum);
    for (i = 0; i + kW <= n; i += kW) (Vec::loadu(row + i) * vinv).store(row + i);
    for (; i < n; ++i) row[i] *= 1.0f / sum;
    if (n < cols) std::memset(row + n, 0, static_cast<size_t>(cols - n) * sizeof(float));
  }
}

void attn_probs(float* s, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale, const float* lse) {
  const Vec vscale(scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const int64_t n = valid_cols(r, pos0, cols);
    const Vec vl(lse[r]);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) (Vec::loadu(row + i) * vscale - vl).exp().store(row + i);
    for (; i < n; ++i) row[i] = std::exp(row[i] * scale - lse[r]);
    if (n < cols) std::memset(row + n, 0, static_cast<size_t>(cols - n) * sizeof(float));
  }
}

void attn_dscores(const float* p, float* dp, int64_t rows, int64_t cols, int64_t ld, int64_t pos0, float scale,
                  const float* di) {
  const Vec vscale(scale);
  for (int64_t r = 0; r < rows; ++r) {
    const float* prow = p + r * ld;
    float* drow = dp + r * ld;
    const int64_t n = valid_cols(r, pos0, cols);
    const Vec vd(di[r]);
    int64_t i = 0;
    for (; i + kW <= n; i += kW)
      (Vec::loadu(prow + i) * (Vec::loadu(drow + i) - vd) * vscale).store(drow + i);
    for (; i < n; ++i) drow[i] = prow[i] * (drow[i] - di[r]) * scale;
    if (n < cols) std::memset(drow + n, 0, static_cast<size_t>(cols - n) * sizeof(float));
  }
}

// ---- Cross entropy rows ------------------------------------------------------------------------

void cross_entropy_rows(float* logits, int64_t rows, int64_t V, const int64_t* target, float* loss, float* lse) {
  at::parallel_for(0, rows, imax(1, 16384 / V), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* row = logits + r * V;
      Vec vmax(-INFINITY);
      int64_t i = 0;
      for (; i + kW <= V; i += kW) vmax = at::vec::maximum(vmax, Vec::loadu(row + i));
      float m = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
      for (; i < V; ++i) m = row[i] > m ? row[i] : m;
      const float picked = target[r] >= 0 ? row[target[r]] : 0.f;
      const Vec vm(m);
      Vec vsum(0.f);
      for (i = 0; i + kW <= V; i += kW) {
        const Vec e = (Vec::loadu(row + i) - vm).exp();
        e.store(row + i);
        vsum = vsum + e;
      }
      float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, vsum);
      for (; i < V; ++i) {
        row[i] = std::exp(row[i] - m);
        sum += row[i];
      }
      const float l = m + std::log(sum);
      lse[r] = l;
      loss[r] = target[r] >= 0 ? l - picked : 0.f;
      const Vec vinv(1.0f / sum);
      for (i = 0; i + kW <= V; i += kW) (Vec::loadu(row + i) * vinv).store(row + i);
      for (; i < V; ++i) row[i] *= 1.0f / sum;
      if (target[r] >= 0) row[target[r]] -= 1.0f;
    }
  });
}

void cross_entropy_grad_block(float* logits, int64_t rows, int64_t cols, int64_t v0, const int64_t* target,
                              const float* lse, const float* g) {
  at::parallel_for(0, rows, imax(1, 16384 / cols), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* row = logits + r * cols;
      const Vec vl(lse[r]), vg(g[r]);
      int64_t i = 0;
      for (; i + kW <= cols; i += kW) ((Vec::loadu(row + i) - vl).exp() * vg).store(row + i);
      for (; i < cols; ++i) row[i] = std::exp(row[i] - lse[r]) * g[r];
      const int64_t t = target[r] - v0;
      if (t >= 0 && t < cols) row[t] -= g[r];
    }
  });
}

#define TITAN_STR2(x) #x
#define TITAN_STR(x) TITAN_STR2(x)

}  // namespace

// One table per build: cpu_table_DEFAULT, cpu_table_AVX2, cpu_table_AVX512.
const Table& TITAN_CAT(cpu_table_, CPU_CAPABILITY)() {
  static const Table table{rms_norm_fwd,     rms_norm_bwd, swiglu_fwd,   swiglu_bwd, rope_qk,
                           adam,             attn_softmax_fwd, attn_probs, attn_dscores, cross_entropy_rows,
                           cross_entropy_grad_block,
                           TITAN_STR(CPU_CAPABILITY)};
  return table;
}

}  // namespace titan::kernels::cpu
