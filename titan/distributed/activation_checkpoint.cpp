#include "titan/distributed/activation_checkpoint.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "titan/kernels/ops.h"

namespace titan::distributed {

namespace {

using models::llama3::RopeTable;
using models::llama3::TransformerBlock;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<at::Tensor> block_weights(const TransformerBlock& b) {
  return {b.attention.wq.weight, b.attention.wk.weight, b.attention.wv.weight,
          b.attention.wo.weight, b.feed_forward.w1.weight, b.feed_forward.w2.weight,
          b.feed_forward.w3.weight, b.attention_norm.weight, b.ffn_norm.weight};
}

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
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::TensorList weights,
                            const TransformerBlock* block, const RopeTable* rope, bool keep_ops) {
    (void)weights;  // inputs only so that autograd routes their gradients here
    ctx->save_for_backward({x});
    ctx->saved_data["keep_ops"] = keep_ops;
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    ctx->saved_data["rope"] = reinterpret_cast<int64_t>(rope);
    const AutocastState ac = AutocastState::capture();
    ctx->saved_data["autocast"] = std::vector<int64_t>{ac.cpu, ac.cuda, static_cast<int64_t>(ac.cpu_dtype),
                                                       static_cast<int64_t>(ac.cuda_dtype)};
    // Grad mode is off inside a custom function's forward, so nothing is kept but what the
    // op-level policy records.
    if (!keep_ops) return block->forward(x, *rope);
    std::vector<at::Tensor> kept;
    at::Tensor out;
    {
      kernels::OpCheckpointScope record(kernels::OpCheckpointScope::Mode::Record, kept);
      out = block->forward(x, *rope);
    }
    ctx->saved_data["kept"] = kept;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto* block = reinterpret_cast<const TransformerBlock*>(ctx->saved_data["block"].toInt());
    const auto* rope = reinterpret_cast<const RopeTable*>(ctx->saved_data["rope"].toInt());
    const auto acv = ctx->saved_data["autocast"].toIntVector();
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);

    const AutocastState outer = AutocastState::capture();
    AutocastState{acv[0] != 0, acv[1] != 0, static_cast<at::ScalarType>(acv[2]),
                  static_cast<at::ScalarType>(acv[3])}
        .apply();
    at::Tensor out;
    {
      at::AutoGradMode grad_on(true);
      if (ctx->saved_data["keep_ops"].toBool()) {
        std::vector<at::Tensor> kept = ctx->saved_data["kept"].toTensorVector();
        ctx->saved_data.erase("kept");
        kernels::OpCheckpointScope replay(kernels::OpCheckpointScope::Mode::Replay, kept);
        out = block->forward(x, *rope);
        replay.finish();
      } else {
        out = block->forward(x, *rope);
      }
    }
    outer.apply();
    at::autocast::clear_cache();

    std::vector<at::Tensor> inputs{x};
    for (auto& w : block_weights(*block)) inputs.push_back(w);
    variable_list grads = torch::autograd::grad({out}, inputs, {grad_out[0]},
                                                /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
    grads.emplace_back();  // block
    grads.emplace_back();  // rope
    grads.emplace_back();  // keep_ops
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed_block_forward(const TransformerBlock& block, const at::Tensor& x,
                                      const RopeTable& rope) {
  auto weights = block_weights(block);
  return CheckpointFunction::apply(x, at::TensorList(weights), &block, &rope, false);
}

at::Tensor op_checkpointed_block_forward(const TransformerBlock& block, const at::Tensor& x, const RopeTable& rope) {
  auto weights = block_weights(block);
  return CheckpointFunction::apply(x, at::TensorList(weights), &block, &rope, true);
}

}  // namespace titan::distributed
