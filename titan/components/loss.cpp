#include "titan/components/loss.h"

namespace titan::components {

at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& labels,
                              int64_t global_valid_tokens) {
  at::Tensor sum = at::cross_entropy_loss(
      logits.flatten(0, 1).to(at::promote_types(logits.scalar_type(), at::kFloat)), labels.flatten(),
                                          std::nullopt, at::Reduction::Sum, kIgnoreIndex);
  return sum / static_cast<double>(std::max<int64_t>(global_valid_tokens, 1));
}

int64_t count_valid_tokens(const at::Tensor& labels) {
  return labels.ne(kIgnoreIndex).sum().item<int64_t>();
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  for (auto& n : norms) n = n.to(at::kFloat);
  at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
  if (max_norm > 0) {
    at::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef);
  }
  return total.item<double>();
}

}  // namespace titan::components
