// The CUDA bodies of the fused kernels (fused_cuda.cu), on raw pointers with the same meaning as
// the CPU table in cpu/fused_cpu.h, each launched on `stream` (a cudaStream_t). Built only when
// torch has CUDA and the toolkit is found (TITAN_HAVE_CUDA); nothing here includes torch.
#pragma once

#include <cstdint>

#include "titan/kernels/cpu/fused_cpu.h"

namespace titan::kernels::cuda {

using cpu::Dtype;

void rms_norm_fwd(const void* x, Dtype x_dtype, const void* delta, Dtype delta_dtype, const float* w, void* h,
                  Dtype h_dtype, void* y, Dtype y_dtype, float* rstd, int64_t rows, int64_t D, float eps,
                  void* stream);
// dw_partial: (parts, D) floats, zeroed by the caller; row r adds into part r % parts.
void rms_norm_bwd(const void* dy, Dtype dy_dtype, const void* h, Dtype h_dtype, const float* w, const float* rstd,
                  const void* dres, Dtype dres_dtype, void* dx, Dtype dx_dtype, float* dw_partial, int64_t parts,
                  int64_t rows, int64_t D, void* stream);
void swiglu_fwd(const void* a, const void* b, void* out, Dtype dtype, int64_t n, void* stream);
void swiglu_bwd(const void* g, const void* a, const void* b, void* da, void* db, Dtype dtype, int64_t n,
                void* stream);
void rope_qk(const void* q, const void* k, void* q_out, void* k_out, Dtype dtype, const float* cos, const float* sin,
             int64_t B, int64_t T, int64_t Hq, int64_t Hk, int64_t hd, float sign, void* stream);
// `step` points to the (already incremented) float step counter on the device; the gradient is
// multiplied by *grad_scale_on_device (a float64 on the device) when that is not null, else by
// `grad_scale`.
void adam(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, Dtype dtype, int64_t n, double lr,
          double beta1, double beta2, double weight_decay, double eps, const float* step, bool decoupled,
          double grad_scale, const double* grad_scale_on_device, void* stream);

}  // namespace titan::kernels::cuda
