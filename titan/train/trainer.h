// The trainer, split as torchtitan's: building everything (processes and mesh, tokenizer, data,
// model and its parallel plan, optimizer, schedule, metrics), forward_backward_step (one
// microbatch: the part a pipeline schedule replaces), train_step (the microbatches of a step,
// clipping, the optimizer and the schedule), state_dict (what a checkpoint saves), and the loop.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "titan/components/checkpoint/checkpoint.h"
#include "titan/config/job_config.h"
#include "titan/distributed/placement.h"

namespace titan::components {
struct Batch;
}

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
};

// What a checkpoint holds (components/checkpoint.h).
using StateTensor = components::StateTensor;
using StateDict = components::StateDict;

class Trainer {
 public:
  // Builds everything the config describes. Throws titan::Error for user errors.
  explicit Trainer(const config::JobConfig& cfg);
  ~Trainer();

  // One microbatch: forward (with the loss) and backward, the loss divided by
  // `global_valid_tokens` (an integer tensor of one element on the device). Returns the loss sum
  // of each row (B) in float64 on the device; nothing is read on the host.
  at::Tensor forward_backward_step(const components::Batch& batch, const at::Tensor& global_valid_tokens);
  // One step (1-based): the data of every microbatch, forward_backward_step on each, the
  // gradient norm, the optimizer with clipping, the schedule, the metrics. The step's values
  // reach the host in one read at its end (components::read_to_host).
  StepRecord train_step(int64_t step);
  // This rank's model and optimizer state (sharded, by FQN; views of the live tensors) and the
  // scalars of the run (train state, schedule, data position, generators).
  StateDict state_dict();
  // Mixture of experts, before each optimizer step: each MoE layer's tokens per expert summed
  // over the data-parallel and context-parallel ranks, the expert bias moved toward the experts
  // below the mean (torchtitan's auxiliary-loss-free balancing), the counts zeroed. Returns
  // each layer's max / mean tokens per expert (float64 on the device; empty without MoE).
  at::Tensor balance_experts();
  // Puts back the scalars a checkpoint saved (the tensors load through state_dict()'s views).
  void load_scalars(const nlohmann::json& scalars);
  void log_run_changes(const nlohmann::json& scalars) const;
  // Loads a checkpoint when checkpoint.enable finds one, runs the remaining steps of
  // training.steps (or until SIGINT, SIGTERM or SIGUSR1; the last two save first) with
  // validation and checkpoints; returns what happened.
  RunResult run();

 private:
  // A non-finite loss or gradient norm at `step`: throws titan::Error (exit code 1) naming the
  // first parameter with a non-finite gradient (agreed by all ranks).
  [[noreturn]] void stop_on_nonfinite(int64_t step, double loss, double grad_norm);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs the job the config describes (Trainer(cfg).run()).
RunResult run_training(const config::JobConfig& cfg);

// --job.dry_run: the checks a start makes (preflight, the memory estimate against this machine's
// device, the tokenizer and the data files), the model on the meta device, parameters and FLOPs
// per token. Allocates nothing large; throws titan::Error where a start would. Returns 0.
int dry_run(const config::JobConfig& cfg);

}  // namespace titan::train
