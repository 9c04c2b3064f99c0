#include "titan/train/trainer.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "titan/common/error.h"
#include "titan/common/log.h"
#include "titan/components/data.h"
#include "titan/components/device.h"
#include "titan/components/loss.h"
#include "titan/components/lr_scheduler.h"
#include "titan/components/optimizer.h"
#include "titan/components/tokenizer.h"
#include "titan/models/llama3/args.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/parallelize.h"
#include "titan/train/validate.h"

namespace titan::train {

namespace {

using Clock = std::chrono::steady_clock;
using models::llama3::ModelArgs;
using models::llama3::Transformer;

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

at::ScalarType dtype_of(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string describe_args(const ModelArgs& a) {
  return "ModelArgs(dim=" + std::to_string(a.dim) + ", n_layers=" + std::to_string(a.n_layers) +
         ", n_heads=" + std::to_string(a.n_heads) + ", n_kv_heads=" + std::to_string(a.n_kv_heads) +
         ", vocab_size=" + std::to_string(a.vocab_size) + ", multiple_of=" + std::to_string(a.multiple_of) +
         ", ffn_dim_multiplier=" + (a.ffn_dim_multiplier ? fmt("%g", *a.ffn_dim_multiplier) : "None") +
         ", norm_eps=" + fmt("%g", a.norm_eps) + ", rope_theta=" + fmt("%g", a.rope_theta) +
         ", max_seq_len=" + std::to_string(a.max_seq_len) +
         ", tied_embeddings=" + (a.tied_embeddings ? "True" : "False") + ")";
}

ModelArgs model_args(const config::JobConfig& cfg) {
  ModelArgs args = models::llama3::flavor(cfg.get_string("model.flavor"));
  args.max_seq_len = cfg.get_int("training.seq_len");
  return args;
}

std::string tokenizer_location(const config::JobConfig& cfg, std::string* key) {
  if (auto old = cfg.get_opt_string("model.tokenizer_path"); old && !old->empty()) {
    log::warning("model.tokenizer_path is deprecated; use model.hf_assets_path");
    *key = "model.tokenizer_path";
    return *old;
  }
  *key = "model.hf_assets_path";
  return cfg.get_string("model.hf_assets_path");
}

uint64_t resolve_seed(const config::JobConfig& cfg) {
  if (auto s = cfg.get_opt_int("debug.seed")) return static_cast<uint64_t>(*s);
  const uint64_t seed = std::random_device{}() & 0x7fffffff;
  log::info("debug.seed is not set; using random seed " + std::to_string(seed));
  return seed;
}

// Autocast around forward + loss: torchtitan's single-device mixed precision (AMP).
class AutocastScope {
 public:
  AutocastScope(at::DeviceType device, std::optional<at::ScalarType> dtype) : device_(device), on_(dtype.has_value()) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }

 private:
  at::DeviceType device_;
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

void write_config_if_asked(const config::JobConfig& cfg) {
  if (cfg.get_bool("job.print_config")) std::printf("%s", cfg.to_toml().c_str());
  if (auto path = cfg.get_opt_string("job.save_config_file"); path && !path->empty()) {
    const std::filesystem::path full = std::filesystem::path(cfg.get_string("job.dump_folder")) / *path;
    std::error_code ec;
    std::filesystem::create_directories(full.parent_path(), ec);
    std::ofstream f(full);
    if (!f) throw Error("job.save_config_file = \"" + *path + "\": cannot write " + full.string(),
                        "check that job.dump_folder is writable");
    f << cfg.to_toml();
    log::info("Saved the config to " + full.string());
  }
}

void fail_on_unsupported(const config::JobConfig& cfg) {
  auto bad = unsupported_settings(cfg);
  if (bad.empty()) return;
  std::string msg = "the config asks for " + std::to_string(bad.size()) + " setting(s) titan.cpp does not support yet:";
  for (const auto& b : bad) msg += "\n  - " + b;
  throw Error(msg, "set them back to their defaults (see --job.dry_run for the full list)");
}

}  // namespace

int dry_run(const config::JobConfig& cfg) {
  validate_config(cfg);
  write_config_if_asked(cfg);
  ModelArgs args = model_args(cfg);
  Transformer model(args, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  const int64_t seq = cfg.get_int("training.seq_len");
  log::info("Dry run of " + cfg.get_string("model.name") + " " + cfg.get_string("model.flavor") +
            " (nothing is allocated)");
  log::info("Building llama3 " + cfg.get_string("model.flavor") + " with " + describe_args(args));
  log::info("Model llama3 " + cfg.get_string("model.flavor") + " size: " +
            log::with_commas(model.num_params()) + " total parameters");
  log::info("FLOPs per token at seq_len " + std::to_string(seq) + ": " +
            log::with_commas(models::llama3::flops_per_token(args, seq)));
  auto bad = unsupported_settings(cfg);
  if (bad.empty()) {
    log::info("Every setting of this config is supported.");
    return 0;
  }
  log::warning(std::to_string(bad.size()) + " setting(s) of this config are not supported yet:");
  for (const auto& b : bad) log::warning("  - " + b);
  return Error::kExitCode;
}

RunResult run_training(const config::JobConfig& cfg) {
  log::set_color(!cfg.get_bool("metrics.disable_color_printing"));
  log::info("Starting job: " + cfg.get_string("job.description"));
  validate_config(cfg);
  write_config_if_asked(cfg);
  fail_on_unsupported(cfg);

  // ---- device, threads, determinism --------------------------------------------------------
  const at::Device device = components::pick_device();
  components::DeviceInfo dev(device);
  if (cfg.get_bool("debug.deterministic")) {
    // cuBLAS needs a fixed workspace to be deterministic; it reads this before its first use.
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, cfg.get_bool("debug.deterministic_warn_only"));
  }
  const uint64_t seed = resolve_seed(cfg);
  at::manual_seed(seed);
  if (device.is_cuda())
    log::info("CUDA capacity: " + dev.name() + " with " + fmt("%.2f", dev.total_memory_gib()) + "GiB memory");
  else
    log::info("CPU: " + dev.name() + ", " + std::to_string(at::get_num_threads()) + " threads");
  log::info("Parallel dims: dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1 (world size 1)");

  // ---- tokenizer and data --------------------------------------------------------------------
  std::string tok_key;
  const std::string tok_path = tokenizer_location(cfg, &tok_key);
  std::shared_ptr<const components::Tokenizer> tokenizer = components::build_tokenizer(tok_path, tok_key);
  log::info("Tokenizer: " + tokenizer->describe());
  const int64_t local_bs = cfg.get_int("training.local_batch_size");
  const int64_t seq_len = cfg.get_int("training.seq_len");
  const auto dataset_path = cfg.get_opt_string("training.dataset_path");
  auto source = components::build_source(cfg.get_string("training.dataset"), dataset_path, 0, 1);
  log::info("Preparing " + cfg.get_string("training.dataset") + " dataset from " + source->describe());
  components::DataLoader data(std::move(source), tokenizer, local_bs, seq_len, /*infinite=*/true);

  // ---- model -----------------------------------------------------------------------------------
  ModelArgs args = model_args(cfg);
  if (tokenizer->vocab_size() > args.vocab_size)
    throw Error("the tokenizer has " + std::to_string(tokenizer->vocab_size()) + " ids but model " +
                    cfg.get_string("model.flavor") + " has vocab_size " + std::to_string(args.vocab_size),
                "use a tokenizer with at most " + std::to_string(args.vocab_size) + " ids or another flavor");
  log::info("Building llama3 " + cfg.get_string("model.flavor") + " with " + describe_args(args));
  const at::ScalarType param_dtype = dtype_of(cfg.get_string("training.dtype"));
  Transformer model(args, at::TensorOptions().device(device).dtype(param_dtype));
  model.init_weights(seed);
  const int64_t nparams = model.num_params();
  const int64_t flops_per_token = models::llama3::flops_per_token(args, seq_len);
  log::info("Model llama3 " + cfg.get_string("model.flavor") + " size: " + log::with_commas(nparams) +
            " total parameters");
  log::info("FLOPs per token: " + log::with_commas(flops_per_token));
  if (auto applied = models::llama3::parallelize(model, cfg); !applied.empty()) log::info(applied);
  if (cfg.get_bool("model.print_after_conversion")) {
    std::string listing = "Model after conversion:";
    for (const auto& p : model.named_parameters())
      listing += "\n  " + p.name + " " + c10::str(p.tensor->sizes()) + " " + c10::toString(p.tensor->scalar_type());
    log::info(listing);
  }
  if (!cfg.is_default("training.gc_freq") || cfg.get_bool("training.gc_debug"))
    log::warning("training.gc_freq and training.gc_debug have no effect in titan.cpp: there is no garbage collector");

  // Single-device mixed precision is autocast in mixed_precision_param (torchtitan's AMP path).
  std::optional<at::ScalarType> amp_dtype;
  if (param_dtype == at::kFloat && cfg.get_string("training.mixed_precision_param") != "float32") {
    amp_dtype = dtype_of(cfg.get_string("training.mixed_precision_param"));
    log::info("Mixed precision training is handled by AMP (" + cfg.get_string("training.mixed_precision_param") + ")");
  }
  const double peak = dev.peak_flops(amp_dtype.value_or(param_dtype));
  log::info("Peak FLOPS used for computing MFU: " + fmt("%.3e", peak) +
            (device.is_cuda() ? "" : " (measured matmul rate on this CPU)"));

  // ---- optimizer, schedule ----------------------------------------------------------------------
  components::OptimizerOptions oo;
  oo.name = cfg.get_string("optimizer.name");
  oo.lr = cfg.get_float("optimizer.lr");
  oo.beta1 = cfg.get_float("optimizer.beta1");
  oo.beta2 = cfg.get_float("optimizer.beta2");
  oo.eps = cfg.get_float("optimizer.eps");
  oo.weight_decay = cfg.get_float("optimizer.weight_decay");
  oo.implementation = cfg.get_string("optimizer.implementation");
  components::Optimizer optimizer(model.parameters(), oo);
  const int64_t steps = cfg.get_int("training.steps");
  const int64_t total = cfg.get_opt_int("lr_scheduler.total_steps").value_or(steps);
  std::vector<std::string> warnings;
  auto schedule = components::make_lr_schedule(cfg.get_int("lr_scheduler.warmup_steps"), total,
                                                cfg.get_opt_float("lr_scheduler.decay_ratio"),
                                                cfg.get_string("lr_scheduler.decay_type"),
                                                cfg.get_float("lr_scheduler.min_lr_factor"), &warnings);
  for (const auto& w : warnings) log::warning(w);

  const int64_t global_bs = cfg.get_int("training.global_batch_size") == -1
                                ? local_bs
                                : cfg.get_int("training.global_batch_size");
  const int64_t accum = global_bs / local_bs;
  log::info("Trainer is initialized with local batch size " + std::to_string(local_bs) +
            ", global batch size " + std::to_string(global_bs) + ", gradient accumulation steps " +
            std::to_string(accum) + ", sequence length " + std::to_string(seq_len) + ", total steps " +
            std::to_string(steps) + " (warmup " + std::to_string(schedule.warmup_steps) + ")");

  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  g_stop_signal.store(0);

  // ---- the loop ---------------------------------------------------------------------------------
  RunResult result;
  const int64_t log_freq = cfg.get_int("metrics.log_freq");
  const double max_norm = cfg.get_float("training.max_norm");
  auto params = model.parameters();
  dev.memory_stats_and_reset();
  auto last_log = Clock::now();
  int64_t tokens_since_log = 0;
  log::info("Training starts at step 1");
  for (int64_t step = 1; step <= steps; ++step) {
    // Data for every microbatch first: the loss is normalised by the valid tokens of all.
    std::vector<components::Batch> micro;
    int64_t valid = 0;
    for (int64_t m = 0; m < accum; ++m) {
      auto b = data.next();
      b->inputs = b->inputs.to(device);
      b->labels = b->labels.to(device);
      valid += components::count_valid_tokens(b->labels);
      micro.push_back(std::move(*b));
    }
    optimizer.zero_grad();
    double loss_sum = 0;
    for (auto& b : micro) {
      at::Tensor loss;
      {
        AutocastScope amp(device.type(), amp_dtype);
        at::Tensor logits = model.forward(b.inputs);  // (B,T,V)
        loss = components::cross_entropy_loss(logits, b.labels, valid);
      }
      loss.backward();
      loss_sum += loss.item<double>();
      tokens_since_log += b.inputs.numel();
    }
    const double grad_norm = components::clip_grad_norm(params, max_norm);
    const double lr = oo.lr * schedule.factor(step - 1);
    optimizer.step(lr);
    result.steps.push_back({step, loss_sum, grad_norm, lr, global_bs * seq_len});

    if (step == 1 || step % log_freq == 0) {
      const double secs = std::chrono::duration<double>(Clock::now() - last_log).count();
      const double tps = static_cast<double>(tokens_since_log) / secs;
      const double tflops = static_cast<double>(flops_per_token) * tps / 1e12;
      const double mfu = 100.0 * static_cast<double>(flops_per_token) * tps / peak;
      auto mem = dev.memory_stats_and_reset();
      auto c = log::colors();
      log::info(std::string(c.red) + "step: " + fmt("%2.0f", static_cast<double>(step)) + "  " + c.green +
                "loss: " + fmt("%8.5f", loss_sum) + "  " + c.orange + "grad_norm: " + fmt("%7.4f", grad_norm) +
                "  " + c.turquoise + "memory: " + fmt("%5.2f", mem.max_reserved_gib) + "GiB(" +
                fmt("%.2f", mem.max_reserved_pct) + "%)  " + c.blue + "tps: " +
                log::with_commas(std::llround(tps)) + "  " + c.cyan + "tflops: " + fmt("%.2f", tflops) +
                "  " + c.magenta + "mfu: " + fmt("%.2f", mfu) + "%" + c.reset);
      last_log = Clock::now();
      tokens_since_log = 0;
    }
    if (int sig = g_stop_signal.load()) {
      log::warning(std::string("Received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                   "; stopped after step " + std::to_string(step) + " of " + std::to_string(steps));
      result.interrupted = true;
      break;
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (!result.interrupted) log::info("Training completed");
  return result;
}

}  // namespace titan::train
