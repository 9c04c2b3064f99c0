#include "titan/train/validate.h"

#include <cmath>
#include <cstdio>

#include "titan/common/error.h"
#include "titan/components/optim/lr_scheduler.h"
#include "titan/components/optim/optimizer.h"
#include "titan/kernels/float8.h"
#include "titan/kernels/mx.h"
#include "titan/models/registry.h"
#include "titan/train/options.h"

namespace titan::train {

namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / 1073741824.0);
  return buf;
}

}  // namespace

components::OptimizerOptions optimizer_options(const config::JobConfig& cfg) {
  components::OptimizerOptions oo;
  oo.name = cfg.get_string("optimizer.name");
  oo.lr = cfg.get_float("optimizer.lr");
  oo.beta1 = cfg.get_float("optimizer.beta1");
  oo.beta2 = cfg.get_float("optimizer.beta2");
  oo.eps = cfg.get_float("optimizer.eps");
  oo.weight_decay = cfg.get_float("optimizer.weight_decay");
  oo.implementation = cfg.get_string("optimizer.implementation");
  return oo;
}

components::LRSchedule lr_schedule(const config::JobConfig& cfg, std::vector<std::string>* warnings) {
  return components::make_lr_schedule(
      cfg.get_int("lr_scheduler.warmup_steps"),
      cfg.get_opt_int("lr_scheduler.total_steps").value_or(cfg.get_int("training.steps")),
      cfg.get_opt_float("lr_scheduler.decay_ratio"), cfg.get_string("lr_scheduler.decay_type"),
      cfg.get_float("lr_scheduler.min_lr_factor"), warnings);
}

