#include "titan/distributed/activation_checkpoint.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "titan/kernels/ops.h"

namespace titan::distributed {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autocast state of the devices we run on, saved in forward and restored for the recompute.
struct AutocastState {
  bool cpu, cuda;
  at::ScalarType cpu_dtype, cuda_dtype;
  static AutocastState capture() {
    return {at::autocast::is_autocast_enabled(at::kCPU), at::autocast::is_autocast_enabled(at::kCUDA),
            at::autocast::get_autocast_dtype(at::kCPU), at::autocast::get_autocast_dtype(at::kCUDA)};
  }
  void apply() const {
    at::autocast::set_autocast_enabled(at::kCPU, cpu);
    at::autocast::set_autocast_enabled(at::kCUDA, cuda);
    at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
    at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
  }
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::TensorList weights, const BlockFn* block,
                            const BlockContext* context, const std::vector<at::Tensor*>* slots, bool keep_ops) {
    ctx->save_for_backward({x});
    ctx->saved_data["docs"] = context->doc_starts;
    ctx->saved_data["positions"] = context->positions;
    ctx->saved_data["weights"] = weights.vec();  // what backward recomputes with and differentiates against
    ctx->saved_data["slots"] = reinterpret_cast<int64_t>(slots);
    ctx->saved_data["keep_ops"] = keep_ops;
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    const AutocastState ac = AutocastState::capture();
    ctx->saved_data["autocast"] = std::vector<int64_t>{ac.cpu, ac.cuda, static_cast<int64_t>(ac.cpu_dtype),
                                                       static_cast<int64_t>(ac.cuda_dtype)};
    // Grad mode is off inside a custom function's forward, so nothing is kept but what the
    // op-level policy records.
    if (!keep_ops) return (*block)(x, *context);
    std::vector<at::Tensor> kept;
    at::Tensor out;
    {
      kernels::OpCheckpointScope record(kernels::OpCheckpointScope::Mode::Record, kept);
      out = (*block)(x, *context);
    }
    ctx->saved_data["kept"] = kept;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto* block = reinterpret_cast<const BlockFn*>(ctx->saved_data["block"].toInt());
    const auto* slots = reinterpret_cast<const std::vector<at::Tensor*>*>(ctx->saved_data["slots"].toInt());
    const std::vector<at::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    // The recompute reads the weights of this forward, whatever the slots hold now.
    std::vector<at::Tensor> current;
    for (size_t i = 0; i < slots->size(); ++i) {
      current.push_back(*(*slots)[i]);
      *(*slots)[i] = weights[i];
    }
    const auto acv = ctx->saved_data["autocast"].toIntVector();
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);

    const AutocastState outer = AutocastState::capture();
    AutocastState{acv[0] != 0, acv[1] != 0, static_cast<at::ScalarType>(acv[2]),
                  static_cast<at::ScalarType>(acv[3])}
        .apply();
    at::Tensor out;
    {
      at::AutoGradMode grad_on(true);
      RecomputeScope recompute;
      if (ctx->saved_data["keep_ops"].toBool()) {
        std::vector<at::Tensor> kept = ctx->saved_data["kept"].toTensorVector();
        ctx->saved_data.erase("kept");
        kernels::OpCheckpointScope replay(kernels::OpCheckpointScope::Mode::Replay, kept);
        out = (*block)(x, BlockContext{ctx->saved_data["docs"].toTensor(), ctx->saved_data["positions"].toTensor()});
        replay.finish();
      } else {
        out = (*block)(x, BlockContext{ctx->saved_data["docs"].toTensor(), ctx->saved_data["positions"].toTensor()});
      }
    }
    outer.apply();
    at::autocast::clear_cache();
    for (size_t i = 0; i < slots->size(); ++i) *(*slots)[i] = current[i];

    std::vector<at::Tensor> inputs{x};
    for (auto& w : weights) inputs.push_back(w);
    variable_list grads = torch::autograd::grad({out}, inputs, {grad_out[0]},
                                                /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
    grads.emplace_back();  // block
    grads.emplace_back();  // context
    grads.emplace_back();  // slots
    grads.emplace_back();  // keep_ops
    return grads;
  }
};

}  // namespace

namespace {
std::vector<at::Tensor> values(const std::vector<at::Tensor*>& slots) {
  std::vector<at::Tensor> out;
  for (auto* s : slots) out.push_back(*s);
  return out;
}
}  // namespace

at::Tensor checkpoint_block(const BlockFn& block, const at::Tensor& x, const BlockContext& context,
                            const std::vector<at::Tensor*>& weights) {
  return CheckpointFunction::apply(x, at::TensorList(values(weights)), &block, &context, &weights, false);
}

at::Tensor op_checkpoint_block(const BlockFn& block, const at::Tensor& x, const BlockContext& context,
                               const std::vector<at::Tensor*>& weights) {
  return CheckpointFunction::apply(x, at::TensorList(values(weights)), &block, &context, &weights, true);
}

}  // namespace titan::distributed
