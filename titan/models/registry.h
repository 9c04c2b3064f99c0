// The model registry: `model.name` picks a family, each family one folder titan/models/<name>/
// that registers a ModelSpec (its flavors, its module, its parallel plan and its Hugging Face
// adapter) with one line in titan/models/models.def. The trainer, the converters and the
// command line reach a model only through here.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "titan/distributed/context_parallel.h"
#include "titan/distributed/data_parallel.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/models/model.h"

namespace titan::models {

// What parallelize applied to a built model.
struct ParallelPlan {
  // Pipeline parallelism: the hooks that give data parallelism this rank's part numbers.
  std::unique_ptr<ForwardHooks> part_map;
  // The owner of the parameters when more than one rank shares the model (FSDP, HSDP, DDP or
  // tensor parallelism), else null: the model then holds its own parameters.
  std::unique_ptr<distributed::DataParallel> data_parallel;
  std::optional<at::ScalarType> autocast;  // AMP: forward and loss under autocast in this dtype
  std::vector<std::string> applied;        // what was applied, a line each, for the log
  // Pipeline parallelism: parameters that the first and the last stage both read (a tied
  // embedding table). A rank holding one end without the other holds a copy; the pipeline sums
  // the two copies' gradients after each step, so that they stay equal.
  std::vector<std::string> tied_across_stages;
  // Context parallelism: this rank's part of every sequence (the trainer splits each batch with it).
  std::shared_ptr<distributed::ContextParallel> context_parallel;
  // Expert parallelism: the MoE layers' dispatch, owned for the whole run.
  std::shared_ptr<ExpertDispatch> expert_parallel;
};

// The settings parallelize applies (train/options.h builds them from the job config).
struct ParallelizeOptions {
  bool compile = false;                         // compile.enable: the fused kernels
  std::vector<std::string> compile_components;  // "model" (every block), "loss" (the head with the loss)
  std::string ac_mode = "none";                 // activation_checkpoint.mode
  std::string ac_option = "2";                  // activation_checkpoint.selective_ac_option
  bool loss_parallel = true;                    // !parallelism.disable_loss_parallel
  bool async_tp = false;                        // parallelism.enable_async_tensor_parallel
  std::string fsdp_reshard_after_forward = "default";
  bool fsdp_sync_every_microbatch = false;
  // parallelism.context_parallel_load_balancer is "headtail" (else none), and its rotate method.
  bool cp_headtail = true;
  std::string cp_rotate = "allgather";
  // model.converters has float8: [quantize.linear.float8]'s recipe_name, filter_fqns, emulate.
  bool float8 = false;
  std::string float8_recipe = "tensorwise";
  std::vector<std::string> float8_filter_fqns;
  bool float8_emulate = false;
  // FSDP gathers the float8 layers' weights in float8 (tensorwise), with their scales computed
  // in one collective after each optimizer step when float8_precompute.
  bool float8_fsdp_all_gather = false;
  bool float8_precompute = false;
  // model.converters has quantize.linear.mx: [quantize.linear.mx]'s recipe_name and filter_fqns.
  bool mx = false;
  std::string mx_recipe = "mxfp8_cublas";
  std::vector<std::string> mx_filter_fqns;
};

// What a layout is checked against before anything is built.
struct PlanCheck {
  std::string flavor;                         // named in messages
  int64_t seq_len = 0;                        // training.seq_len
  std::optional<int64_t> validation_seq_len;  // when validation is enabled
  bool cp_headtail = true;                    // parallelism.context_parallel_load_balancer = "headtail"
};

struct ModelSpec {
  std::string name;  // model.name
  std::vector<std::string> (*flavor_names)();
  // The flavor by name; throws titan::Error listing the known names.
  std::unique_ptr<ModelConfig> (*flavor)(std::string_view name);
  // What a checkpoint recorded (ModelConfig::to_json); throws nlohmann::json::exception when malformed.
  std::unique_ptr<ModelConfig> (*config_from_json)(const nlohmann::json& j);
  // Allocates every parameter (uninitialised) with `options`; on the meta device nothing is.
  std::unique_ptr<Model> (*build)(const ModelConfig& config, const at::TensorOptions& options);
  // Throws titan::Error, naming the key, for a layout this model cannot split.
  void (*validate_plan)(const ModelConfig& config, const PlanCheck& check, const distributed::ParallelDims& dims);
  // Tensor parallelism, fused kernels, activation checkpointing, then data parallelism, in
  // torchtitan's order. `model` is on the meta device when the mesh has more than one rank (each
  // rank then creates only its own slices, from `seed`). `parts_held` (pipeline parallelism):
  // the indices in model.parts() of this rank's stages; empty: every part.
  ParallelPlan (*parallelize)(Model& model, const ParallelizeOptions& options, distributed::DeviceMesh& mesh,
                              at::Device device, at::ScalarType compute_dtype, uint64_t seed,
                              const std::vector<size_t>& parts_held);
  // Every parameter's layout on the mesh, in the order of model.parts().
  std::vector<distributed::ParamLayout> (*param_layouts)(Model& model, const distributed::ParallelDims& dims);
  std::unique_ptr<StateDictAdapter> (*hf_adapter)(const ModelConfig& config);
  // Arguments from a transformers config.json (`where` names the file in errors).
  std::unique_ptr<ModelConfig> (*config_from_hf)(const nlohmann::json& config, const std::string& where);
  // config.json's "model_type" values this family reads ("llama").
  std::vector<std::string> hf_model_types;
  // Whether torchtitan's checkpoints (DCP) hold the tensors in titan.cpp's layout, so that
  // they load and convert as they are. When not (torchtitan keeps the RoPE'd rows in Hugging
  // Face's order), `titan convert from-dcp --flavor` reorders them with hf_adapter, and training
  // refuses to read one unconverted.
  bool reads_torchtitan_checkpoints = true;
};

// The family registered as `name`; throws titan::Error listing the registered names.
const ModelSpec& model_spec(std::string_view name);
std::vector<std::string> model_names();
// The family whose hf_model_types holds config.json's model_type (missing: "llama"); throws
// titan::Error naming `where` and the known types.
const ModelSpec& model_spec_for_hf(const nlohmann::json& config, const std::string& where);

// What a checkpoint's metadata recorded of its model ({"name", "args", ...}); throws
// titan::Error naming `where` when it is missing or malformed.
std::unique_ptr<ModelConfig> config_from_description(const nlohmann::json& model, const std::string& where);

}  // namespace titan::models