void validate_config(const config::JobConfig& cfg) {
  models::model_spec(cfg.get_string("model.name"));  // a known model, or the list of them
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
  if (cfg.get_bool("validation.enable") && cfg.get_int("validation.seq_len") > cfg.get_int("training.seq_len"))
    throw Error("validation.seq_len = " + std::to_string(cfg.get_int("validation.seq_len")) +
                    " is longer than training.seq_len = " + std::to_string(cfg.get_int("training.seq_len")) +
                    " (the model's RoPE table covers training.seq_len positions)",
                "set validation.seq_len <= " + std::to_string(cfg.get_int("training.seq_len")));
  for (const char* key : {"training.max_norm", "lr_scheduler.min_lr_factor"})
    if (!std::isfinite(cfg.get_float(key)))
      throw Error(std::string(key) + " = " + config::format_value(cfg.get(key)) + " must be finite");
  if (!(cfg.get_float("lr_scheduler.min_lr_factor") >= 0 && cfg.get_float("lr_scheduler.min_lr_factor") <= 1))
    throw Error("lr_scheduler.min_lr_factor = " + config::format_value(cfg.get("lr_scheduler.min_lr_factor")) +
                    " must lie in [0, 1]", "e.g. min_lr_factor = 0.0");
  if (auto r = cfg.get_opt_float("lr_scheduler.decay_ratio"); r && !(*r >= 0 && *r <= 1))
    throw Error("lr_scheduler.decay_ratio = " + config::format_value(cfg.get("lr_scheduler.decay_ratio")) +
                    " must lie in [0, 1]", "e.g. decay_ratio = 0.8, or leave it unset");
  components::validate_optimizer_options(optimizer_options(cfg));
  lr_schedule(cfg, nullptr);
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
  if (const auto lb = cfg.get_opt_string("parallelism.context_parallel_load_balancer");
      lb && *lb != "headtail" && cfg.get_int("parallelism.context_parallel_degree") > 1)
    out.push_back("parallelism.context_parallel_load_balancer = \"" + *lb +
                  "\": only \"headtail\" (or None, no balancing) is supported yet");
  {
    const int64_t etp = cfg.get_int("parallelism.expert_tensor_parallel_degree"),
                  tp = cfg.get_int("parallelism.tensor_parallel_degree");
    if (etp != 1 && etp != tp)
      out.push_back("parallelism.expert_tensor_parallel_degree = " + std::to_string(etp) +
                    ": it is 1 or tensor_parallel_degree (" + std::to_string(tp) + "), as in torchtitan");
  }
  if (cfg.get_string("parallelism.expert_parallel_comm_backend") != "standard")
    out.push_back("parallelism.expert_parallel_comm_backend = \"" +
                  cfg.get_string("parallelism.expert_parallel_comm_backend") +
                  "\": DeepEP's all-to-all is not supported yet (use \"standard\")");
  if (cfg.get_bool("parallelism.enable_async_tensor_parallel") && cfg.get_string("activation_checkpoint.mode") == "selective" &&
      cfg.get_string("activation_checkpoint.selective_ac_option") == "op")
    out.push_back("parallelism.enable_async_tensor_parallel = true with op-level selective activation checkpointing is "
                  "not supported yet (use activation_checkpoint.mode = \"full\" or a layer-level selective_ac_option)");
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
  // dataloader.pin_memory: on CUDA every batch goes through pinned memory anyway; on the CPU there is
  // nothing to pin. Either value is accepted.
  need_false("activation_checkpoint.early_stop", "early stop of recomputation");
  need_false("activation_checkpoint.debug", "activation-checkpoint debug mode");
  bool float8 = false, mx = false;
  for (const auto& c : cfg.get_list("model.converters")) {
    if (c == "float8" || c == "quantize.linear.float8") {
      float8 = true;
    } else if (c == "quantize.linear.mx" || c == "mx") {
      mx = true;
    } else if (c == "quantize.grouped_mm.float8" || c == "quantize.grouped_mm.mx") {
      // Their fqns (quantize.grouped_mm.*.fqns) act only through these converters.
      out.push_back("model.converters holds \"" + c + "\": float8 and MX grouped GEMMs (for mixture-of-experts "
                    "layers) are not supported yet (the experts run in the training dtype)");
    } else {
      out.push_back("model.converters holds \"" + c + "\", which is not a converter titan.cpp knows (\"float8\" or "
                    "\"quantize.linear.float8\", and \"quantize.linear.mx\")");
    }
  }
  if (mx) {
    const auto& recipe = cfg.get_string("quantize.linear.mx.recipe_name");
    if (!kernels::mx_recipe(recipe))
      out.push_back("quantize.linear.mx.recipe_name = \"" + recipe + "\" is not an MX recipe (use \"mxfp8_cublas\" "
                    "or \"mxfp8_cublas_rceil\")");
    if (float8)
      out.push_back("model.converters holds both float8 and MX: a linear layer runs in one of them (keep one)");
    if (cfg.get_int("parallelism.tensor_parallel_degree") > 1 && cfg.get_bool("parallelism.enable_async_tensor_parallel"))
      out.push_back("model.converters = [\"quantize.linear.mx\"] with parallelism.enable_async_tensor_parallel is not "
                    "supported yet (MX runs with blocking tensor parallelism: set enable_async_tensor_parallel = false)");
    if (cfg.get_string("activation_checkpoint.mode") == "selective" &&
        cfg.get_string("activation_checkpoint.selective_ac_option") == "op")
      out.push_back("model.converters = [\"quantize.linear.mx\"] with op-level selective activation checkpointing is "
                    "not supported yet (use activation_checkpoint.mode = \"full\" or a layer-level selective_ac_option)");
    // The weight-gradient GEMM's blocks run over the tokens of a forward.
    for (const char* key : {"training.seq_len", "validation.seq_len"})
      if ((std::string(key) == "training.seq_len" || cfg.get_bool("validation.enable")) && cfg.get_int(key) % 32 != 0)
        out.push_back(std::string(key) + " = " + std::to_string(cfg.get_int(key)) +
                      " with MX: the tokens of a forward must come in blocks of 32 (use a multiple of 32)");
  }
  if (float8) {
    const auto recipe_name = cfg.get_opt_string("quantize.linear.float8.recipe_name").value_or("tensorwise");
    const bool all_gather = cfg.get_bool("quantize.linear.float8.enable_fsdp_float8_all_gather");
    if (all_gather && recipe_name != "tensorwise" && kernels::float8_recipe(recipe_name))
      out.push_back("quantize.linear.float8.enable_fsdp_float8_all_gather = true with recipe_name = \"" + recipe_name +
                    "\": the float8 all-gather casts each weight with one scale, which only the tensorwise recipe "
                    "uses (leave recipe_name unset, or turn the all-gather off)");
    if (cfg.get_bool("quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp") && !all_gather)
      out.push_back("quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp = true without "
                    "enable_fsdp_float8_all_gather: the precomputed scales are those of the float8 all-gather (turn it "
                    "on too, or turn this off)");
    if (cfg.get_string("activation_checkpoint.mode") == "selective" &&
        cfg.get_string("activation_checkpoint.selective_ac_option") == "op")
      out.push_back("model.converters = [\"float8\"] with op-level selective activation checkpointing is not "
                    "supported yet (use activation_checkpoint.mode = \"full\" or a layer-level selective_ac_option)");
    const std::string& recipe = recipe_name;
    if (!kernels::float8_recipe(recipe))
      out.push_back("quantize.linear.float8.recipe_name = \"" + recipe + "\" is not a float8 recipe (use \"tensorwise\", "
                    "\"rowwise\" or \"rowwise_with_gw_hp\"; unset: tensorwise)");
    const auto& filters = cfg.get_list("quantize.linear.float8.filter_fqns");
    if (recipe == "rowwise_with_gw_hp" &&
        std::find(filters.begin(), filters.end(), "auto_filter_small_kn") != filters.end())
      out.push_back("quantize.linear.float8.filter_fqns holds \"auto_filter_small_kn\" with recipe_name = "
                    "\"rowwise_with_gw_hp\": that filter has no thresholds for this recipe (as in torchtitan)");
  }
  need_default("job.custom_config_module", "custom config modules");
  need_default("experimental.custom_import", "custom imports");
  need_default("experimental.custom_args_module", "custom argument modules");
  need_default("comm.mode", "fake or local-tensor communication");
  const auto& ac = cfg.get_string("activation_checkpoint.mode");
  if (ac == "memory_budget")
    out.push_back("activation_checkpoint.mode = \"memory_budget\": memory-budget checkpointing is not supported yet");
  return out;
}

