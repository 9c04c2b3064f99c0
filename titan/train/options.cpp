#include "titan/train/options.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan::train {

namespace fs = std::filesystem;

components::CheckpointOptions checkpoint_options(const config::JobConfig& cfg) {
  components::CheckpointOptions o;
  o.enable = cfg.get_bool("checkpoint.enable");
  o.load_only = cfg.get_bool("checkpoint.load_only");
  o.enable_first_step_checkpoint = cfg.get_bool("checkpoint.enable_first_step_checkpoint");
  o.interval = cfg.get_int("checkpoint.interval");
  o.keep_latest_k = cfg.get_int("checkpoint.keep_latest_k");
  o.load_step = cfg.get_int("checkpoint.load_step");
  o.training_steps = cfg.get_int("training.steps");
  o.folder = (fs::path(cfg.get_string("job.dump_folder")) / cfg.get_string("checkpoint.folder")).string();
  o.initial_load_path = cfg.get_opt_string("checkpoint.initial_load_path").value_or("");
  o.initial_load_model_only = cfg.get_bool("checkpoint.initial_load_model_only");
  o.async_mode = cfg.get_string("checkpoint.async_mode");
  o.export_dtype = cfg.get_string("checkpoint.export_dtype");
  o.exclude_from_loading = cfg.get_list("checkpoint.exclude_from_loading");
  o.config_toml = cfg.to_toml();
  return o;
}

components::MetricsOptions metrics_options(const config::JobConfig& cfg) {
  components::MetricsOptions o;
  o.log_freq = cfg.get_int("metrics.log_freq");
  o.save_for_all_ranks = cfg.get_bool("metrics.save_for_all_ranks");
  o.dump_folder = cfg.get_string("job.dump_folder");
  o.enable_tensorboard = cfg.get_bool("metrics.enable_tensorboard");
  o.save_tb_folder = cfg.get_string("metrics.save_tb_folder");
  return o;
}

components::ProfilingOptions profiling_options(const config::JobConfig& cfg) {
  components::ProfilingOptions o;
  const fs::path dump = cfg.get_string("job.dump_folder");
  o.enable_profiling = cfg.get_bool("profiling.enable_profiling");
  o.profile_freq = cfg.get_int("profiling.profile_freq");
  o.profiler_warmup = cfg.get_int("profiling.profiler_warmup");
  o.profiler_active = cfg.get_int("profiling.profiler_active");
  o.traces_folder = (dump / cfg.get_string("profiling.save_traces_folder")).string();
  o.enable_memory_snapshot = cfg.get_bool("profiling.enable_memory_snapshot");
  o.memory_snapshot_folder = (dump / cfg.get_string("profiling.save_memory_snapshot_folder")).string();
  return o;
}

components::DatasetOptions dataset_options(const config::JobConfig& cfg, const std::string& section) {
  components::DatasetOptions o;
  o.section = section;
  o.dataset = cfg.get_string(section + ".dataset");
  o.dataset_path = cfg.get_opt_string(section + ".dataset_path");
  o.text_field = cfg.get_string(section + ".dataset_text_field");
  o.skip_malformed = cfg.get_bool(section + ".dataset_skip_malformed");
  o.local_batch_size = cfg.get_int(section + ".local_batch_size");
  o.seq_len = cfg.get_int(section + ".seq_len");
  o.prefetch_factor = static_cast<int>(cfg.get_opt_int(section + ".dataloader.prefetch_factor").value_or(2));
  return o;
}

std::pair<std::string, std::string> tokenizer_setting(const config::JobConfig& cfg) {
  if (auto old = cfg.get_opt_string("model.tokenizer_path"); old && !old->empty()) return {*old, "model.tokenizer_path"};
  return {cfg.get_string("model.hf_assets_path"), "model.hf_assets_path"};
}

std::unique_ptr<components::Tokenizer> tokenizer_from_config(const config::JobConfig& cfg) {
  const auto [path, key] = tokenizer_setting(cfg);
  if (key == "model.tokenizer_path") log::warning("model.tokenizer_path is deprecated; use model.hf_assets_path");
  return components::build_tokenizer(path, key);
}

