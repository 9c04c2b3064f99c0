// The one runtime that executes a pipeline schedule (pipeline_schedule.h) on this rank: its
// forwards, backwards (full, or split into the input gradient and the weight gradient), and the
// sends and receives between stages over c10d point-to-point (Gloo on CPU, NCCL on GPU). Knows
// no model: a stage is a forward function of one microbatch and the weights it owns.
//
// Before any data moves, every rank of the pipeline group exchanges what each of its stages
// sends and expects (shape and dtype), and every rank refuses a mismatch with the same error
// naming both stages.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "titan/distributed/pipeline_schedule.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed::pp {

// What crosses a stage boundary for one microbatch (activations forward, their gradients back).
struct Boundary {
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kFloat;
  bool operator==(const Boundary&) const = default;
};
std::string describe(const Boundary& b);  // "[2, 64, 256] float32"

struct Stage {
  int index = 0;  // the global stage number
  // The forward of microbatch m. `input` is undefined on the first stage (the caller feeds its
  // own tokens), else the previous stage's output (a leaf that requires grad when training).
  // Returns the stage's output: the next stage's input, or on the last stage the scalar that
  // backward starts from (the microbatch's loss).
  std::function<at::Tensor(int microbatch, const at::Tensor& input)> forward;
  std::vector<at::Tensor> weights;  // the leaves a weight-gradient action differentiates
  Boundary input, output;           // what it expects (not stage 0) and sends (not the last stage)
};

struct RuntimeHooks {
  // Around every action that computes weight gradients (full backward, or weight backward):
  // `last` when it is the stage's last such action of the step (data parallelism reduces then).
  std::function<void(int stage, bool last)> before_weight_gradients;
  std::function<void()> after_weight_gradients;
  // Around every wait for messages (begin true, then false) and around the whole step: where the
  // device keeps its own clock (CUDA), the caller times the device's idle time there; the host's
  // clock sees waits that return at once on NCCL (the stream waits, not the host).
  std::function<void(bool begin)> around_wait, around_step;
};

class Runtime {
 public:
  // `schedule` for all ranks; `stages`: this rank's (pipeline rank group.rank()), as the
  // schedule places them. `training` false runs forwards only (a schedule without backwards).
  // Checks the boundaries with every rank of `group` (a collective on it).
  // Boundaries live on `device` (the group's: CPU for Gloo, CUDA for NCCL).
  Runtime(Schedule schedule, std::vector<Stage> stages, Group& group, at::Device device, bool training,
          RuntimeHooks hooks = {});

  // Runs this rank's actions for one step. Throws on a failed or timed-out message.
  void run_step();

  // What the last step spent: wall time, time in forwards and backwards, time waiting for
  // messages (receives, and the sends at the end), and the most microbatches whose forward
  // graph was alive at once on this rank (what activation memory grows with).
  struct StepStats {
    double wall_seconds = 0, compute_seconds = 0, wait_seconds = 0;
    int max_in_flight = 0;
  };
  const StepStats& last_step_stats() const { return stats_; }

  const Schedule& schedule() const { return schedule_; }
  const std::vector<Action>& actions() const { return actions_; }  // with communication

 private:
  struct Slot;  // one (stage, microbatch)'s tensors
  Stage& local(int stage);
  void exchange_boundaries();

  Schedule schedule_;
  std::vector<Stage> stages_;
  Group& group_;
  at::Device device_;
  bool training_;
  RuntimeHooks hooks_;
  std::vector<Action> actions_;
  std::vector<int> last_weight_action_;  // per local stage: index into actions_
  int64_t step_ = 0;
  StepStats stats_;
};

}  // namespace titan::distributed::pp
