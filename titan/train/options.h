// The job config turned into the typed options each part takes: the one place (with
// validate.cpp's checks) where train/ reads component settings by key. components/,
// distributed/ and models/ never see the job config.
#pragma once

#include <memory>
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

distributed::ParallelDims::Degrees parallel_degrees(const config::JobConfig& cfg);
models::ParallelizeOptions parallelize_options(const config::JobConfig& cfg);
models::PlanCheck plan_check(const config::JobConfig& cfg);
// The model's arguments as a run asks for them: model.name's flavor, with training.seq_len,
// model.vocab_size and model.n_layers applied.
std::unique_ptr<models::ModelConfig> model_config(const config::JobConfig& cfg);

}  // namespace titan::train
