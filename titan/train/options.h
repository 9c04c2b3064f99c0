// The job config turned into the typed options each part takes: the one place (with
// validate.cpp's checks) where train/ reads component settings by key. components/,
// distributed/ and models/ never see the job config.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/data/data.h"
#include "titan/components/metrics/metrics.h"
#include "titan/components/metrics/profiling.h"
#include "titan/config/job_config.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/models/registry.h"

namespace titan::train {

components::CheckpointOptions checkpoint_options(const config::JobConfig& cfg);
components::MetricsOptions metrics_options(const config::JobConfig& cfg);
components::ProfilingOptions profiling_options(const config::JobConfig& cfg);
// `section`: "training" or "validation".
components::DatasetOptions dataset_options(const config::JobConfig& cfg, const std::string& section);

// The tokenizer path a config names and the key it came from: model.tokenizer_path (deprecated)
// if set, else model.hf_assets_path.
std::pair<std::string, std::string> tokenizer_setting(const config::JobConfig& cfg);
// That tokenizer (a warning for the deprecated key).
std::unique_ptr<components::Tokenizer> tokenizer_from_config(const config::JobConfig& cfg);

// What the trainer itself reads of the job config (its parts take the structs above).
struct TrainerOptions {
  // job
  std::string description, dump_folder;
  bool dry_run = false, print_config = false;
  std::string save_config_file;  // "" when unset
  // model
  std::string model_name, flavor;
  bool print_after_conversion = false;
  // training
  std::string dataset, dtype, mixed_precision_param, cpu_bf16;
  int64_t local_batch_size = 8, global_batch_size = -1, seq_len = 2048, steps = 10000;
  double max_norm = 1.0;
  bool stop_on_nonfinite = true;
  bool gc_settings = false;  // training.gc_freq or gc_debug set: they do nothing here (warned)
  // compile: the fused kernels in every block (compile.enable with "model" in compile.components)
  bool fused_blocks = false;
  // debug
  std::optional<int64_t> seed;  // unset: a random seed
  bool deterministic = false, deterministic_warn_only = false;
  // comm
  int64_t init_timeout_seconds = 300, train_timeout_seconds = 100, trace_buf_size = 20000;
  std::string traces_folder, traces_file_prefix;  // job.dump_folder / comm.save_traces_folder
  // checkpoint (what the trainer decides itself; the checkpointer takes CheckpointOptions)
  bool checkpoint_enable = false, load_only = false, save_on_preemption = false, last_save_model_only = true,
       last_save_in_hf = false, initial_load_in_hf = false, create_seed_checkpoint = false;
  std::string checkpoint_folder;  // job.dump_folder / checkpoint.folder
  std::string initial_load_path;  // "" when unset
  // validation
  bool validation_enable = false;
  std::string validation_dataset;
  int64_t validation_freq = 500, validation_steps = -1, validation_seq_len = 2048;
  // metrics
  bool color = true;
  // The tokenizer as checkpoints record it (for `titan convert to-hf`): an absolute path, or
  // "builtin:bytes".
  std::string tokenizer_location;
};
TrainerOptions trainer_options(const config::JobConfig& cfg);

// job.print_config prints the config; job.save_config_file writes it under job.dump_folder.
void write_config_if_asked(const config::JobConfig& cfg);

distributed::ParallelDims::Degrees parallel_degrees(const config::JobConfig& cfg);
models::ParallelizeOptions parallelize_options(const config::JobConfig& cfg);
// Whether model.converters turns float8 training on ("float8" or "quantize.linear.float8").
bool float8_enabled(const config::JobConfig& cfg);
models::PlanCheck plan_check(const config::JobConfig& cfg);
// The model's arguments as a run asks for them: model.name's flavor, with training.seq_len,
// model.vocab_size and model.n_layers applied.
std::unique_ptr<models::ModelConfig> model_config(const config::JobConfig& cfg);

}  // namespace titan::train
