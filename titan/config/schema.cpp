// The schema table, transcribed from torchtitan v0.2.2 (torchtitan/config/job_config.py):
// same sections, keys, order, types and defaults; help lines are our own paraphrases.
#include "titan/config/schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>
#include <unordered_set>

namespace titan::config {
namespace {

using Strings = std::vector<std::string>;

struct Range {
  std::optional<double> min = std::nullopt;
  std::optional<double> max = std::nullopt;
  std::vector<double> excluded = {};
};

KeySpec bool_key(std::string name, bool def, std::string help) {
  return {
      .name = std::move(name), .type = Type::Bool, .default_value = def, .help = std::move(help)};
}

KeySpec int_key(std::string name, int64_t def, std::string help, Range range = {}) {
  return {.name = std::move(name),
          .type = Type::Int,
          .default_value = def,
          .min = range.min,
          .help = std::move(help),
          .max = range.max,
          .excluded = std::move(range.excluded)};
}

KeySpec float_key(std::string name, double def, std::string help, Range range = {}) {
  KeySpec spec = int_key(std::move(name), 0, std::move(help), std::move(range));
  spec.type = Type::Float;
  spec.default_value = def;
  return spec;
}

KeySpec str_key(std::string name, std::string def, std::string help, Strings choices = {},
                StringCheck check = nullptr) {
  return {.name = std::move(name),
          .type = Type::String,
          .default_value = std::move(def),
          .choices = std::move(choices),
          .help = std::move(help),
          .check = check};
}

// `str | None`; `def` empty means None.
KeySpec opt_str_key(std::string name, std::optional<std::string> def, std::string help,
                    Strings choices = {}, StringCheck check = nullptr) {
  KeySpec spec = str_key(std::move(name), "", std::move(help), std::move(choices), check);
  spec.type = Type::OptString;
  spec.default_value = def ? Value(*def) : Value();
  return spec;
}

KeySpec opt_int_key(std::string name, std::string help, Range range = {}) {
  KeySpec spec = int_key(std::move(name), 0, std::move(help), std::move(range));
  spec.type = Type::OptInt;
  spec.default_value = std::monostate{};
  return spec;
}

KeySpec opt_float_key(std::string name, std::string help, Range range = {}) {
  KeySpec spec = int_key(std::move(name), 0, std::move(help), std::move(range));
  spec.type = Type::OptFloat;
  spec.default_value = std::monostate{};
  return spec;
}

KeySpec list_key(std::string name, Strings def, std::string help, bool accepts_string = false) {
  return {.name = std::move(name),
          .type = Type::StringList,
          .default_value = std::move(def),
          .help = std::move(help),
          .accepts_string = accepts_string};
}

KeySpec list_list_key(std::string name, std::string help) {
  return {.name = std::move(name),
          .type = Type::StringListList,
          .default_value = std::vector<Strings>{},
          .help = std::move(help)};
}

// activation_checkpoint.selective_ac_option: a positive integer N or "op".
std::string check_selective_ac_option(const std::string& value) {
  if (value == "op") return "";
  bool digits = !value.empty() && std::all_of(value.begin(), value.end(),
                                              [](char c) { return c >= '0' && c <= '9'; });
  if (digits && std::stoll(value.substr(0, 18)) > 0) return "";
  return "must be a positive integer N (checkpoint every N-th block) or \"op\"";
}

// parallelism.context_parallel_load_balancer: None disables balancing, "" is a mistake.
std::string check_not_empty(const std::string& value) {
  return value.empty() ? "must not be an empty string (use None to disable it)" : "";
}

const Strings kDtypes = {"bfloat16", "float32"};

std::vector<KeySpec> build_schema() {
  const Range at_least_0{.min = 0};
  const Range at_least_1{.min = 1};
  const Range unit{.min = 0, .max = 1};
  const Range positive_or_minus_1{.min = -1, .excluded = {0}};
  const Range positive_float{.min = 0, .excluded = {0}};
  return {
      // ---- job
      opt_str_key("job.config_file", std::nullopt, "TOML file to read the job config from"),
      str_key("job.dump_folder", "./outputs", "Folder where the job writes its outputs"),
      str_key("job.description", "default job", "Free-text description of the job"),
      bool_key("job.print_config", false, "Print the resolved job config at startup"),
      opt_str_key("job.save_config_file", std::nullopt,
                  "Save the resolved job config to this file, relative to job.dump_folder"),
      str_key("job.custom_config_module", "",
              "Python module extending JobConfig (torchtitan only; not supported here)"),
      bool_key("job.dry_run", false,
               "titan.cpp: validate, build the model on the meta device, report size, FLOPs and "
               "unsupported settings, then exit"),
      // ---- profiling
      bool_key("profiling.enable_profiling", false, "Collect profiler traces"),
      str_key("profiling.save_traces_folder", "profile_traces",
              "Folder for profiler traces, under job.dump_folder"),
      int_key("profiling.profile_freq", 10, "Collect a profile every N steps", at_least_1),
      int_key("profiling.profiler_active", 1, "Steps recorded in each profiling cycle", at_least_1),
      int_key("profiling.profiler_warmup", 3,
              "Warm-up steps before the recorded steps of each profiling cycle", at_least_0),
      bool_key("profiling.enable_memory_snapshot", false, "Dump memory snapshots"),
      str_key("profiling.save_memory_snapshot_folder", "memory_snapshot",
              "Folder for memory snapshots, under job.dump_folder"),
      // ---- metrics
      int_key("metrics.log_freq", 10, "Log metrics every N steps", at_least_1),
      bool_key("metrics.enable_tensorboard", false, "Write metrics as TensorBoard event files"),
      bool_key("metrics.disable_color_printing", false, "Print logs without ANSI colours"),
      str_key("metrics.save_tb_folder", "tb",
              "Folder for TensorBoard files, under job.dump_folder"),
      bool_key("metrics.save_for_all_ranks", false,
               "Write metrics from every rank instead of only the one that computes the loss"),
      bool_key("metrics.enable_wandb", false, "Log metrics to Weights & Biases"),
      // ---- model
      str_key("model.name", "llama3", "Model family to train: llama3, qwen3 or deepseek_v3 (docs/models.md)"),
      str_key("model.flavor", "debugmodel", "Model size/variant within the family"),
      str_key("model.hf_assets_path", "./tests/assets/tokenizer",
              "Folder of Hugging Face assets: tokenizer files, config.json, safetensors weights"),
      opt_str_key("model.tokenizer_path", std::nullopt,
                  "Deprecated alias of model.hf_assets_path (overrides it when set)"),
      opt_int_key("model.vocab_size",
                  "Vocabulary size instead of the flavor's, e.g. 128256 to train the debug model "
                  "with Llama 3's tokenizer (titan.cpp)",
                  at_least_1),
      opt_int_key("model.n_layers",
                  "Transformer blocks instead of the flavor's, e.g. 8 to give the debug model one layer "
                  "per pipeline stage at more stages (titan.cpp)",
                  at_least_1),
      list_key("model.converters", {}, "Model converters to apply, e.g. float8"),
      bool_key("model.print_after_conversion", false,
               "Print the model after all converters have been applied"),
      // ---- optimizer
      str_key("optimizer.name", "AdamW", "Optimizer: AdamW or Adam"),
      float_key("optimizer.lr", 8e-4, "Peak learning rate", at_least_0),
      float_key("optimizer.beta1", 0.9, "Adam first-moment decay", unit),
      float_key("optimizer.beta2", 0.95, "Adam second-moment decay", unit),
      float_key("optimizer.eps", 1e-8, "Adam epsilon added to the denominator", positive_float),
      float_key("optimizer.weight_decay", 0.1, "Decoupled weight decay", at_least_0),
      str_key("optimizer.implementation", "fused",
              "Optimizer kernel: fused (fastest), foreach (batched) or for-loop (reference)",
              {"for-loop", "foreach", "fused"}),
      bool_key("optimizer.early_step_in_backward", false,
               "Step each parameter during backward (incompatible with gradient clipping)"),
      // ---- lr_scheduler
      int_key("lr_scheduler.warmup_steps", 200, "Linear warm-up steps of the learning rate",
              at_least_0),
      opt_int_key("lr_scheduler.total_steps", "Steps the schedule spans; None means training.steps",
                  at_least_1),
      opt_float_key("lr_scheduler.decay_ratio",
                    "Fraction of steps spent decaying (warmup-stable-decay); None decays right "
                    "after warm-up",
                    unit),
      str_key("lr_scheduler.decay_type", "linear", "Shape of the decay: linear, sqrt or cosine",
              {"linear", "sqrt", "cosine"}),
      float_key("lr_scheduler.min_lr_factor", 0.0,
                "Floor of the decay as a fraction of optimizer.lr", unit),
      // ---- training
      str_key("training.dataset", "c4_test", "Name of the training dataset"),
      opt_str_key("training.dataset_path", std::nullopt,
                  "Read the dataset from this local path instead of its default location"),
      str_key("training.dataset_text_field", "text",
              "JSON field holding each document's text in JSON-lines data (titan.cpp)"),
      bool_key("training.dataset_skip_malformed", false,
               "Skip and count malformed JSON lines instead of stopping (titan.cpp)"),
      int_key("training.local_batch_size", 8, "Sequences per device per step", at_least_1),
      int_key("training.global_batch_size", -1,
              "Sequences per step over all devices (gradient accumulation fills the gap); -1 "
              "means local_batch_size x data-parallel degree",
              positive_or_minus_1),
      int_key("training.seq_len", 2048, "Tokens per sequence", at_least_1),
      bool_key("training.stop_on_nonfinite", true,
               "Stop (exit 1) when the loss or the gradient norm is NaN or infinite; false keeps going "
               "(titan.cpp)"),
      float_key("training.max_norm", 1.0, "Clip the gradient norm to this value", positive_float),
      int_key("training.steps", 10000, "Number of training steps", at_least_1),
      bool_key("training.enable_cpu_offload", false,
               "Keep parameters, gradients and optimizer state in CPU memory under FSDP"),
      str_key("training.dtype", "float32",
              "Dtype of parameters, gradients and optimizer state (bfloat16 = pure bf16 training)",
              kDtypes),
      str_key("training.mixed_precision_param", "bfloat16",
              "Compute dtype of parameters under mixed precision (FSDP or autocast)", kDtypes),
      str_key("training.mixed_precision_reduce", "float32",
              "Dtype of gradient reductions under FSDP mixed precision", {"float32"}),
      str_key("training.cpu_bf16", "auto",
              "bfloat16 mixed precision on a CPU: auto = only where the CPU has native bf16 "
              "(AVX512-BF16/AMX), else float32; always = bf16 even where it is emulated (titan.cpp)",
              {"auto", "always"}),
      int_key("training.gc_freq", 50, "Run garbage collection every N steps", at_least_1),
      bool_key("training.gc_debug", false, "Collect garbage every step to find reference cycles"),
      int_key("training.dataloader.num_workers", 0, "Worker processes for data loading",
              at_least_0),
      bool_key("training.dataloader.persistent_workers", false,
               "Keep data-loading workers alive between epochs (needs num_workers > 0)"),
      bool_key("training.dataloader.pin_memory", false, "Put batches in pinned host memory"),
      opt_int_key("training.dataloader.prefetch_factor",
                  "Batches loaded ahead on the background thread (None = 2)",
                  at_least_1),
      // ---- parallelism
      int_key("parallelism.data_parallel_replicate_degree", 1,
              "Data-parallel replicas (DDP, or HSDP with sharding); 1 disables", at_least_1),
      int_key("parallelism.data_parallel_shard_degree", -1,
              "Data-parallel shards (FSDP, or HSDP with replication); -1 takes the ranks left over",
              positive_or_minus_1),
      str_key("parallelism.fsdp_reshard_after_forward", "default",
              "Free gathered FSDP parameters after forward: default, always or never",
              {"default", "always", "never"}),
      bool_key("parallelism.fsdp_sync_every_microbatch", true,
               "Reduce-scatter gradients after every microbatch; false reduces once per step, after the "
               "last, holding unsharded float32 gradients meanwhile (titan.cpp)"),
      int_key("parallelism.tensor_parallel_degree", 1, "Tensor-parallel degree; 1 disables",
              at_least_1),
      bool_key("parallelism.disable_loss_parallel", false,
               "Gather logits before the loss instead of computing it vocab-parallel"),
      bool_key("parallelism.enable_async_tensor_parallel", false,
               "Overlap tensor-parallel communication with compute"),
      int_key("parallelism.pipeline_parallel_degree", 1,
              "Pipeline-parallel degree (ranks, not stages); 1 disables", at_least_1),
      list_list_key("parallelism.module_fqns_per_model_part",
                    "Module FQNs of each pipeline model part, e.g. "
                    "[[\"tok_embeddings\", \"layers.0\"], [\"layers.1\", \"norm\", \"output\"]]"),
      int_key("parallelism.pipeline_parallel_first_stage_less_layers", 1,
              "Layers fewer in the first pipeline stage (it also holds the embeddings)",
              at_least_0),
      int_key("parallelism.pipeline_parallel_last_stage_less_layers", 1,
              "Layers fewer in the last pipeline stage (it also holds the output head)",
              at_least_0),
      opt_int_key("parallelism.pipeline_parallel_layers_per_stage",
                  "Layers per (virtual) pipeline stage; None infers it from the schedule",
                  at_least_1),
      str_key("parallelism.pipeline_parallel_schedule", "1F1B",
              "Pipeline schedule, e.g. 1F1B, GPipe, Interleaved1F1B"),
      opt_str_key("parallelism.pipeline_parallel_schedule_csv", std::string(),
                  "CSV file describing a custom pipeline schedule"),
      int_key("parallelism.pipeline_parallel_microbatch_size", 1,
              "Sequences per pipeline microbatch", at_least_1),
      bool_key("parallelism.pipeline_parallel_expert_parallel_overlap", true,
               "Overlap expert- and pipeline-parallel communication (DualPipeV only)"),
      int_key("parallelism.context_parallel_degree", 1, "Context-parallel degree; 1 disables",
              at_least_1),
      opt_str_key("parallelism.context_parallel_load_balancer", std::string("headtail"),
                  "Context-parallel load balancer: headtail, ptrr, or None to disable", {},
                  check_not_empty),
      str_key("parallelism.context_parallel_rotate_method", "allgather",
              "How context parallelism exchanges KV shards: allgather or alltoall",
              {"allgather", "alltoall"}),
      int_key("parallelism.expert_parallel_degree", 1,
              "Expert-parallel degree (MoE models only); 1 disables", at_least_1),
      int_key("parallelism.expert_tensor_parallel_degree", 1,
              "Tensor-parallel degree inside routed experts (1 or tensor_parallel_degree)",
              at_least_1),
      str_key("parallelism.expert_parallel_comm_backend", "standard",
              "Expert-parallel all-to-all backend: standard or deepep", {"standard", "deepep"}),
      // ---- checkpoint
      bool_key("checkpoint.enable", false, "Save and resume checkpoints"),
      bool_key("checkpoint.enable_ft_dataloader_checkpoints", true,
               "Checkpoint the data loader position under fault tolerance"),
      str_key("checkpoint.folder", "checkpoint", "Checkpoint folder, under job.dump_folder"),
      int_key("checkpoint.interval", 500, "Save a checkpoint every N steps", at_least_1),
      opt_str_key("checkpoint.initial_load_path", std::nullopt,
                  "Checkpoint to start from when checkpoint.folder holds none"),
      bool_key("checkpoint.initial_load_model_only", true,
               "Load only the model weights from checkpoint.initial_load_path"),
      bool_key("checkpoint.initial_load_in_hf", false,
               "checkpoint.initial_load_path is in Hugging Face safetensors format"),
      bool_key("checkpoint.initial_load_in_hf_quantized", false,
               "The Hugging Face checkpoint to load has quantized weights to dequantize"),
      bool_key("checkpoint.last_save_model_only", true,
               "The final checkpoint holds only the model weights"),
      bool_key("checkpoint.last_save_in_hf", false,
               "Write the final checkpoint in Hugging Face safetensors format"),
      str_key("checkpoint.export_dtype", "float32", "Dtype of the final model-only checkpoint",
              {"float16", "bfloat16", "float32"}),
      str_key("checkpoint.async_mode", "disabled",
              "Checkpoint saving: disabled (synchronous), async, or async_with_pinned_mem",
              {"disabled", "async", "async_with_pinned_mem"}),
      int_key("checkpoint.keep_latest_k", 10,
              "Keep only the newest K checkpoints; 0 keeps all (1 is not allowed)",
              {.min = 0, .excluded = {1}}),
      int_key("checkpoint.load_step", -1, "Step to load; -1 loads the latest", {.min = -1}),
      list_key("checkpoint.exclude_from_loading", {},
               "State to skip when loading, e.g. optimizer,lr_scheduler,dataloader"),
      bool_key("checkpoint.enable_first_step_checkpoint", false,
               "Also save a checkpoint right after step 1"),
      bool_key("checkpoint.create_seed_checkpoint", false,
               "Build the unparallelized model, save it as a seed checkpoint and exit"),
      bool_key("checkpoint.load_only", false, "Load checkpoints but never save any"),
      bool_key("checkpoint.save_on_preemption", true,
               "On SIGTERM or SIGUSR1 (Slurm's warning), save a checkpoint after the current step, then exit 0 "
               "(titan.cpp)"),
      // ---- activation_checkpoint
      str_key("activation_checkpoint.mode", "selective",
              "Activation checkpointing: selective, full, memory_budget or none",
              {"selective", "full", "memory_budget", "none"}),
      str_key("activation_checkpoint.selective_ac_option", "2",
              "Selective mode: an integer N checkpoints every N-th block, \"op\" selects by op", {},
              check_selective_ac_option),
      list_key("activation_checkpoint.per_op_sac_force_recompute_mm_shapes_by_fqns",
               {"moe.router.gate"},
               "Linear FQNs whose matmul shapes op-level selective AC always recomputes"),
      bool_key("activation_checkpoint.early_stop", false,
               "Stop recomputation once every needed activation is back"),
      float_key("activation_checkpoint.memory_budget", 0.5,
                "memory_budget mode: 0 recomputes the most, 1 keeps the default activations", unit),
      bool_key("activation_checkpoint.visualize_memory_budget_pareto", false,
               "Write an SVG of runtime vs. activation memory over budgets"),
      bool_key("activation_checkpoint.preserve_rng_state", true,
               "Save and restore RNG state around recomputation (deterministic, slower)"),
      str_key("activation_checkpoint.determinism_check", "default",
              "Determinism check applied to recomputed activations"),
      bool_key("activation_checkpoint.debug", false,
               "Record activation-checkpoint debug information (slower)"),
      // ---- compile
      bool_key("compile.enable", false, "Use compiled/fused kernels"),
      list_key("compile.components", {"model", "loss"}, "Parts to compile: model, loss"),
      str_key("compile.backend", "inductor", "Compiler backend"),
      // ---- quantize
      bool_key("quantize.linear.float8.enable_fsdp_float8_all_gather", false,
               "All-gather FSDP parameters in float8 (best with tensorwise scaling)"),
      bool_key("quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp", false,
               "Compute float8 scales of all FSDP parameters in one pass (tensorwise scaling)"),
      opt_str_key("quantize.linear.float8.recipe_name", std::nullopt,
                  "Float8 scaling recipe: tensorwise, rowwise or rowwise_with_gw_hp",
                  {"tensorwise", "rowwise", "rowwise_with_gw_hp"}),
      list_key("quantize.linear.float8.filter_fqns", {},
               "Linear FQNs kept out of float8 (dims not divisible by 16 always are)"),
      bool_key("quantize.linear.float8.emulate", false,
               "Emulate float8 GEMMs in higher precision (for tests on older hardware)"),
      str_key("quantize.linear.mx.mxfp8_dim1_cast_kernel_choice", "triton",
              "Kernel for the MXFP8 dim-1 cast: triton, cuda or torch (titan.cpp emulates MX; the numbers are the same)",
              {"triton", "cuda", "torch"}),
      str_key("quantize.linear.mx.recipe_name", "mxfp8_cublas",
              "MX scaling recipe: mxfp8_cublas (floor scales) or mxfp8_cublas_rceil"),
      list_key("quantize.linear.mx.filter_fqns", {"output"}, "Linear FQNs kept out of MX"),
      list_key("quantize.grouped_mm.float8.fqns", {},
               "MoE module FQNs whose grouped GEMMs use float8 (prototype)", true),
      str_key("quantize.grouped_mm.mx.recipe_name", "mxfp8", "MX recipe for grouped GEMMs",
              {"mxfp8"}),
      list_key("quantize.grouped_mm.mx.fqns", {},
               "MoE module FQNs whose grouped GEMMs use MXFP8 (prototype)", true),
      // ---- comm
      int_key("comm.init_timeout_seconds", 300,
              "Collective timeout during initialization and the first step", at_least_1),
      int_key("comm.train_timeout_seconds", 100, "Collective timeout after the first step",
              at_least_1),
      int_key("comm.trace_buf_size", 20000,
              "Entries in the flight-recorder ring buffer; 0 disables it", at_least_0),
      str_key("comm.save_traces_folder", "comm_traces",
              "Folder for flight-recorder traces, under job.dump_folder"),
      str_key("comm.save_traces_file_prefix", "rank_",
              "File-name prefix of flight-recorder traces"),
      str_key("comm.mode", "default",
              "Communication: default (real), fake_backend (dry run) or local_tensor (simulated)",
              {"default", "fake_backend", "local_tensor"}),
      // ---- memory_estimation
      bool_key("memory_estimation.enable", false, "Estimate FSDP memory use before training"),
      bool_key("memory_estimation.disable_fake_mode", false,
               "Estimate memory with real tensors instead of fake ones"),
      // ---- fault_tolerance
      bool_key("fault_tolerance.enable", false,
               "Fault-tolerant training with replica groups (torchft)"),
      str_key("fault_tolerance.process_group", "gloo",
              "Process group for fault tolerance: gloo or nccl"),
      int_key("fault_tolerance.process_group_timeout_ms", 10000,
              "Abort fault-tolerance operations that take longer than this", at_least_1),
      int_key("fault_tolerance.replica_id", 0, "Replica id of this run", at_least_0),
      int_key("fault_tolerance.group_size", 0, "Number of replica groups", at_least_0),
      int_key("fault_tolerance.min_replica_size", 1, "Replicas each step needs at least",
              at_least_1),
      opt_str_key("fault_tolerance.semi_sync_method", std::nullopt,
                  "Semi-synchronous training algorithm: local_sgd or diloco"),
      // ---- experimental
      str_key("experimental.custom_import", "",
              "Python module to import (torchtitan only; not supported here)"),
      str_key("experimental.custom_args_module", "",
              "Deprecated alias of job.custom_config_module"),
      // ---- validation
      bool_key("validation.enable", false, "Run validation during training"),
      str_key("validation.dataset", "c4_validation", "Name of the validation dataset"),
      opt_str_key("validation.dataset_path", std::nullopt,
                  "Read the validation dataset from this local path"),
      str_key("validation.dataset_text_field", "text",
              "JSON field holding each document's text in the validation data (titan.cpp)"),
      bool_key("validation.dataset_skip_malformed", false,
               "Skip and count malformed JSON lines of the validation data (titan.cpp)"),
      int_key("validation.local_batch_size", 8, "Validation sequences per device", at_least_1),
      int_key("validation.seq_len", 2048, "Tokens per validation sequence", at_least_1),
      int_key("validation.freq", 10, "Validate every N training steps", at_least_1),
      int_key("validation.steps", -1,
              "Validation batches per run; -1 uses the whole set",
              positive_or_minus_1),
      int_key("validation.dataloader.num_workers", 0,
              "Worker processes for validation data loading", at_least_0),
      bool_key("validation.dataloader.persistent_workers", false,
               "Keep validation workers alive between epochs (needs num_workers > 0)"),
      bool_key("validation.dataloader.pin_memory", false,
               "Put validation batches in pinned host memory"),
      opt_int_key("validation.dataloader.prefetch_factor",
                  "Validation batches loaded ahead on the background thread (None = 2)", at_least_1),
      // ---- debug
      opt_int_key("debug.seed", "Base random seed; None picks the default"),
      bool_key("debug.deterministic", false,
               "Use deterministic algorithms wherever possible (may be slower)"),
      bool_key("debug.deterministic_warn_only", false,
               "Warn about ops without a deterministic version instead of failing"),
      bool_key("debug.skip_memory_check", false,
               "Start even when the estimate of a rank's memory exceeds the device (titan.cpp; see --job.dry_run)"),
      bool_key("debug.moe_force_load_balance", false,
               "Route tokens round-robin so every expert gets the same load (debugging)"),
  };
}

struct Index {
  std::unordered_map<std::string, size_t> by_name;
  std::vector<std::string> sections;
  std::unordered_set<std::string> prefixes;
};

const Index& index() {
  static const Index idx = [] {
    Index out;
    const auto& keys = schema();
    for (size_t i = 0; i < keys.size(); ++i) {
      out.by_name.emplace(keys[i].name, i);
      std::string section(section_of(keys[i].name));
      if (out.sections.empty() || out.sections.back() != section) out.sections.push_back(section);
      for (size_t dot = section.find('.'); dot != std::string::npos;
           dot = section.find('.', dot + 1)) {
        out.prefixes.insert(section.substr(0, dot));
      }
      out.prefixes.insert(section);
    }
    return out;
  }();
  return idx;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string_view leaf_of(std::string_view name) {
  size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::string format_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest text that reads back to the same double, in the notation Python's repr() picks:
  // fixed for exponents in [-4, 16), scientific otherwise (0.0008, 1e-08).
  char buf[64];
  char* end = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific).ptr;
  std::string scientific(buf, end);
  int exponent = std::atoi(scientific.c_str() + scientific.find('e') + 1);
  if (exponent >= -4 && exponent < 16) {
    end = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::fixed).ptr;
  }
  std::string text(buf, end);
  // TOML needs a '.' or an exponent to read the number back as a float.
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string format_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + quote(items[i]);
  return out + "]";
}

}  // namespace

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> keys = build_schema();
  return keys;
}

