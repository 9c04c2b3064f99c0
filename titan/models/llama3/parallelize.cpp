#include "titan/models/llama3/parallelize.h"

#include "titan/distributed/activation_checkpoint.h"

namespace titan::models::llama3 {

std::string parallelize(Transformer& model, const config::JobConfig& cfg) {
  const std::string& mode = cfg.get_string("activation_checkpoint.mode");
  if (mode == "none") return "";
  int64_t every = 1;  // full: every block
  if (mode == "selective") every = std::stoll(cfg.get_string("activation_checkpoint.selective_ac_option"));
  int count = 0;
  for (size_t i = 0; i < model.layers().size(); ++i) {
    // torchtitan counts blocks from 1 and checkpoints those divisible by N (N = 0: all).
    if (every == 0 || (static_cast<int64_t>(i) + 1) % every == 0) {
      model.set_block_runner(i, distributed::checkpointed_block_forward);
      ++count;
    }
  }
  return "Applied " + mode + " activation checkpointing to the model (" + std::to_string(count) +
         " of " + std::to_string(model.layers().size()) + " blocks)";
}

}  // namespace titan::models::llama3
