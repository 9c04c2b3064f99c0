// CUDA versions of the fused kernels (see fused_cuda.h). Plain CUDA C++ on raw pointers: the
// dtype of each array is a runtime argument, every value is computed in float, and bf16 results
// are rounded to nearest even (__float2bfloat16_rn), as the CPU kernels and ATen do.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "titan/kernels/cuda/fused_cuda.h"

namespace titan::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const void* p, Dtype d, int64_t i) {
  return d == Dtype::Float ? static_cast<const float*>(p)[i]
                           : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}

__device__ __forceinline__ void store(void* p, Dtype d, int64_t i, float v) {
  if (d == Dtype::Float) static_cast<float*>(p)[i] = v;
  else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? warp_sums[threadIdx.x] : 0.f;
  if (warp == 0)
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  const float out = total;
  __syncthreads();  // warp_sums and total are reused by the next call
  return out;
}

__global__ void rms_norm_fwd_kernel(const void* x, Dtype xd, const void* delta, Dtype dd, const float* w, void* h,
                                    Dtype hd, void* y, Dtype yd, float* rstd, int64_t rows, int64_t D, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * D;
    float ss = 0.f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      float v = load(x, xd, base + i);
      if (delta) {
        v += load(delta, dd, base + i);
        store(h, hd, base + i, v);
        v = load(h, hd, base + i);  // normalise what was stored
      }
      ss += v * v;
    }
    const float rs = rsqrtf(block_sum(ss) / static_cast<float>(D) + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float v = delta ? load(h, hd, base + i) : load(x, xd, base + i);
      store(y, yd, base + i, v * rs * w[i]);
    }
  }
}

__global__ void rms_norm_bwd_kernel(const void* dy, Dtype dyd, const void* h, Dtype hd, const float* w,
                                    const float* rstd, const void* dres, Dtype rd, void* dx, Dtype dxd,
                                    float* dw_partial, int64_t rows, int64_t D) {
  float* dwp = dw_partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * D;
    const float rs = rstd[r];
    float dot = 0.f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float g = load(dy, dyd, base + i), xh = load(h, hd, base + i) * rs;
      dot += g * w[i] * xh;
      dwp[i] += g * xh;
    }
    const float mean = block_sum(dot) / static_cast<float>(D);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float g = load(dy, dyd, base + i), xh = load(h, hd, base + i) * rs;
      float v = rs * (g * w[i] - xh * mean);
      if (dres) v += load(dres, rd, base + i);
      store(dx, dxd, base + i, v);
    }
  }
}

__global__ void swiglu_fwd_kernel(const void* a, const void* b, void* out, Dtype d, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float av = load(a, d, i);
    store(out, d, i, av / (1.f + expf(-av)) * load(b, d, i));
  }
}

__global__ void swiglu_bwd_kernel(const void* g, const void* a, const void* b, void* da, void* db, Dtype d, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gv = load(g, d, i), av = load(a, d, i), bv = load(b, d, i);
    const float s = 1.f / (1.f + expf(-av));
    store(db, d, i, gv * av * s);
    store(da, d, i, gv * bv * s * (1.f + av * (1.f - s)));
  }
}

// One thread per rotated pair of q or k.
__global__ void rope_qk_kernel(const void* q, const void* k, void* qo, void* ko, Dtype d, const float* cos,
                               const float* sin, int64_t B, int64_t T, int64_t Hq, int64_t Hk, int64_t hd,
                               float sign) {
  const int64_t half = hd / 2, q_pairs = B * T * Hq * half, k_pairs = k ? B * T * Hk * half : 0;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < q_pairs + k_pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool is_q = p < q_pairs;
    const int64_t j = is_q ? p : p - q_pairs, H = is_q ? Hq : Hk;
    const int64_t i = j % half, t = (j / (half * H)) % T;
    const void* src = is_q ? q : k;
    void* dst = is_q ? qo : ko;
    const float c = cos[t * half + i], s = sign * sin[t * half + i];
    const float x0 = load(src, d, 2 * j), x1 = load(src, d, 2 * j + 1);
    store(dst, d, 2 * j, x0 * c - x1 * s);
    store(dst, d, 2 * j + 1, x0 * s + x1 * c);
  }
}