std::optional<size_t> key_index(std::string_view name) {
  const auto& by_name = index().by_name;
  auto it = by_name.find(std::string(name));
  if (it == by_name.end()) return std::nullopt;
  return it->second;
}

const KeySpec* find_key(std::string_view name) {
  auto i = key_index(name);
  return i ? &schema()[*i] : nullptr;
}

std::string_view section_of(std::string_view key_name) {
  size_t dot = key_name.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : key_name.substr(0, dot);
}

const std::vector<std::string>& sections() { return index().sections; }

bool is_section_prefix(std::string_view name) {
  return index().prefixes.count(std::string(name)) > 0;
}

std::string type_name(Type type) {
  switch (type) {
    case Type::Bool:
      return "bool";
    case Type::Int:
      return "int";
    case Type::Float:
      return "float";
    case Type::String:
      return "str";
    case Type::OptString:
      return "str | None";
    case Type::OptInt:
      return "int | None";
    case Type::OptFloat:
      return "float | None";
    case Type::StringList:
      return "list[str]";
    case Type::StringListList:
      return "list[list[str]] | None";
  }
  return "?";
}

std::string format_value(const Value& value) {
  struct Visitor {
    std::string operator()(std::monostate) const { return "None"; }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_float(d); }
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<std::string>& l) const { return format_list(l); }
    std::string operator()(const std::vector<std::vector<std::string>>& ll) const {
      std::string out = "[";
      for (size_t i = 0; i < ll.size(); ++i) out += (i ? ", " : "") + format_list(ll[i]);
      return out + "]";
    }
  };
  return std::visit(Visitor{}, value);
}

