#include "titan/models/llama3/parallelize.h"

#include <algorithm>

#include "titan/distributed/activation_checkpoint.h"

namespace titan::models::llama3 {

std::string parallelize(Transformer& model, const config::JobConfig& cfg) {
  std::string applied;
  auto note = [&](const std::string& line) { applied += (applied.empty() ? "" : "\n") + line; };
  // compile.enable: the fused kernels stand where torch.compile would fuse, per component.
  if (cfg.get_bool("compile.enable")) {
    const auto& parts = cfg.get_list("compile.components");
    auto has = [&](const char* c) { return std::find(parts.begin(), parts.end(), c) != parts.end(); };
    model.set_fused_kernels(has("model"), has("loss"));
    note(std::string("Compiling the model with fused kernels:") +
         (has("model") ? " RMSNorm with the residual add, RoPE on q and k, SwiGLU in every block;" : "") +
         (has("loss") ? " the output head with the loss, chunked over tokens;" : "") +
         (parts.empty() ? " nothing (compile.components is empty)" : ""));
  }
  const std::string& mode = cfg.get_string("activation_checkpoint.mode");
  if (mode == "none") return applied;
  const std::string& option = cfg.get_string("activation_checkpoint.selective_ac_option");
  if (mode == "selective" && option == "op") {
    for (size_t i = 0; i < model.layers().size(); ++i)
      model.set_block_runner(i, distributed::op_checkpointed_block_forward);
    note("Applied selective activation checkpointing to the model (op policy: attention and every second "
         "matmul kept, the rest recomputed, in all " + std::to_string(model.layers().size()) + " blocks)");
    return applied;
  }
  int64_t every = 1;  // full: every block
  if (mode == "selective") every = std::stoll(option);
  int count = 0;
  for (size_t i = 0; i < model.layers().size(); ++i) {
    // torchtitan counts blocks from 1 and checkpoints those divisible by N (N = 0: all).
    if (every == 0 || (static_cast<int64_t>(i) + 1) % every == 0) {
      model.set_block_runner(i, distributed::checkpointed_block_forward);
      ++count;
    }
  }
  note("Applied " + mode + " activation checkpointing to the model (" + std::to_string(count) + " of " +
       std::to_string(model.layers().size()) + " blocks)");
  return applied;
}

}  // namespace titan::models::llama3