std::shared_ptr<const models::ModelConfig> model_args(const config::JobConfig& cfg) {
  return model_config(cfg);
}

std::string MemoryEstimate::describe() const {
  return gib(total()) + " (parameters " + gib(parameters) + ", gradients " + gib(gradients) + ", optimizer state " +
         gib(optimizer) + ", activations " + gib(activations) + ", gathered layers and logits " + gib(transient) + ")";
}

MemoryEstimate estimate_memory(const models::ModelConfig& config, const config::JobConfig& cfg,
                               const distributed::ParallelDims& dims) {
  const models::Sizes a = config.sizes();
  // Doubles throughout: a mistyped size must give a huge estimate, never an overflow.
  const double param_bytes = cfg.get_string("training.dtype") == "float32" ? 4 : 2;
  const std::string mp = cfg.get_string("training.mixed_precision_param");
  const double compute_bytes = (mp == "float32" || (dims.world_size == 1 && param_bytes == 4 && mp != "bfloat16")) ? 4 : 2;
  const double tp = dims.tp, shard = static_cast<double>(dims.dp_shard) * dims.cp;
  const double dim = static_cast<double>(a.dim), layers = static_cast<double>(a.n_layers);
  const double kv_dim = static_cast<double>(a.n_kv_heads) * static_cast<double>(a.head_dim);
  const double hidden = static_cast<double>(a.ffn_hidden_dim), vocab = static_cast<double>(a.vocab_size);
  const double layer_params = static_cast<double>(a.layer_params);
  // Pipeline parallelism: this rank's stages hold about 1/pp of the layers (rounded up), and may
  // hold both ends (a V places the first and the last stage on rank 0).
  const double stage_layers = dims.pp > 1 ? std::ceil(layers / dims.pp) : layers;
  const double params = stage_layers * layer_params + vocab * dim * (a.tied_embeddings ? 1 : 2) + dim;
  MemoryEstimate m;
  m.parameters = params / (tp * shard) * param_bytes;
  m.gradients = m.parameters;
  m.optimizer = 2 * m.parameters;  // AdamW's two moments, in the parameters' dtype
  // Per token of one block, the tensors kept for backward (q, k, v, the attention output, the
  // norms' inputs and outputs, w1/w3 outputs and their product); tensor parallel splits the heads
  // and the hidden size.
  const double tokens = static_cast<double>(cfg.get_int("training.local_batch_size")) *
                        static_cast<double>(cfg.get_int("training.seq_len")) / dims.cp;
  const double full_block = tokens * compute_bytes * (4 * dim + (2 * dim + 2 * kv_dim) / tp + 3 * hidden / tp);
  // What a checkpointed block keeps: its input, the residual stream, in the parameters' dtype under
  // FSDP and in float32 otherwise (AMP adds into it in float32), split on the sequence by tensor
  // (sequence) parallelism.
  const double residual_bytes = dims.fsdp_enabled() ? compute_bytes : 4;
  const double block_input = tokens * residual_bytes * dim / tp;
  const std::string ac = cfg.get_string("activation_checkpoint.mode");
  // Every microbatch of the step may be in flight at once (GPipe), over this rank's layers.
  double kept = stage_layers * full_block;
  if (ac == "full") {
    kept = stage_layers * block_input + full_block;  // one block recomputed at a time
  } else if (ac == "selective") {
    const std::string opt = cfg.get_string("activation_checkpoint.selective_ac_option");
    if (opt == "op") {
      kept = stage_layers * full_block * 0.6;  // matmul outputs kept, the cheap ops recomputed
    } else {
      const double every = std::max(1.0, std::atof(opt.c_str()));
      const double checkpointed = std::floor(stage_layers / every);
      kept = checkpointed * block_input + (stage_layers - checkpointed) * full_block + full_block;
    }
  }
  m.activations = kept + tokens * dim * 4 * 2;  // plus the embedding output and the final norm
  // The logits in float32 and their gradient (the fused loss works in chunks), and FSDP's
  // gathered copy of two blocks (the one computing and the one prefetched).
  const bool fused_loss = cfg.get_bool("compile.enable") && [&] {
    for (const auto& c : cfg.get_list("compile.components"))
      if (c == "loss") return true;
    return false;
  }();
  const double logits = tokens * vocab / tp * 4 * 2;
  m.transient = (fused_loss ? std::min(logits, 2.0 * 1073741824.0) : logits) +
                (shard > 1 ? 2 * layer_params / tp * compute_bytes : 0);
  if (dims.cp > 1) {
    // Context parallelism: one layer's keys and values of the whole sequence at a time ("allgather"
    // gathers them, and their float32 gradients in backward), or two ranks' parts ("alltoall": the
    // part at hand and the next in flight, with their gradients' running sums).
    const bool ring = cfg.get_string("parallelism.context_parallel_rotate_method") == "alltoall";
    const double kv = 2 * tokens * (ring ? 2 : dims.cp) * kv_dim / tp;
    m.transient += kv * (compute_bytes + 4);
  }
  if (dims.ep > 1 && a.moe_top_k > 0) {
    // Expert parallelism: FSDP gathers a block with this rank's experts only (over efsdp; none
    // when efsdp is 1, each rank keeping its own), whole when ep borrows the tp ranks and split
    // over tp otherwise; and one layer's routed rows are in flight: sent, received and their
    // outputs coming back (each tp rank routes a share of the tokens when ep borrows them).
    const double experts = static_cast<double>(a.layer_expert_params);
    const double gathered = dims.efsdp() > 1 ? experts / (dims.ep_borrows_tp() ? dims.ep : dims.ep * tp) : 0.0;
    if (shard > 1) m.transient -= 2 * (experts / tp - gathered) * compute_bytes;
    m.transient += 3 * tokens * static_cast<double>(a.moe_top_k) * dim * compute_bytes / (dims.ep_borrows_tp() ? tp : 1);
  }
  return m;
}