std::string suggest_name(std::string_view name, bool sections_only) {
  std::vector<std::string_view> candidates;
  if (sections_only) {
    for (const auto& prefix : index().prefixes) candidates.push_back(prefix);
    std::sort(candidates.begin(), candidates.end());  // deterministic ties
  } else {
    for (const auto& key : schema()) candidates.push_back(key.name);
  }
  std::string_view best;
  size_t best_distance = std::string_view::npos;
  for (auto candidate : candidates) {
    size_t d = edit_distance(name, candidate);
    if (d < best_distance) best_distance = d, best = candidate;
  }
  if (best_distance <= 1) return std::string(best);
  // A key written in the wrong section ("training.log_freq" for "metrics.log_freq") is a likelier
  // mistake than a near-miss of another key, when the last component names exactly one key.
  std::vector<std::string_view> same_leaf;
  if (!sections_only) {
    for (auto candidate : candidates) {
      if (leaf_of(candidate) == leaf_of(name)) same_leaf.push_back(candidate);
    }
  }
  if (same_leaf.size() == 1) return std::string(same_leaf[0]);
  if (best_distance <= std::max<size_t>(2, name.size() / 3)) return std::string(best);
  if (!same_leaf.empty()) return std::string(same_leaf[0]);
  return "";
}

}  // namespace titan::config
