#include "titan/components/loss.h"

#include <algorithm>
#include <cmath>

namespace titan::components {

at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& labels,
                              int64_t global_valid_tokens) {
  at::Tensor sum = at::cross_entropy_loss(
      logits.flatten(0, 1).to(at::promote_types(logits.scalar_type(), at::kFloat)), labels.flatten(),
                                          std::nullopt, at::Reduction::Sum, kIgnoreIndex);
  return sum / static_cast<double>(std::max<int64_t>(global_valid_tokens, 1));
}

at::Tensor cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels) {
  at::Tensor flat = logits.flatten(0, 1).to(at::promote_types(logits.scalar_type(), at::kFloat));
  at::Tensor per = at::cross_entropy_loss(flat, labels.flatten(), std::nullopt, at::Reduction::None, kIgnoreIndex);
  return per.view(labels.sizes());
}

int64_t count_valid_tokens(const at::Tensor& labels) {
  return labels.ne(kIgnoreIndex).sum().item<int64_t>();
}

namespace {
std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}
}  // namespace

double total_grad_norm(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  auto grads = grads_of(params);
  return grads.empty() ? 0.0 : std::sqrt(sum_of_squares(grads).item<double>());
}

at::Tensor total_grad_norm_tensor(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  return sum_of_squares(grads_of(params)).sqrt();
}

at::Tensor clip_coefficient(const at::Tensor& total_norm, double max_norm) {
  at::NoGradGuard no_grad;
  const at::Tensor one = at::ones_like(total_norm, at::kDouble);
  if (max_norm <= 0) return one;
  const at::Tensor c = at::full_like(one, max_norm).div(total_norm.to(at::kDouble).add(1e-6));
  return at::where(c.lt(1.0), c, one);
}

double clip_coefficient(double total_norm, double max_norm) {
  return max_norm <= 0 ? 1.0 : std::min(1.0, max_norm / (total_norm + 1e-6));
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  const double total = total_grad_norm(params);
  scale_to_max_norm(grads_of(params), total, max_norm);
  return total;
}

at::Tensor sum_of_squares(const std::vector<at::Tensor>& grads) {
  // Accumulated in float64: float32 sums over millions of elements drift by ~1e-4 relative,
  // and the norm must not depend on how the gradients are split across ranks.
  at::Tensor sq = at::zeros({1}, grads.empty() ? at::TensorOptions().dtype(at::kDouble)
                                               : grads[0].options().dtype(at::kDouble));
  if (grads.empty()) return sq;
  for (auto& n : at::_foreach_norm(grads, 2, at::kDouble)) sq += n.square();
  return sq;
}

void scale_to_max_norm(const std::vector<at::Tensor>& grads, double total_norm, double max_norm) {
  if (max_norm <= 0 || grads.empty()) return;
  at::_foreach_mul_(grads, clip_coefficient(total_norm, max_norm));
}

}  // namespace titan::components