TrainerOptions trainer_options(const config::JobConfig& cfg) {
  TrainerOptions t;
  t.description = cfg.get_string("job.description");
  t.dump_folder = cfg.get_string("job.dump_folder");
  t.dry_run = cfg.get_bool("job.dry_run");
  t.print_config = cfg.get_bool("job.print_config");
  t.save_config_file = cfg.get_opt_string("job.save_config_file").value_or("");
  t.model_name = cfg.get_string("model.name");
  t.flavor = cfg.get_string("model.flavor");
  t.print_after_conversion = cfg.get_bool("model.print_after_conversion");
  t.dataset = cfg.get_string("training.dataset");
  t.dtype = cfg.get_string("training.dtype");
  t.mixed_precision_param = cfg.get_string("training.mixed_precision_param");
  t.cpu_bf16 = cfg.get_string("training.cpu_bf16");
  t.local_batch_size = cfg.get_int("training.local_batch_size");
  t.global_batch_size = cfg.get_int("training.global_batch_size");
  t.seq_len = cfg.get_int("training.seq_len");
  t.steps = cfg.get_int("training.steps");
  t.max_norm = cfg.get_float("training.max_norm");
  t.stop_on_nonfinite = cfg.get_bool("training.stop_on_nonfinite");
  t.gc_settings = !cfg.is_default("training.gc_freq") || cfg.get_bool("training.gc_debug");
  const auto& compiled = cfg.get_list("compile.components");
  t.fused_blocks = cfg.get_bool("compile.enable") && std::find(compiled.begin(), compiled.end(), "model") != compiled.end();
  t.seed = cfg.get_opt_int("debug.seed");
  t.deterministic = cfg.get_bool("debug.deterministic");
  t.deterministic_warn_only = cfg.get_bool("debug.deterministic_warn_only");
  t.init_timeout_seconds = cfg.get_int("comm.init_timeout_seconds");
  t.train_timeout_seconds = cfg.get_int("comm.train_timeout_seconds");
  t.trace_buf_size = cfg.get_int("comm.trace_buf_size");
  t.traces_folder = (fs::path(t.dump_folder) / cfg.get_string("comm.save_traces_folder")).string();
  t.traces_file_prefix = cfg.get_string("comm.save_traces_file_prefix");
  t.checkpoint_enable = cfg.get_bool("checkpoint.enable");
  t.load_only = cfg.get_bool("checkpoint.load_only");
  t.save_on_preemption = cfg.get_bool("checkpoint.save_on_preemption");
  t.last_save_model_only = cfg.get_bool("checkpoint.last_save_model_only");
  t.last_save_in_hf = cfg.get_bool("checkpoint.last_save_in_hf");
  t.initial_load_in_hf = cfg.get_bool("checkpoint.initial_load_in_hf");
  t.create_seed_checkpoint = cfg.get_bool("checkpoint.create_seed_checkpoint");
  t.checkpoint_folder = (fs::path(t.dump_folder) / cfg.get_string("checkpoint.folder")).string();
  t.initial_load_path = cfg.get_opt_string("checkpoint.initial_load_path").value_or("");
  t.validation_enable = cfg.get_bool("validation.enable");
  t.validation_dataset = cfg.get_string("validation.dataset");
  t.validation_freq = cfg.get_int("validation.freq");
  t.validation_steps = cfg.get_int("validation.steps");
  t.validation_seq_len = cfg.get_int("validation.seq_len");
  t.color = !cfg.get_bool("metrics.disable_color_printing");
  const std::string path = tokenizer_setting(cfg).first;
  t.tokenizer_location = path;
  if (path != "builtin:bytes") {
    std::error_code ec;
    const auto abs = fs::absolute(path, ec);
    if (!ec) t.tokenizer_location = abs.lexically_normal().string();
  }
  return t;
}

void write_config_if_asked(const config::JobConfig& cfg) {
  if (cfg.get_bool("job.print_config")) std::printf("%s", cfg.to_toml().c_str());
  if (auto path = cfg.get_opt_string("job.save_config_file"); path && !path->empty()) {
    const fs::path full = fs::path(cfg.get_string("job.dump_folder")) / *path;
    std::error_code ec;
    fs::create_directories(full.parent_path(), ec);
    std::ofstream f(full);
    if (!f) throw Error("job.save_config_file = \"" + *path + "\": cannot write " + full.string(),
                        "check that job.dump_folder is writable");
    f << cfg.to_toml();
    log::info("Saved the config to " + full.string());
  }
}

