// Pipeline parallelism in the trainer: this rank's stages of the model as the runtime's stages
// (their forwards, the loss on the last), the schedule's runs for a training round and for a
// validation batch, and what the schedule spent. The runtime (distributed/pipeline_runtime.h)
// knows no model; this is where the model's parts become stages.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "titan/components/data/data.h"
#include "titan/components/device/device.h"
#include "titan/distributed/data_parallel.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/pipeline_runtime.h"
#include "titan/models/model.h"
#include "titan/train/validate.h"

namespace titan::train {

// The indices in model.parts() of the stages `pp_rank` holds.
std::vector<size_t> parts_of_rank(const PipelinePlan& plan, int pp_rank);

class Pipeline {
 public:
  // `dp` owns this rank's parameters (every part of its stages); activations between stages
  // are (microbatch_size, seq_len / tp, dim) in `activation_dtype`. Validation runs when
  // `validation_seq_len` is given. `tied_across_stages` (ParallelPlan's) names the parameters the
  // first and the last stage share: their gradients are summed over both ends after a step's last
  // round. Exchanges the stages' boundaries with the other pipeline ranks.
  Pipeline(const PipelinePlan& plan, models::Model& model, distributed::DataParallel& dp,
           distributed::DeviceMesh& mesh, components::DeviceInfo& device, at::ScalarType activation_dtype,
           int64_t seq_len, std::optional<int64_t> validation_seq_len,
           const std::vector<std::string>& tied_across_stages);
  ~Pipeline();

  // One gradient-accumulation round: `batch` (on the device) in microbatches through the
  // schedule, the loss normalised by `global_valid_tokens` (one integer on the device);
  // `last_round` reduces the gradients when fsdp_sync_every_microbatch is off; `measure` adds
  // the round to the statistics. Returns each row's loss sum (float64, on the device, nothing read
  // on the host), the same on every stage.
  at::Tensor train_round(const components::Batch& batch, const at::Tensor& global_valid_tokens, bool last_round,
                         bool measure);
  // The loss sum of a validation batch, forward only, the same on every stage.
  double validation_sum(const components::Batch& batch);
  // What this rank's schedule spent over the measured rounds (a log line); empty before any.
  std::string summary();

 private:
  void split(const components::Batch& batch);

  const PipelinePlan& plan_;
  distributed::DataParallel& dp_;
  distributed::DeviceMesh& mesh_;
  components::DeviceInfo& device_;
  std::unique_ptr<distributed::pp::Runtime> train_, eval_;
  std::vector<components::Batch> micro_;  // the microbatches the schedule runs now
  std::set<std::string> tied_;          // parameters the first and the last stage share
  std::vector<at::Tensor> tied_weights_;  // this rank's of them, when the two ends are different ranks
  at::Tensor row_sums_;                   // (microbatches, rows): each row's loss sum, last stage
  at::Tensor valid_;
  bool last_round_ = true;
  double eval_sum_ = 0;
  int64_t measured_ = 0;
  double wall_ = 0, wait_ = 0, peak_growth_ = 0;
  // On CUDA the schedule's time and its waits are timed on the stream (the host does not wait).
  components::StreamIntervals gpu_wall_, gpu_wait_;
  bool timing_ = false;  // the hooks mark intervals only in measured rounds
  int max_in_flight_ = 0;
};

}  // namespace titan::train
