#include "titan/train/validate.h"

#include "titan/common/error.h"

namespace titan::train {

void validate_config(const config::JobConfig& cfg) {
  if (cfg.get_string("model.name") != "llama3")
    throw Error("model.name = \"" + cfg.get_string("model.name") + "\" is not a known model",
                "use model.name = \"llama3\"");
  const int64_t local = cfg.get_int("training.local_batch_size");
  const int64_t global = cfg.get_int("training.global_batch_size");
  if (global != -1 && (global < local || global % local != 0))
    throw Error("training.global_batch_size = " + std::to_string(global) +
                    " is not a multiple of local_batch_size * data-parallel degree (" +
                    std::to_string(local) + ")",
                "set it to -1 (= local_batch_size * dp) or to a multiple of " + std::to_string(local));
  const auto& ac = cfg.get_string("activation_checkpoint.mode");
  if (ac == "selective") {
    const auto& opt = cfg.get_string("activation_checkpoint.selective_ac_option");
    bool is_int = !opt.empty() && opt.find_first_not_of("0123456789") == std::string::npos;
    if (!is_int && opt != "op")
      throw Error("activation_checkpoint.selective_ac_option = \"" + opt + "\" is invalid",
                  "use a non-negative integer N (every N-th block) or \"op\"");
  }
  if (cfg.get_int("training.steps") < 1) throw Error("training.steps must be >= 1");
  for (const auto& c : cfg.get_list("compile.components"))
    if (c != "model" && c != "loss")
      throw Error("compile.components holds \"" + c + "\", which is not a part of the model",
                  "use \"model\" (fused kernels in every block) and/or \"loss\" (the output head with the loss)");
}

std::vector<std::string> unsupported_settings(const config::JobConfig& cfg) {
  std::vector<std::string> out;
  auto need_default = [&](const char* key, const std::string& what) {
    if (!cfg.is_default(key))
      out.push_back(std::string(key) + " = " + config::format_value(cfg.get(key)) + ": " + what +
                    " is not supported yet");
  };
  auto need_false = [&](const char* key, const std::string& what) {
    if (cfg.get_bool(key)) out.push_back(std::string(key) + " = true: " + what + " is not supported yet");
  };
  auto need_int = [&](const char* key, int64_t ok1, int64_t ok2, const std::string& what) {
    const int64_t v = cfg.get_int(key);
    if (v != ok1 && v != ok2)
      out.push_back(std::string(key) + " = " + std::to_string(v) + ": " + what + " is not supported yet");
  };
  need_int("parallelism.pipeline_parallel_degree", 1, 1, "pipeline parallelism");
  need_int("parallelism.context_parallel_degree", 1, 1, "context parallelism");
  need_int("parallelism.expert_parallel_degree", 1, 1, "expert parallelism");
  need_int("parallelism.expert_tensor_parallel_degree", 1, 1, "expert tensor parallelism");
  if (cfg.get_bool("parallelism.enable_async_tensor_parallel"))
    out.push_back("parallelism.enable_async_tensor_parallel = true: async tensor parallelism (matmuls overlapped with "
                  "their collectives through CUDA symmetric memory) is not supported yet; tensor parallelism runs "
                  "with blocking collectives");
  need_false("checkpoint.initial_load_in_hf_quantized", "loading quantized Hugging Face weights");
  need_false("metrics.enable_wandb", "Weights & Biases logging");
  if (!cfg.is_default("compile.backend"))
    out.push_back("compile.backend = " + config::format_value(cfg.get("compile.backend")) +
                  ": titan.cpp has no compiler backends (compile.enable turns on its fused kernels)");
  need_false("fault_tolerance.enable", "fault tolerance");
  need_false("memory_estimation.enable", "memory estimation");
  need_false("optimizer.early_step_in_backward", "optimizer steps in backward");
  need_false("training.enable_cpu_offload", "CPU offloading");
  need_default("training.dataloader.num_workers", "data-loading worker processes (titan.cpp loads on a background thread)");
  need_default("validation.dataloader.num_workers", "data-loading worker processes (titan.cpp loads on a background thread)");
  need_false("training.dataloader.pin_memory", "pinned-memory batches");
  need_false("validation.dataloader.pin_memory", "pinned-memory batches");
  need_false("activation_checkpoint.early_stop", "early stop of recomputation");
  need_false("activation_checkpoint.debug", "activation-checkpoint debug mode");
  need_default("model.converters", "model converters (e.g. float8)");
  need_default("job.custom_config_module", "custom config modules");
  need_default("experimental.custom_import", "custom imports");
  need_default("experimental.custom_args_module", "custom argument modules");
  need_default("comm.mode", "fake or local-tensor communication");
  const auto& ac = cfg.get_string("activation_checkpoint.mode");
  if (ac == "memory_budget")
    out.push_back("activation_checkpoint.mode = \"memory_budget\": memory-budget checkpointing is not supported yet");
  return out;
}

}  // namespace titan::train
