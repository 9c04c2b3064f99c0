#include "titan/components/optim/optimizer.h"

#include <cmath>
#include <stdexcept>

#include "titan/common/error.h"
#include "titan/kernels/fused_ops.h"

namespace titan::components {

void validate_optimizer_options(const OptimizerOptions& o) {
  if (o.name != "AdamW" && o.name != "Adam")
    throw Error("optimizer.name = \"" + o.name + "\" is not supported", "use AdamW or Adam");
  const auto& impl = o.implementation;
  if (impl != "fused" && impl != "foreach" && impl != "for-loop")
    throw Error("optimizer.implementation = \"" + impl + "\" is unknown", "use fused, foreach or for-loop");
  auto show = [](double v) { return std::to_string(v); };
  // The comparisons are written so that NaN fails them too; infinities are caught by name.
  if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1))
    throw Error("optimizer.beta1 = " + show(o.beta1) + ", optimizer.beta2 = " + show(o.beta2) + ": both must lie in [0, 1)",
                "e.g. beta1 = 0.9, beta2 = 0.95");
  if (!(o.eps > 0) || !std::isfinite(o.eps))
    throw Error("optimizer.eps = " + show(o.eps) + " must be finite and > 0", "e.g. eps = 1e-8");
  if (!(o.lr >= 0) || !std::isfinite(o.lr))
    throw Error("optimizer.lr = " + show(o.lr) + " must be finite and >= 0", "e.g. lr = 3e-4");
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    throw Error("optimizer.weight_decay = " + show(o.weight_decay) + " must be finite and >= 0", "e.g. weight_decay = 0.1");
}

Optimizer::Optimizer(std::vector<at::Tensor> params, OptimizerOptions options, std::vector<std::string> names)
    : options_(std::move(options)), params_(std::move(params)), names_(std::move(names)) {
  if (names_.empty())
    for (size_t i = 0; i < params_.size(); ++i) names_.push_back("param." + std::to_string(i));
  if (names_.size() != params_.size()) throw std::logic_error("Optimizer: one name per parameter");
  validate_optimizer_options(options_);
  decoupled_ = options_.name == "AdamW";
}

size_t Optimizer::index_of(const std::string& fqn) const {
  for (size_t i = 0; i < names_.size(); ++i)
    if (names_[i] == fqn) return i;
  throw std::out_of_range("the optimizer has no parameter " + fqn);
}

void Optimizer::init_state() {
  for (const auto& p : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    steps_.push_back(at::zeros({}, options_.implementation == "fused" ? p.options().dtype(at::kFloat)
                                                                      : at::TensorOptions().dtype(at::kFloat)));
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = at::Tensor();
}

void Optimizer::step(double lr, double grad_scale) { update(lr, grad_scale, {}); }

void Optimizer::step(double lr, const at::Tensor& grad_scale) {
  if (grad_scale.is_cpu()) return update(lr, grad_scale.item<double>(), {});  // nothing to wait for
  update(lr, 1.0, grad_scale);
}

void Optimizer::update(double lr, double grad_scale, const at::Tensor& scale_on_device) {
  at::NoGradGuard no_grad;
  if (exp_avg_.empty()) init_state();
  std::vector<at::Tensor> p, g, m, v, s;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;
    p.push_back(params_[i]);
    g.push_back(params_[i].grad());
    m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]);
    s.push_back(steps_[i]);
  }
  if (p.empty()) return;
  const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
  const double wd = options_.weight_decay;
  const auto& impl = options_.implementation;

  if (impl == "fused") {
    at::_foreach_add_(s, 1);
    kernels::adam_step(p, g, m, v, s, {lr, b1, b2, wd, eps, decoupled_}, grad_scale, scale_on_device);
    return;
  }
  if (scale_on_device.defined()) kernels::scale_gradients(g, scale_on_device);
  else if (grad_scale != 1.0) at::_foreach_mul_(g, grad_scale);
  if (impl == "foreach") {
    at::_foreach_add_(s, 1);
    const double step = s[0].item<double>();  // all parameters step together
    if (wd != 0) {
      if (decoupled_) at::_foreach_mul_(p, 1.0 - lr * wd);
      else g = at::_foreach_add(g, p, wd);
    }
    at::_foreach_lerp_(m, g, 1.0 - b1);
    at::_foreach_mul_(v, b2);
    at::_foreach_addcmul_(v, g, g, 1.0 - b2);
    const double step_size = lr / (1.0 - std::pow(b1, step));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, step));
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, bc2_sqrt);
    at::_foreach_add_(denom, eps);
    at::_foreach_addcdiv_(p, m, denom, -step_size);
    return;
  }
  for (size_t i = 0; i < p.size(); ++i) {  // for-loop
    s[i].add_(1);
    const double step = s[i].item<double>();
    at::Tensor grad = g[i];
    if (wd != 0) {
      if (decoupled_) p[i].mul_(1.0 - lr * wd);
      else grad = grad.add(p[i], wd);
    }
    m[i].lerp_(grad, 1.0 - b1);
    v[i].mul_(b2).addcmul_(grad, grad, 1.0 - b2);
    const double step_size = lr / (1.0 - std::pow(b1, step));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, step));
    at::Tensor denom = (v[i].sqrt() / bc2_sqrt).add_(eps);
    p[i].addcdiv_(m[i], denom, -step_size);
  }
}

}  // namespace titan::components