Preflight preflight(const config::JobConfig& cfg, int world_size) {
  validate_config(cfg);
  if (auto bad = unsupported_settings(cfg); !bad.empty()) {
    std::string msg = "the config asks for " + std::to_string(bad.size()) + " setting(s) titan.cpp does not support yet:";
    for (const auto& b : bad) msg += "\n  - " + b;
    throw Error(msg, "set them back to their defaults");
  }
  Preflight p;
  p.dims = distributed::ParallelDims::from_degrees(parallel_degrees(cfg), world_size);
  p.args = model_args(cfg);
  models::model_spec(p.args->family()).validate_plan(*p.args, plan_check(cfg), p.dims);
  // A model transformers cannot hold is refused now, not after training.
  if (cfg.get_bool("checkpoint.enable") && cfg.get_bool("checkpoint.last_save_in_hf"))
    models::model_spec(p.args->family()).hf_adapter(*p.args)->hf_config("float32");
  if (p.dims.world_size > 1 && cfg.get_string("training.dtype") != "float32")
    throw Error("training.dtype = \"" + cfg.get_string("training.dtype") + "\" with several ranks is not supported yet",
                "use training.dtype = \"float32\" (mixed precision comes from training.mixed_precision_param)");
  if (p.dims.pp > 1) {
    p.pipeline = plan_pipeline(cfg, *p.args);
    bool split_backward = false;
    for (const auto& actions : p.pipeline->schedule.compute)
      for (const auto& a : actions) split_backward |= a.type == distributed::pp::ActionType::BackwardWeight;
    if (split_backward && p.dims.fsdp_enabled() && cfg.get_string("parallelism.fsdp_reshard_after_forward") == "always")
      throw Error("parallelism.fsdp_reshard_after_forward = \"always\" with the pipeline schedule " +
                      p.pipeline->schedule.name + " (which splits backwards into I and W) is not supported yet",
                  "use fsdp_reshard_after_forward = \"default\" (kept under pipeline parallelism), or a schedule "
                  "without the split (1F1B, Interleaved1F1B)");
  }
  p.memory = estimate_memory(*p.args, cfg, p.dims);
  return p;
}

