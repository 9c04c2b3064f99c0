// The training loop, top to bottom like torchtitan's train.py: build the tokenizer, data,
// model, parallelize it, optimizer and schedule; then for each step: data, forward/backward
// over the microbatches, clip, step, schedule, metrics.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "titan/config/job_config.h"

namespace titan::train {

// Per-step values, for tests and callers that want more than the log.
struct StepRecord {
  int64_t step;
  double loss;
  double grad_norm;
  double lr;
  int64_t tokens;
};

struct RunResult {
  std::vector<StepRecord> steps;
  bool interrupted = false;
  // Bytes of this rank's parameters, gradients and optimizer state after step 1, summed over
  // the storages that hold them.
  int64_t state_bytes = 0;
  // With data parallelism: the full parameters at the end (gathered), for tests.
  std::vector<std::pair<std::string, at::Tensor>> full_state;
};

// Runs the job the config describes. Throws titan::Error for user errors.
RunResult run_training(const config::JobConfig& cfg);

// --job.dry_run: validates, builds the model on the meta device, prints parameters and FLOPs
// per token and every unsupported setting. Returns the exit code (2 if any is unsupported).
int dry_run(const config::JobConfig& cfg);

}  // namespace titan::train
