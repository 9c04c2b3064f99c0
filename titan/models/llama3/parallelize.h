// The one place that changes how a Llama 3 model runs: activation checkpointing now, and the
// parallel plans (TP, FSDP, ...) as they land, applied in torchtitan's order.
#pragma once

#include <string>

#include "titan/config/job_config.h"
#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {

// Applies activation checkpointing per activation_checkpoint.*; returns a one-line summary
// for the log ("" when nothing was applied).
std::string parallelize(Transformer& model, const config::JobConfig& cfg);

}  // namespace titan::models::llama3