PipelinePlan plan_pipeline(const config::JobConfig& cfg, const models::ModelConfig& config) {
  const models::Sizes args = config.sizes();
  namespace pp = distributed::pp;
  PipelinePlan plan;
  pp::SplitOptions o;
  o.schedule = cfg.get_string("parallelism.pipeline_parallel_schedule");
  o.pp = static_cast<int>(cfg.get_int("parallelism.pipeline_parallel_degree"));
  o.n_layers = args.n_layers;
  o.layers_per_stage = cfg.get_opt_int("parallelism.pipeline_parallel_layers_per_stage");
  o.first_stage_less_layers = cfg.get_int("parallelism.pipeline_parallel_first_stage_less_layers");
  o.last_stage_less_layers = cfg.get_int("parallelism.pipeline_parallel_last_stage_less_layers");
  o.module_fqns_per_model_part = cfg.get_list_list("parallelism.module_fqns_per_model_part");
  plan.split = pp::split_stages(o);
  plan.microbatch_size = cfg.get_int("parallelism.pipeline_parallel_microbatch_size");
  const int m = pp::microbatch_count(cfg.get_int("training.local_batch_size"), plan.microbatch_size);
  const auto csv = cfg.get_opt_string("parallelism.pipeline_parallel_schedule_csv").value_or("");
  const auto placement = pp::schedule_placement(o.schedule);
  plan.schedule = csv.empty() ? pp::make_schedule(o.schedule, o.pp, plan.split.stages_per_rank, m)
                              : pp::load_schedule_csv(csv, o.pp, plan.split.stages_per_rank, m, placement);
  pp::with_communication(plan.schedule);  // a table that would deadlock is refused here
  if (cfg.get_bool("validation.enable")) {
    const int64_t vb = cfg.get_int("validation.local_batch_size");
    if (vb % plan.microbatch_size != 0)
      throw Error("validation.local_batch_size = " + std::to_string(vb) +
                      " is not a multiple of parallelism.pipeline_parallel_microbatch_size = " +
                      std::to_string(plan.microbatch_size) + " (validation runs the pipeline in microbatches too)",
                  "use a validation.local_batch_size that is a multiple of " + std::to_string(plan.microbatch_size));
    plan.eval_schedule = pp::forward_only_schedule(o.pp, plan.split.stages_per_rank,
                                                   static_cast<int>(vb / plan.microbatch_size), placement);
  }
  // The model's parts: tok_embeddings = 0, layers.<i> = i + 1, norm and output = n_layers + 1.
  const size_t L = static_cast<size_t>(args.n_layers);
  for (int st = 0; st < plan.split.num_stages(); ++st) {
    const auto& mods = plan.split.modules[static_cast<size_t>(st)];
    size_t first = L + 2, last = 0;
    bool norm = false, output = false;
    for (const auto& name : mods) {
      size_t part = 0;
      if (name == "tok_embeddings") part = 0;
      else if (name == "norm") part = L + 1, norm = true;
      else if (name == "output") part = L + 1, output = true;
      else part = static_cast<size_t>(std::stoll(name.substr(7))) + 1;  // "layers.<i>", checked by split_stages
      first = std::min(first, part);
      last = std::max(last, part + 1);
    }
    if (norm != output)
      throw Error("pipeline stage " + std::to_string(st) + " holds \"" + (norm ? "norm" : "output") +
                      "\" without \"" + (norm ? "output" : "norm") + "\"",
                  "put norm and output in the same stage of parallelism.module_fqns_per_model_part (titan.cpp runs "
                  "them as one part with the loss)");
    if (last - first != mods.size() - (norm && output ? 1 : 0))
      throw Error("pipeline stage " + std::to_string(st) + " holds modules that are not consecutive",
                  "list consecutive layers in each stage of parallelism.module_fqns_per_model_part");
    plan.part_ranges.emplace_back(first, last);
  }
  bool split_backward = false;
  for (const auto& actions : plan.schedule.compute)
    for (const auto& a : actions) split_backward |= a.type == pp::ActionType::BackwardInput;
  if (split_backward && cfg.get_string("activation_checkpoint.mode") == "selective" &&
      cfg.get_string("activation_checkpoint.selective_ac_option") == "op")
    throw Error("the pipeline schedule " + plan.schedule.name +
                    " splits backwards in two (I and W), which op-level selective activation checkpointing does not "
                    "support yet",
                "use activation_checkpoint.mode = \"full\", a layer-level selective_ac_option, or a schedule "
                "without the split (1F1B, Interleaved1F1B)");
  return plan;
}

void check_memory(const MemoryEstimate& m, double capacity_bytes, const std::string& device_name,
                  const config::JobConfig& cfg) {
  if (cfg.get_bool("debug.skip_memory_check") || m.total() <= capacity_bytes) return;
  throw Error("each rank would need about " + m.describe() + ", more than the " + gib(capacity_bytes) + " of " +
                  device_name + " it can use",
              "lower training.local_batch_size or training.seq_len, use activation_checkpoint.mode = \"full\", "
              "shard over more ranks (parallelism.data_parallel_shard_degree, tensor_parallel_degree; "
              "context_parallel_degree for long sequences) or a smaller flavor; --debug.skip_memory_check starts anyway");
}

}  // namespace titan::train