__global__ void adam_kernel(void* p, const void* g, void* m, void* v, Dtype d, int64_t n, float lr, double beta1,
                            double beta2, float decay, float l2, float eps, const float* step, bool decoupled,
                            float scale_value, const double* scale_on_device) {
  const double st = static_cast<double>(*step);
  const float scale = scale_on_device ? static_cast<float>(*scale_on_device) : scale_value;
  const float step_size = static_cast<float>(lr / (1.0 - pow(beta1, st)));
  const float bc2_sqrt = static_cast<float>(sqrt(1.0 - pow(beta2, st)));
  const float w1 = static_cast<float>(1.0 - beta1), b2 = static_cast<float>(beta2), w2 = static_cast<float>(1.0 - beta2);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float pv = load(p, d, i), gv = load(g, d, i) * scale, mv = load(m, d, i), vv = load(v, d, i);
    if (decoupled) pv = pv - decay * pv;
    else gv = gv + pv * l2;
    mv = mv + w1 * (gv - mv);
    vv = vv * b2 + w2 * gv * gv;
    pv = pv - step_size * mv / (sqrtf(vv) / bc2_sqrt + eps);
    store(p, d, i, pv);
    store(m, d, i, mv);
    store(v, d, i, vv);
  }
}

int elementwise_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

int row_threads(int64_t D) { return D >= 1024 ? 1024 : D >= 256 ? 256 : 128; }

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    std::fprintf(stderr, "titan: CUDA kernel %s failed to launch: %s\n", what, cudaGetErrorString(err));
    std::abort();
  }
}

}  // namespace

void rms_norm_fwd(const void* x, Dtype x_dtype, const void* delta, Dtype delta_dtype, const float* w, void* h,
                  Dtype h_dtype, void* y, Dtype y_dtype, float* rstd, int64_t rows, int64_t D, float eps,
                  void* stream) {
  const int blocks = static_cast<int>(rows < 65536 ? rows : 65536);
  rms_norm_fwd_kernel<<<blocks, row_threads(D), 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_dtype, delta, delta_dtype, w, h, h_dtype, y, y_dtype, rstd, rows, D, eps);
  check_launch("rms_norm_fwd");
}

void rms_norm_bwd(const void* dy, Dtype dy_dtype, const void* h, Dtype h_dtype, const float* w, const float* rstd,
                  const void* dres, Dtype dres_dtype, void* dx, Dtype dx_dtype, float* dw_partial, int64_t parts,
                  int64_t rows, int64_t D, void* stream) {
  rms_norm_bwd_kernel<<<static_cast<int>(parts), row_threads(D), 0, static_cast<cudaStream_t>(stream)>>>(
      dy, dy_dtype, h, h_dtype, w, rstd, dres, dres_dtype, dx, dx_dtype, dw_partial, rows, D);
  check_launch("rms_norm_bwd");
}

void swiglu_fwd(const void* a, const void* b, void* out, Dtype dtype, int64_t n, void* stream) {
  swiglu_fwd_kernel<<<elementwise_blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a, b, out, dtype, n);
  check_launch("swiglu_fwd");
}

void swiglu_bwd(const void* g, const void* a, const void* b, void* da, void* db, Dtype dtype, int64_t n,
                void* stream) {
  swiglu_bwd_kernel<<<elementwise_blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(g, a, b, da, db,
                                                                                                 dtype, n);
  check_launch("swiglu_bwd");
}

void rope_qk(const void* q, const void* k, void* q_out, void* k_out, Dtype dtype, const float* cos, const float* sin,
             int64_t B, int64_t T, int64_t Hq, int64_t Hk, int64_t hd, float sign, void* stream) {
  const int64_t pairs = B * T * (Hq + (k ? Hk : 0)) * (hd / 2);
  rope_qk_kernel<<<elementwise_blocks(pairs), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      q, k, q_out, k_out, dtype, cos, sin, B, T, Hq, Hk, hd, sign);
  check_launch("rope_qk");
}

void adam(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, Dtype dtype, int64_t n, double lr,
          double beta1, double beta2, double weight_decay, double eps, const float* step, bool decoupled,
          double grad_scale, const double* grad_scale_on_device, void* stream) {
  adam_kernel<<<elementwise_blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      param, grad, exp_avg, exp_avg_sq, dtype, n, static_cast<float>(lr), beta1, beta2,
      static_cast<float>(lr * weight_decay), static_cast<float>(weight_decay), static_cast<float>(eps), step,
      decoupled, static_cast<float>(grad_scale), grad_scale_on_device);
  check_launch("adam");
}

}  // namespace titan::kernels::cuda
