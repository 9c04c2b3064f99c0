// The one place that changes how a Llama 3 model runs: fused kernels (compile), activation
// checkpointing, and the parallel plans (TP, FSDP, ...) as they land, in torchtitan's order.
#pragma once

#include <string>

#include "titan/config/job_config.h"
#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {

// Applies the fused kernels (compile.*) and activation checkpointing (activation_checkpoint.*);
// returns what was applied, a line each, for the log ("" when nothing was).
std::string parallelize(Transformer& model, const config::JobConfig& cfg);

}  // namespace titan::models::llama3
