// A registered model's weights between titan.cpp checkpoints and Hugging Face folders, through
// the family's state-dict adapter: `titan convert`, checkpoint.initial_load_in_hf and checkpoint.last_save_in_hf.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <set>
#include <string>

#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/checkpoint/hf_checkpoint.h"
#include "titan/models/model.h"

namespace titan::train {

using Progress = std::function<void(size_t done, size_t total)>;

// A step folder's model -> a transformers folder (safetensors + config.json), in `dtype` (the
// saved dtype when unset), shards of at most `max_shard_bytes`. With `tokenizer` (a
// model.hf_assets_path), also its tokenizer files and generation_config.json, and config.json
// names its BOS and EOS (components/hf_tokenizer_export.h).
void convert_to_hf(const std::string& step_dir, const std::string& out_dir, std::optional<at::ScalarType> dtype,
                   int64_t max_shard_bytes, const Progress& progress = {}, const std::string& tokenizer = "");
// The tokenizer a step folder's run trained with (recorded at the save, as an absolute path), if
// it is still there; "" otherwise.
std::string recorded_tokenizer(const std::string& step_dir);
// A transformers folder -> a model-only step folder `out_step_dir` (its config.json gives the model).
void convert_from_hf(const std::string& hf_dir, const std::string& out_step_dir, std::optional<at::ScalarType> dtype,
                     const Progress& progress = {}, bool replace = false);
// A PyTorch distributed checkpoint torchtitan wrote -> a step folder with the same model,
// optimizer moments and train state (`model_name`'s `flavor` arguments recorded, when given).
void convert_from_dcp(const std::string& dcp_dir, const std::string& out_step_dir, const std::string& model_name,
                      const std::string& flavor, const Progress& progress = {}, bool replace = false);
// Fills the "model." tensors of `state` (this rank's boxes) from a transformers folder; titan::Error
// when its config or shapes do not match `args`.
void load_hf_into(const std::string& hf_dir, const models::ModelConfig& args, components::StateDict& state);

// Our parameter `fqn` read from a transformers folder, in our layout (the tensors it is stored as
// gathered: one per expert for a MoE layer's experts); titan::Error naming `where` and the first
// missing tensor. The names read are added to `used` when given.
at::Tensor read_hf_parameter(const models::StateDictAdapter& adapter, components::HfReader& hf, const std::string& fqn,
                             const std::string& where, const std::string& fix, std::set<std::string>* used = nullptr);

// A text progress bar on stderr: "[=====>    ] 12/291 tensors".
Progress stderr_progress(const std::string& what);

}  // namespace titan::train
