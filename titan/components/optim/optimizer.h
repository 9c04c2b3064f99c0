// Adam and AdamW over a list of parameters, in torchtitan's three implementations: "fused"
// (titan.cpp's fused kernel, kernels/fused_ops.h, with the clipping scale folded in), "foreach"
// (multi-tensor ops) and "for-loop" (one tensor at a time). All three compute the same update;
// tests hold them to each other and to the closed form.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>
#include <vector>

namespace titan::components {

struct OptimizerOptions {
  std::string name = "AdamW";  // "AdamW" (decoupled decay) or "Adam" (L2 added to the gradient)
  double lr = 8e-4;
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  std::string implementation = "fused";  // fused / foreach / for-loop
};

// Throws titan::Error for an unknown name/implementation or a value out of range (NaN and
// infinities included): the checks the constructor makes, callable before anything is built.
void validate_optimizer_options(const OptimizerOptions& options);

class Optimizer {
 public:
  // Validates the options (throws titan::Error naming the optimizer.* key). `names` are the
  // parameters' FQNs (the state is keyed by them); empty: "param.<i>".
  Optimizer(std::vector<at::Tensor> params, OptimizerOptions options, std::vector<std::string> names = {});

  // One update with learning rate `lr` from the parameters' .grad() times `grad_scale` (the
  // gradient-clipping coefficient); parameters without a gradient are skipped. The fused
  // implementation scales inside its kernel; the others scale the gradients in place first.
  void step(double lr, double grad_scale = 1.0);
  // The same with the scale as a float64 tensor of one element, on the parameters' device: nothing is
  // read on the host (the trainer's clip coefficient never leaves the GPU).
  void step(double lr, const at::Tensor& grad_scale);
  void zero_grad();  // drops the gradients (set to undefined), as set_to_none=True

  const OptimizerOptions& options() const { return options_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }
  // The index of the parameter `fqn` (std::out_of_range when there is none).
  size_t index_of(const std::string& fqn) const;
  // State, one entry per parameter (allocated on the first step).
  std::vector<at::Tensor>& exp_avg() { return exp_avg_; }
  std::vector<at::Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  // float32 scalars: on the parameters' device for the fused implementation (its kernels read them
  // there), on the CPU for the others (their bias corrections are computed on the host, as PyTorch's).
  std::vector<at::Tensor>& step_count() { return steps_; }
  // Allocates the state (zeros) if no step has yet: a checkpoint then loads into it.
  void ensure_state() {
    if (exp_avg_.empty()) init_state();
  }

 private:
  void init_state();
  void update(double lr, double grad_scale, const at::Tensor& scale_on_device);
  OptimizerOptions options_;
  bool decoupled_;
  std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_, steps_;
  std::vector<std::string> names_;
};

}  // namespace titan::components
