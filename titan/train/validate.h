// Checks of a whole job config before anything is built: rules that span keys (batch sizes,
// degrees, sequence length), the settings that ask for features not built yet, and an estimate
// of each rank's memory. The dry run and a real start run the same checks (preflight).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/components/optim/lr_scheduler.h"
#include "titan/components/optim/optimizer.h"
#include "titan/config/job_config.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/distributed/pipeline_schedule.h"
#include "titan/distributed/pipeline_split.h"
#include "titan/models/model.h"

namespace titan::train {

// The optimizer's settings and the learning-rate schedule the config describes.
components::OptimizerOptions optimizer_options(const config::JobConfig& cfg);
components::LRSchedule lr_schedule(const config::JobConfig& cfg, std::vector<std::string>* warnings);

// Throws titan::Error for the first rule a config breaks.
void validate_config(const config::JobConfig& cfg);

// One line per setting that asks for something titan.cpp does not do yet, e.g.
// "compile.enable = true: torch.compile-style compilation is not supported yet".
std::vector<std::string> unsupported_settings(const config::JobConfig& cfg);

// The model's arguments: model.name's flavor, with training.seq_len, model.vocab_size and
// model.n_layers applied.
std::shared_ptr<const models::ModelConfig> model_args(const config::JobConfig& cfg);

// Bytes one rank holds at its peak, by part: an estimate from the shapes alone (parameters,
// gradients and optimizer state exactly; activations from the tensors each block keeps for
// its backward under the activation-checkpointing mode, the logits, and FSDP's gathered layers).
struct MemoryEstimate {
  double parameters = 0, gradients = 0, optimizer = 0, activations = 0, transient = 0;
  double total() const { return parameters + gradients + optimizer + activations + transient; }
  std::string describe() const;  // "12.3 GiB (parameters 1.0, gradients 1.0, ...)"
};
MemoryEstimate estimate_memory(const models::ModelConfig& args, const config::JobConfig& cfg,
                               const distributed::ParallelDims& dims);

// Pipeline parallelism as the config asks for it: the stages (modules of each), the training
// schedule (built in, or the CSV) and the forward-only schedule of validation. Throws
// titan::Error naming the key for a split, a microbatch count or a table that cannot run.
struct PipelinePlan {
  distributed::pp::StageSplit split;
  distributed::pp::Schedule schedule, eval_schedule;
  int64_t microbatch_size = 1;
  // Per stage, the range [first, last) of the model's parts (tok_embeddings, layers.<i>, output).
  std::vector<std::pair<size_t, size_t>> part_ranges;
};
PipelinePlan plan_pipeline(const config::JobConfig& cfg, const models::ModelConfig& args);

// What a start learns from the config alone. Throws titan::Error for the first problem.
struct Preflight {
  distributed::ParallelDims dims;
  std::shared_ptr<const models::ModelConfig> args;
  MemoryEstimate memory;
  std::optional<PipelinePlan> pipeline;  // with pipeline_parallel_degree > 1
};
Preflight preflight(const config::JobConfig& cfg, int world_size);

// Throws titan::Error (before anything is allocated) when the estimate exceeds `capacity_bytes`,
// the memory of `device_name` this rank may use; debug.skip_memory_check turns it off.
void check_memory(const MemoryEstimate& estimate, double capacity_bytes, const std::string& device_name,
                  const config::JobConfig& cfg);

}  // namespace titan::train