distributed::ParallelDims::Degrees parallel_degrees(const config::JobConfig& cfg) {
  distributed::ParallelDims::Degrees d;
  d.pp = cfg.get_int("parallelism.pipeline_parallel_degree");
  d.dp_replicate = cfg.get_int("parallelism.data_parallel_replicate_degree");
  d.dp_shard = cfg.get_int("parallelism.data_parallel_shard_degree");
  d.cp = cfg.get_int("parallelism.context_parallel_degree");
  d.tp = cfg.get_int("parallelism.tensor_parallel_degree");
  d.ep = cfg.get_int("parallelism.expert_parallel_degree");
  d.etp = cfg.get_int("parallelism.expert_tensor_parallel_degree");
  return d;
}

bool float8_enabled(const config::JobConfig& cfg) {
  for (const auto& c : cfg.get_list("model.converters"))
    if (c == "float8" || c == "quantize.linear.float8") return true;
  return false;
}

models::ParallelizeOptions parallelize_options(const config::JobConfig& cfg) {
  models::ParallelizeOptions o;
  o.compile = cfg.get_bool("compile.enable");
  o.compile_components = cfg.get_list("compile.components");
  o.ac_mode = cfg.get_string("activation_checkpoint.mode");
  o.ac_option = cfg.get_string("activation_checkpoint.selective_ac_option");
  o.loss_parallel = !cfg.get_bool("parallelism.disable_loss_parallel");
  o.async_tp = cfg.get_bool("parallelism.enable_async_tensor_parallel");
  o.fsdp_reshard_after_forward = cfg.get_string("parallelism.fsdp_reshard_after_forward");
  o.fsdp_sync_every_microbatch = cfg.get_bool("parallelism.fsdp_sync_every_microbatch");
  o.cp_headtail = cfg.get_opt_string("parallelism.context_parallel_load_balancer").value_or("") == "headtail";
  o.cp_rotate = cfg.get_string("parallelism.context_parallel_rotate_method");
  o.float8 = float8_enabled(cfg);
  o.float8_recipe = cfg.get_opt_string("quantize.linear.float8.recipe_name").value_or("tensorwise");
  o.float8_filter_fqns = cfg.get_list("quantize.linear.float8.filter_fqns");
  o.float8_emulate = cfg.get_bool("quantize.linear.float8.emulate");
  o.float8_fsdp_all_gather = cfg.get_bool("quantize.linear.float8.enable_fsdp_float8_all_gather");
  o.float8_precompute = cfg.get_bool("quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp");
  for (const auto& c : cfg.get_list("model.converters"))
    if (c == "quantize.linear.mx" || c == "mx") o.mx = true;
  o.mx_recipe = cfg.get_string("quantize.linear.mx.recipe_name");
  o.mx_filter_fqns = cfg.get_list("quantize.linear.mx.filter_fqns");
  return o;
}

models::PlanCheck plan_check(const config::JobConfig& cfg) {
  models::PlanCheck c;
  c.flavor = cfg.get_string("model.flavor");
  c.seq_len = cfg.get_int("training.seq_len");
  if (cfg.get_bool("validation.enable")) c.validation_seq_len = cfg.get_int("validation.seq_len");
  c.cp_headtail = cfg.get_opt_string("parallelism.context_parallel_load_balancer").value_or("") == "headtail";
  return c;
}

std::unique_ptr<models::ModelConfig> model_config(const config::JobConfig& cfg) {
  auto c = models::model_spec(cfg.get_string("model.name")).flavor(cfg.get_string("model.flavor"));
  c->set_max_seq_len(cfg.get_int("training.seq_len"));
  if (auto v = cfg.get_opt_int("model.vocab_size")) {
    if (*v < 1) throw Error("model.vocab_size = " + std::to_string(*v) + " must be >= 1");
    c->set_vocab_size(*v);
  }
  if (auto v = cfg.get_opt_int("model.n_layers")) {
    if (*v < 1 || *v > 100000) throw Error("model.n_layers = " + std::to_string(*v) + " is out of range", "use 1 to 100000");
    c->set_n_layers(*v);
  }
  c->set_moe_force_load_balance(cfg.get_bool("debug.moe_force_load_balance"));
  return c;
}

}  // namespace titan::train
