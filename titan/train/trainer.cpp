#include "titan/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <set>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "titan/common/error.h"
#include "titan/common/folder_lock.h"
#include "titan/common/log.h"
#include "titan/common/test_hooks.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/data/data.h"
#include "titan/components/device/device.h"
#include "titan/components/loss.h"
#include "titan/components/optim/lr_scheduler.h"
#include "titan/components/optim/optimizer.h"
#include "titan/components/tokenizer/tokenizer.h"
#include "titan/components/metrics/metrics.h"
#include "titan/components/metrics/profiling.h"
#include "titan/distributed/data_parallel.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/flight_recorder.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/distributed/pipeline_schedule.h"
#include "titan/distributed/process_group.h"
#include "titan/kernels/ops.h"
#include "titan/models/registry.h"
#include "titan/train/hf_convert.h"
#include "titan/train/options.h"
#include "titan/train/pipeline.h"
#include "titan/train/validate.h"

namespace titan::train {

namespace {

using Clock = std::chrono::steady_clock;
using models::Model;
using models::ModelConfig;

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  std::signal(sig, SIG_DFL);  // a second signal is not deferred
}

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM"; }

at::ScalarType dtype_of(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

// debug.seed, or a random seed when it is not set (said once the run knows whether it resumes).
uint64_t resolve_seed(const TrainerOptions& t) {
  if (t.seed) return static_cast<uint64_t>(*t.seed);
  return std::random_device{}() & 0x7fffffff;
}

// torchtitan's validator: the average over validation batches of (loss sum / global valid
// tokens), with no gradients; each pass starts the validation data from its beginning.
// `local_sum` gives this rank's loss sum of a batch (on the device).
// `split` gives this rank's part of a batch (context parallelism), or null.
void validate(const std::function<double(const components::Batch&)>& local_sum, components::DataLoader& data,
              distributed::Group& dp, at::Device device, int64_t max_steps, int64_t step,
              components::MetricsProcessor& metrics, const distributed::ContextParallel* split);

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

// The step's loss: every row's loss sum, in global row order (microbatch, data-parallel rank,
// row), added in float64, over the global count of valid tokens. The same for any layout.
void validate(const std::function<double(const components::Batch&)>& local_sum_of, components::DataLoader& data,
              distributed::Group& dp, at::Device device, int64_t max_steps, int64_t step,
              components::MetricsProcessor& metrics, const distributed::ContextParallel* split) {
  const auto start = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  data.reset();
  double loss = 0;
  int64_t batches = 0, tokens = 0;
  while (max_steps == -1 || batches < max_steps) {
    auto b = data.next();
    if (!b) break;
    tokens += b->labels.numel();
    if (split) *b = {split->split(b->inputs), split->split(b->labels)};
    const double local_sum =
        local_sum_of({components::to_device(b->inputs, device), components::to_device(b->labels, device)});
    at::Tensor t = at::tensor({local_sum, static_cast<double>(components::count_valid_tokens(b->labels))},
                              at::kDouble).to(device);
    dp.all_reduce(t).wait();
    t = t.cpu();
    loss += t[0].item<double>() / std::max(t[1].item<double>(), 1.0);
    ++batches;
  }
  if (batches == 0)
    throw Error("the validation data " + data.describe() + " is shorter than one batch",
                "use more validation text or a smaller validation.local_batch_size / validation.seq_len");
  metrics.log_validation(step, loss / static_cast<double>(batches), tokens,
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// Every data-parallel rank's row loss sums (float64, on the device), in global row order:
// (microbatch, data-parallel rank, row). Nothing is read on the host.
at::Tensor gather_rows(const at::Tensor& row_sums, distributed::Group& dp) {
  if (dp.trivial()) return row_sums;
  at::Tensor mine = row_sums.contiguous();
  at::Tensor gathered = at::empty({dp.size() * mine.numel()}, mine.options());
  dp.all_gather(gathered, mine).wait();
  return gathered.view({dp.size(), row_sums.size(0), row_sums.size(1)}).transpose(0, 1).contiguous();
}

// The step's loss from gather_rows' values read on the host: added in order in float64, over the
// global count of valid tokens. The same for any layout.
double global_loss(const double* rows, int64_t n, double valid) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += rows[i];
  return sum / std::max(valid, 1.0);
}

// Bytes held by the parameters, their gradients and the optimizer state, from the storages.
int64_t state_bytes(const std::vector<at::Tensor>& params, components::Optimizer& opt) {
  std::vector<const void*> seen;
  int64_t total = 0;
  auto add = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    const void* key = t.storage().unsafeGetStorageImpl();
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) return;
    seen.push_back(key);
    total += static_cast<int64_t>(t.storage().nbytes());
  };
  for (const auto& p : params) {
    add(p);
    add(p.grad());
  }
  for (auto* state : {&opt.exp_avg(), &opt.exp_avg_sq(), &opt.step_count()})
    for (const auto& t : *state) add(t);
  return total;
}

// A collective failed or timed out: write this rank's flight recorder, and on rank 0 wait a
// moment for the others' files and print which rank fell behind.
void report_comm_failure(distributed::FlightRecorder& recorder, const TrainerOptions& t,
                         const distributed::DistEnv& env, const std::string& what,
                         std::chrono::milliseconds collective_timeout) {
  recorder.dump(what.substr(0, what.find('\n')));
  log::warning("rank " + std::to_string(env.rank) + ": a collective failed; wrote the flight recorder to " +
               recorder.file_path());
  if (env.rank != 0) return;
  const std::filesystem::path folder = t.traces_folder;
  const std::string& prefix = t.traces_file_prefix;
  // The others dump when their own collectives fail. Wait for them a bounded time (a dead rank
  // never writes): at most half the collective timeout and 10 s.
  const auto wait = std::min<std::chrono::milliseconds>(collective_timeout / 2, std::chrono::seconds(10));
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    int files = 0;  // each rank deleted its dump of any earlier run at start
    for (int r = 0; r < env.world_size; ++r) files += std::filesystem::exists(folder / (prefix + std::to_string(r)));
    if (files == env.world_size) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  try {
    std::fprintf(stderr, "%s", distributed::comm_report(folder.string(), prefix).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm report failed: %s\n", e.what());
  }
}

// The tokenizer and the data loaders of this data-parallel rank, checked against the model:
// what a start opens, and what the dry run opens too (nothing is read ahead until the first batch).
struct DataParts {
  std::shared_ptr<const components::Tokenizer> tokenizer;
  std::unique_ptr<components::DataLoader> data, validation_data;
};

DataParts open_data(const config::JobConfig& cfg, const TrainerOptions& t, const ModelConfig& model, int64_t dp_rank,
                    int64_t dp_degree) {
  const models::Sizes args = model.sizes();
  DataParts d;
  d.tokenizer = tokenizer_from_config(cfg);
  if (d.tokenizer->vocab_size() > args.vocab_size)
    throw Error("the tokenizer has " + std::to_string(d.tokenizer->vocab_size()) + " ids but model " +
                    t.flavor + " has vocab_size " + std::to_string(args.vocab_size),
                "use a tokenizer with at most " + std::to_string(args.vocab_size) +
                    " ids, another flavor, or --model.vocab_size " + std::to_string(d.tokenizer->vocab_size()));
  d.data = components::build_data_loader(dataset_options(cfg, "training"), d.tokenizer, dp_rank, dp_degree, /*infinite=*/true);
  if (t.validation_enable)  // finite unless validation.steps caps each pass (as torchtitan)
    d.validation_data = components::build_data_loader(dataset_options(cfg, "validation"), d.tokenizer, dp_rank, dp_degree,
                                                      /*infinite=*/t.validation_steps != -1);
  return d;
}

// The memory one rank may use: the GPU's, or on the CPU the machine's shared by its ranks.
double usable_memory_bytes(const components::DeviceInfo& dev, int local_world_size) {
  const double total = dev.total_memory_gib() * 1073741824.0;
  return dev.device().is_cuda() ? total : total / std::max(1, local_world_size);
}

// The dry run of a pipeline-parallel config: its stages and its schedule's timeline in numbers.
void describe_pipeline(const PipelinePlan& plan) {
  namespace pp = distributed::pp;
  const auto& schedule = plan.schedule;
  log::info("Pipeline: " + schedule.name + " over " + std::to_string(schedule.pp) + " ranks, " +
            std::to_string(plan.split.num_stages()) + " stages, " + std::to_string(schedule.microbatches) +
            " microbatches; bubble " + log::format("%.1f%%", 100.0 * pp::simulate(schedule).bubble_fraction) +
            " at unit costs (titan pp-schedule prints the timeline)");
  for (int st = 0; st < plan.split.num_stages(); ++st) {
    const auto& mods = plan.split.modules[static_cast<size_t>(st)];
    log::info("  stage " + std::to_string(st) + " on rank " + std::to_string(schedule.rank_of_stage(st)) + ": " +
              mods.front() + (mods.size() > 1 ? " .. " + mods.back() : "") + " (" + std::to_string(mods.size()) +
              " modules)");
  }
}

}  // namespace

int dry_run(const config::JobConfig& cfg) {
  const auto env = distributed::read_dist_env();
  // Without a launcher, the world the config's degrees describe (data_parallel_shard_degree = -1 as 1).
  const TrainerOptions t = trainer_options(cfg);
  int world = env.world_size;
  if (world == 1) {
    const auto d = parallel_degrees(cfg);
    int64_t w = 1;
    for (int64_t k : {d.dp_shard, d.pp, d.dp_replicate, d.cp, d.tp}) w *= std::max<int64_t>(k, 1);
    world = static_cast<int>(std::min<int64_t>(w, 1 << 30));
  }
  // What the model is, first (shapes only, on the meta device); then every check a start makes.
  const auto args = model_args(cfg);
  const models::ModelSpec& spec = models::model_spec(args->family());
  const auto model = spec.build(*args, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  const int64_t seq = t.seq_len;
  log::info("Dry run of " + t.model_name + " " + t.flavor + " on " +
            std::to_string(world) + " rank(s) (nothing is allocated)");
  log::info("Building " + spec.name + " " + t.flavor + " with " + args->describe());
  if (const std::string line = args->parameter_count_line(); !line.empty()) log::info(line);
  log::info("Model " + spec.name + " " + t.flavor + " size: " +
            log::with_commas(args->reported_num_params()) + " total parameters");
  log::info("FLOPs per token at seq_len " + std::to_string(seq) + ": " +
            log::with_commas(args->flops_per_token(seq)));
  const Preflight p = preflight(cfg, world);
  if (p.pipeline) describe_pipeline(*p.pipeline);
  write_config_if_asked(cfg);
  log::info("Parallel dims: " + p.dims.describe());
  const components::DeviceInfo dev(components::pick_device(env.local_rank));
  const double usable = usable_memory_bytes(dev, env.world_size > 1 ? env.local_world_size : world);
  log::info("Memory per rank (estimate): " + p.memory.describe() + "; " + dev.name() + " offers " +
            log::format("%.2f", usable / 1073741824.0) + " GiB per rank");
  check_memory(p.memory, usable, dev.name(), cfg);
  const auto data = open_data(cfg, t, *p.args, 0, p.dims.dp_degree());
  log::info("Tokenizer: " + data.tokenizer->describe());
  log::info("Training data: " + data.data->describe());
  if (data.validation_data) log::info("Validation data: " + data.validation_data->describe());
  // The first batch of each, as a start reads it (an empty or unreadable file fails here too).
  (void)data.data->next();
  if (data.validation_data) (void)data.validation_data->next();
  log::info("Every setting of this config is supported; training would start with these checks passed.");
  return 0;
}

namespace {

// From the trainer's construction until its end (also by an exception): the first SIGINT, SIGTERM
// or SIGUSR1 (Slurm's warning before preemption) is a stop request that every rank honours
// together (during start-up: before the first step; in training: after the current step); a
// second one acts at once.
struct SignalScope {
  SignalScope() {
    g_stop_signal.store(0);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGUSR1, on_stop_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGUSR1, SIG_DFL);
  }
};

}  // namespace

struct Trainer::Impl {
  SignalScope signals;  // first: a stop request at any moment of start-up is heard
  config::JobConfig cfg;  // passed to the option builders (options.h, validate.h) only
  TrainerOptions opt;     // what the trainer reads of it
  distributed::DistEnv env;
  distributed::ParallelDims dims;
  at::Device device{at::kCPU};
  std::unique_ptr<components::DeviceInfo> dev;
  std::unique_ptr<distributed::World> world;
  std::unique_ptr<distributed::DeviceMesh> mesh;
  uint64_t seed = 0;
  bool random_seed = false;  // debug.seed was not set
  int64_t run_id = 0;

  std::shared_ptr<const components::Tokenizer> tokenizer;
  std::unique_ptr<components::DataLoader> data, validation_data;

  std::shared_ptr<const ModelConfig> args;
  const models::ModelSpec* spec = nullptr;
  std::unique_ptr<Model> model;
  models::ParallelPlan plan;
  std::vector<at::Tensor> params;
  std::vector<std::string> param_names;
  std::vector<distributed::Box> boxes;  // this rank's box of each parameter
  std::unique_ptr<components::Optimizer> optimizer;
  components::OptimizerOptions oo;
  components::LRSchedule schedule;

  int64_t local_bs = 0, seq_len = 0, global_bs = 0, accum = 1, steps = 0;
  double max_norm = 1.0;
  int64_t flops_per_token = 0;
  components::PeakFlops peak;
  std::unique_ptr<components::MetricsProcessor> metrics;
  std::unique_ptr<components::Profiler> profiler;
  std::unique_ptr<components::MemorySnapshotter> snapshots;

  std::unique_ptr<components::Checkpointer> checkpointer;
  int64_t lr_offset = 0;  // steps the schedule did not see (a checkpoint loaded without it)
  int stop_signal = 0;    // the signal that stopped the run (the largest over ranks)
  bool first_step_done = false;

  RunResult result;
  int64_t last_step = 0;
  double total_data_seconds = 0, total_step_seconds = 0;

  std::set<std::string> model_keys;  // "model.<fqn>" of the whole model, before any stage split
  // Mixture of experts: the load of each MoE layer this rank holds (its pipeline stages').
  std::vector<models::ExpertLoad> expert_loads;
  std::vector<NamedParam> buffers;  // the persistent buffers of the layers held (expert_bias)
  std::vector<FolderLock> folder_locks;  // rank 0's, for the whole run: the dump and checkpoint folders

  // ---- pipeline parallelism (pipeline_parallel_degree > 1) ----
  std::optional<PipelinePlan> pipeline_plan;
  std::unique_ptr<Pipeline> pipeline;

  explicit Impl(const config::JobConfig& c);
  // Validation's loss sum of one batch on this rank (the model, or the pipeline).
  double validation_sum(const components::Batch& batch);
  distributed::Group& loss_group() { return mesh->group("loss"); }
  // Each value's largest over every rank (one collective; the values as given on one process).
  std::vector<double> world_max(std::vector<double> values) {
    if (world->size() <= 1) return values;
    at::Tensor t = at::tensor(values, at::kDouble).to(device);
    mesh->group("world").all_reduce(t, /*max=*/true).wait();
    t = t.cpu();
    for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<double>();
    return values;
  }
  // What a resumed run compares with the checkpoint's run, to say what changed.
  nlohmann::json run_shape() const {
    return {{"layout", dims.describe()},
            {"global batch size", global_bs},
            {"sequence length", seq_len},
            {"training.steps", steps},
            {"learning-rate schedule", "warmup " + std::to_string(schedule.warmup_steps) + ", stable " +
                                           std::to_string(schedule.stable_steps) + ", decay " +
                                           std::to_string(schedule.decay_steps) + " steps"}};
  }
  // The largest stop signal any rank received so far (0: none), agreed by every rank.
  int agree_stop_signal() { return static_cast<int>(world_max({static_cast<double>(g_stop_signal.load())})[0]); }
  // Rank 0 locks job.dump_folder and the checkpoint folder; every rank fails (exit 2) if another
  // live run holds either.
  void lock_dump_folder();
};

Trainer::Impl::Impl(const config::JobConfig& c) : cfg(c), opt(trainer_options(c)) {
  log::set_color(opt.color);
  // ---- processes and the mesh: validated before anything talks to another process ----------
  env = distributed::read_dist_env();
  log::set_rank(env.rank);
  log::info("Starting job: " + opt.description);
  const Preflight checked = preflight(cfg, env.world_size);  // the dry run's checks
  dims = checked.dims;
  args = checked.args;
  spec = &models::model_spec(args->family());
  pipeline_plan = checked.pipeline;

  // ---- device, threads, determinism --------------------------------------------------------
  // On the CPU each process takes its share of the cores, unless OMP_NUM_THREADS says.
  if (!std::getenv("OMP_NUM_THREADS")) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    at::set_num_threads(std::max(1, cores / std::max(1, env.local_world_size)));
  }
  device = components::pick_device(env.local_rank);
  dev = std::make_unique<components::DeviceInfo>(device);
  check_memory(checked.memory, usable_memory_bytes(*dev, env.local_world_size), dev->name(), cfg);
  log::info("Memory per rank (estimate): " + checked.memory.describe());
  if (opt.deterministic) {
    // cuBLAS needs a fixed workspace to be deterministic; it reads this before its first use.
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, opt.deterministic_warn_only);
  }
  const auto init_timeout = std::chrono::seconds(opt.init_timeout_seconds);
  world = std::make_unique<distributed::World>(env, device, init_timeout);
  mesh = std::make_unique<distributed::DeviceMesh>(*world, dims);
  lock_dump_folder();
  write_config_if_asked(cfg);
  seed = resolve_seed(opt);
  random_seed = !opt.seed;
  // A run id for the flight recorder: rank 0's start time, like the seed agreed by all.
  run_id = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
               .count();
  if (world->size() > 1) {  // every rank starts from rank 0's seed (it may be random)
    at::Tensor s = at::tensor({static_cast<int64_t>(seed), run_id}, at::kLong).to(device);
    mesh->group("world").broadcast(s, 0).wait();
    s = s.cpu();
    seed = static_cast<uint64_t>(s[0].item<int64_t>());
    run_id = s[1].item<int64_t>();
  }
  at::manual_seed(seed);
  if (device.is_cuda())
    log::info("CUDA capacity: " + dev->name() + " with " + log::format("%.2f", dev->total_memory_gib()) + "GiB memory");
  else
    log::info("CPU: " + dev->name() + ", " + std::to_string(at::get_num_threads()) + " threads per process");
  log::info("Parallel dims: " + dims.describe() + (world->size() > 1 ? ", launched by " + env.launcher : ""));

  // ---- tokenizer and data: each data-parallel rank reads its rows; tp ranks share them --------
  local_bs = opt.local_batch_size;
  seq_len = opt.seq_len;
  const int64_t dp_degree = dims.dp_degree(), dp_rank = mesh->rank("dp");
  {
    auto parts = open_data(cfg, opt, *args, dp_rank, dp_degree);
    tokenizer = std::move(parts.tokenizer);
    data = std::move(parts.data);
    validation_data = std::move(parts.validation_data);
  }
  log::info("Tokenizer: " + tokenizer->describe());
  log::info("Preparing " + opt.dataset + " dataset from " + data->describe());
  if (tokenizer->bos_id() < 0 || tokenizer->eos_id() < 0)
    log::warning("the tokenizer has no " + std::string(tokenizer->bos_id() < 0 ? "BOS" : "EOS") +
                 " token (no tokenizer_config.json naming it?); documents are packed without it");
  if (validation_data)
    log::info("Preparing " + opt.validation_dataset + " validation dataset from " +
              validation_data->describe());

  // ---- model and its parallel plan ------------------------------------------------------------
  log::info("Building " + spec->name + " " + opt.flavor + " with " + args->describe());
  const at::ScalarType param_dtype = dtype_of(opt.dtype);
  const bool shared = dims.world_size > 1;
  // With several ranks the model is built on the meta device; the plan creates each rank's
  // slices of every parameter from the same per-element initialisation.
  model = spec->build(*args, at::TensorOptions().device(shared ? at::Device(at::kMeta) : device).dtype(param_dtype));
  if (!shared) model->init_weights(seed);
  for (const auto& p : model->named_parameters()) model_keys.insert("model." + p.name);
  for (const auto& b : model->named_buffers()) model_keys.insert("model." + b.name);
  flops_per_token = args->flops_per_token(seq_len);
  if (const std::string line = args->parameter_count_line(); !line.empty()) log::info(line);
  log::info("Model " + spec->name + " " + opt.flavor + " size: " + log::with_commas(args->reported_num_params()) +
            " total parameters");
  log::info("FLOPs per token: " + log::with_commas(flops_per_token));
  // The compute dtype: training.mixed_precision_param, unless this CPU would emulate it.
  const auto precision = components::resolve_compute_precision(
      *dev, dtype_of(opt.mixed_precision_param), param_dtype, opt.cpu_bf16);
  if (!precision.note.empty()) log::info(precision.note);
  if (!precision.warning.empty()) log::warning(precision.warning);
  if (!device.is_cuda()) dev->memory_stats_and_reset();  // the peak below is the materialisation's
  const int64_t rss_before = components::DeviceInfo::current_resident_bytes();
  std::vector<size_t> parts_held;  // pipeline parallelism: the parts of this rank's stages
  if (pipeline_plan) {
    parts_held = parts_of_rank(*pipeline_plan, mesh->rank("pp"));
    describe_pipeline(*pipeline_plan);
  }
  plan = spec->parallelize(*model, parallelize_options(cfg), *mesh, device, precision.dtype, seed, parts_held);
  for (const auto& line : plan.applied) log::info(line);
  if (plan.data_parallel) {
    params = plan.data_parallel->parameters();
    param_names = plan.data_parallel->parameter_names();
    boxes = plan.data_parallel->boxes();
    int64_t bytes = 0;
    for (const auto& p : params) bytes += p.numel() * p.element_size();
    if (!device.is_cuda())
      log::info_every_rank("Materialised this rank's parameters: " + log::format("%.3f", bytes / 1073741824.0) +
                " GiB; peak resident memory grew by " +
                log::format("%.3f", (components::DeviceInfo::peak_resident_bytes() - rss_before) / 1073741824.0) +
                " GiB meanwhile");
  } else {
    for (const auto& p : model->named_parameters()) {
      params.push_back(*p.tensor);
      param_names.push_back(p.name);
      boxes.push_back({std::vector<int64_t>(p.tensor->dim(), 0), p.tensor->sizes().vec()});
    }
  }
  {  // the MoE layers and buffers of the parts this rank holds
    auto held = [&](const std::string& layer) {
      return std::any_of(param_names.begin(), param_names.end(),
                         [&](const std::string& n) { return n.rfind(layer + ".", 0) == 0; });
    };
    for (auto& load : model->expert_loads())
      if (held(load.layer)) expert_loads.push_back(load);
    for (auto& b : model->named_buffers())
      if (held(b.name.substr(0, b.name.find(".moe.")))) buffers.push_back(b);
    if (!expert_loads.empty())
      log::info("Mixture of experts: " + std::to_string(expert_loads.size()) + " MoE layers here; " +
                (expert_loads.front().coeff
                     ? "load balancing without auxiliary loss (expert bias updated before each optimizer step from "
                       "the tokens per expert summed over the data-parallel ranks, coefficient " +
                           log::format("%g", *expert_loads.front().coeff) + ")"
                     : std::string("no load balancing (load_balance_coeff unset)")));
  }
  if (opt.print_after_conversion) {
    std::string listing = "Model after conversion:";
    for (const auto& p : model->named_parameters())
      listing += "\n  " + p.name + " " + c10::str(p.tensor->sizes()) + " " + c10::toString(p.tensor->scalar_type());
    log::info(listing);
  }
  if (opt.gc_settings)
    log::warning("training.gc_freq and training.gc_debug have no effect in titan.cpp: there is no garbage collector");
  // Matmuls run in bf16 with bf16 parameters, else in the compute dtype (float32 where the plan
  // turned mixed precision off).
  const at::ScalarType matmul_dtype = param_dtype == at::kBFloat16 ? at::kBFloat16
                                      : dims.fsdp_enabled()       ? precision.dtype
                                                                  : plan.autocast.value_or(at::kFloat);
  const bool fused_blocks = opt.fused_blocks;
  if (args->block_causal()) {
    // As torchtitan's document mask: documents end at the tokenizer's EOS, which the data loader
    // appends to each.
    if (tokenizer->eos_id() < 0)
      throw Error("model.flavor = \"" + opt.flavor + "\" masks attention by document (attn_mask_type = block_causal), "
                  "but the tokenizer has no EOS token to split documents at",
                  "use a tokenizer whose tokenizer_config.json names its eos_token, or a causal flavor");
    model->set_document_eos(tokenizer->eos_id());
  }
  log::info("Attention: " + kernels::attention_backend(device, matmul_dtype, fused_blocks) + args->attention_note() +
            (args->block_causal() ? "; block-causal: documents split at EOS id " + std::to_string(tokenizer->eos_id()) +
                                        ", a token attends only to its own document"
                                  : ""));
  if (pipeline_plan)
    pipeline = std::make_unique<Pipeline>(*pipeline_plan, *model, *plan.data_parallel, *mesh, *dev, matmul_dtype,
                                          seq_len / dims.cp,  // context parallelism: this rank's part
                                          validation_data ? std::optional<int64_t>(opt.validation_seq_len / dims.cp)
                                                          : std::nullopt,
                                          plan.tied_across_stages);
  peak = dev->peak_flops(matmul_dtype);
  log::info("Peak FLOPS used for computing MFU: " + log::format("%.3e", peak.flops) + " (" + peak.source + ")");

  // ---- optimizer, schedule ----------------------------------------------------------------------
  oo = optimizer_options(cfg);
  optimizer = std::make_unique<components::Optimizer>(params, oo, param_names);
  steps = opt.steps;
  std::vector<std::string> warnings;
  schedule = lr_schedule(cfg, &warnings);
  for (const auto& w : warnings) log::warning(w);

  global_bs = opt.global_batch_size == -1 ? local_bs * dp_degree : opt.global_batch_size;
  if (global_bs % (local_bs * dp_degree) != 0)
    throw Error("training.global_batch_size = " + std::to_string(global_bs) +
                    " is not a multiple of local_batch_size * data-parallel degree (" + std::to_string(local_bs) +
                    " * " + std::to_string(dp_degree) + ")",
                "set it to -1 or to a multiple of " + std::to_string(local_bs * dp_degree));
  accum = global_bs / (local_bs * dp_degree);
  max_norm = opt.max_norm;
  log::info("Trainer is initialized with local batch size " + std::to_string(local_bs) + ", global batch size " +
            std::to_string(global_bs) + ", gradient accumulation steps " + std::to_string(accum) +
            ", sequence length " + std::to_string(seq_len) + ", total steps " + std::to_string(steps) +
            " (warmup " + std::to_string(schedule.warmup_steps) + ")");

  dev->memory_stats_and_reset();
  metrics = std::make_unique<components::MetricsProcessor>(metrics_options(cfg), env.rank, flops_per_token, peak.flops,
                                                           dims.tp * dims.cp * dims.pp, *dev, run_id);
  profiler = std::make_unique<components::Profiler>(profiling_options(cfg), env.rank, device);
  snapshots = std::make_unique<components::MemorySnapshotter>(profiling_options(cfg), env.rank, device);
  auto& recorder = distributed::FlightRecorder::instance();
  if (world->size() > 1) {
    recorder.configure(static_cast<size_t>(opt.trace_buf_size), env.rank, world->size(),
                       (std::filesystem::path(opt.traces_folder) / (opt.traces_file_prefix + std::to_string(env.rank))).string(),
                       run_id);
    recorder.install_fatal_signal_dump();
  }

  components::CheckpointContext ck;
  ck.rank = env.rank;
  ck.world_size = env.world_size;
  ck.any_failed = [this](bool failed) { return world_max({failed ? 1.0 : 0.0})[0] > 0; };
  ck.device = device;
  ck.wait_for_files = std::max<std::chrono::milliseconds>(world->collective_timeout(), std::chrono::seconds(60));
  ck.run_id = run_id;
  ck.layout = {{"describe", dims.describe()}, {"dp_replicate", dims.dp_replicate}, {"dp_shard", dims.dp_shard},
               {"cp", dims.cp}, {"tp", dims.tp}, {"pp", dims.pp}};
  ck.model = {{"name", spec->name}, {"flavor", opt.flavor}, {"args", args->to_json()},
              {"tokenizer", opt.tokenizer_location}};
  ck.model_keys = model_keys;
  ck.reads_torchtitan_checkpoints = spec->reads_torchtitan_checkpoints;
  checkpointer = std::make_unique<components::Checkpointer>(checkpoint_options(cfg), ck);
}

double Trainer::Impl::validation_sum(const components::Batch& batch) {
  if (pipeline) return pipeline->validation_sum(batch);
  AutocastScope amp(device.type(), plan.autocast);
  return model->forward_loss(batch.inputs, batch.labels).sum().to(at::kDouble).item<double>();
}

void Trainer::Impl::lock_dump_folder() {
  // The dump folder, and the checkpoint folder when this run saves there (it may lie outside
  // the dump folder, shared by runs with different dump folders).
  std::vector<std::pair<std::string, std::string>> folders = {{"job.dump_folder", opt.dump_folder}};
  if (opt.checkpoint_enable && !opt.load_only) {
    const std::filesystem::path ck = opt.checkpoint_folder;
    std::error_code ec;
    if (std::filesystem::weakly_canonical(ck, ec) != std::filesystem::weakly_canonical(folders[0].second, ec))
      folders.emplace_back("checkpoint.folder", ck.string());
  }
  std::string holder;
  size_t failed = 0;  // 1 + the index of the folder another run holds; 0: all locked
  std::exception_ptr error;  // a folder that cannot be created or locked at all
  if (env.rank == 0) {
    try {
      for (size_t i = 0; i < folders.size() && !failed; ++i) {
        std::optional<FolderLock> lock = FolderLock::try_lock(folders[i].second, &holder);
        if (lock) folder_locks.push_back(std::move(*lock));
        else failed = i + 1;
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (world->size() > 1) {
    const std::vector<double> agreed = world_max({static_cast<double>(failed), error ? 1.0 : 0.0});
    failed = static_cast<size_t>(agreed[0]);
    if (!error && agreed[1] > 0)
      throw Error("rank 0 cannot lock job.dump_folder or checkpoint.folder (its message names the reason)",
                  "make the folders writable");
  }
  if (error) std::rethrow_exception(error);
  if (failed) {
    const auto& [key, folder] = folders.at(failed - 1);
    throw Error(key + " = \"" + folder + "\" is in use by another live run (" + (env.rank == 0 ? holder : "rank 0 names it") + ")",
                "wait for that run to end, or give this one another --" + key);
  }
}

Trainer::Trainer(const config::JobConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {}
Trainer::~Trainer() = default;

at::Tensor Trainer::forward_backward_step(const components::Batch& b, const at::Tensor& global_valid_tokens) {
  Impl& s = *impl_;
  at::Tensor loss, row_sums;
  {
    TITAN_RANGE("forward");
    AutocastScope amp(s.device.type(), s.plan.autocast);
    at::Tensor per_token = s.model->forward_loss(b.inputs, b.labels);  // (B,T) float32
    row_sums = per_token.detach().sum(1).to(at::kDouble);
    loss = per_token.sum() / global_valid_tokens;
  }
  {
    TITAN_RANGE("backward");
    loss.backward();
    if (s.plan.data_parallel) s.plan.data_parallel->finish_backward();
  }
  return row_sums;
}

StepRecord Trainer::train_step(int64_t step) {
  Impl& s = *impl_;
  const auto step_start = Clock::now();
  const int64_t reads_before = components::host_reads();
  // Data for every microbatch first: the loss is normalised by the valid tokens of all of them
  // on every data-parallel rank. The batches are counted on the host and copied to the device
  // without waiting (pinned memory on CUDA).
  std::vector<components::Batch> micro;
  int64_t local_valid = 0;
  {
    TITAN_RANGE("data_loading");
    for (int64_t m = 0; m < s.accum; ++m) {
      auto b = s.data->next();
      if (s.plan.context_parallel) {  // this rank's part of every sequence
        b->inputs = s.plan.context_parallel->split(b->inputs);
        b->labels = s.plan.context_parallel->split(b->labels);
      }
      local_valid += components::count_valid_tokens(b->labels);
      b->inputs = components::to_device(b->inputs, s.device);
      b->labels = components::to_device(b->labels, s.device);
      micro.push_back(std::move(*b));
    }
  }
  const double data_seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
  // The global count stays on the device: the losses are divided by it there.
  at::Tensor valid = components::to_device(at::full({1}, local_valid, at::kLong), s.device);
  s.loss_group().all_reduce(valid).wait();
  valid = valid.reshape({});
  s.optimizer->zero_grad();
  {  // this step's tokens per expert only (validation's forwards counted too)
    at::NoGradGuard no_grad;
    for (auto& l : s.expert_loads) l.tokens.zero_();
  }
  // Per-row loss sums (float64), gathered in global row order for a layout-independent log.
  at::Tensor row_sums = at::empty({s.accum, s.local_bs}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  if (s.pipeline) {
    // The schedule runs each round's local batch in microbatches; the last stage computes the
    // losses and shares them with the other stages.
    TITAN_RANGE("pipeline_schedule");
    for (int64_t m = 0; m < s.accum; ++m)
      row_sums[m].copy_(s.pipeline->train_round(micro[m], valid, m + 1 == s.accum, /*measure=*/step > 2));
  } else {
    for (int64_t m = 0; m < s.accum; ++m) {
      if (s.plan.data_parallel) s.plan.data_parallel->set_gradient_sync(m + 1 == s.accum);
      row_sums[m].copy_(forward_backward_step(micro[m], valid));
    }
  }
  const at::Tensor rows = gather_rows(row_sums, s.loss_group());
  at::Tensor grad_norm;
  {
    TITAN_RANGE("clip_grad_norm");
    grad_norm = s.plan.data_parallel ? s.plan.data_parallel->grad_norm() : components::total_grad_norm_tensor(s.params);
  }
  const double lr = s.oo.lr * s.schedule.factor(step - 1 - s.lr_offset);
  const at::Tensor expert_load = balance_experts();  // before the optimizer step, as torchtitan's pre-step hook
  {
    TITAN_RANGE("optimizer");  // clipping is applied by the optimizer, in its own pass, from the device
    s.optimizer->step(lr, components::clip_coefficient(grad_norm, s.max_norm));
    if (s.plan.data_parallel) s.plan.data_parallel->after_optimizer_step();
  }
  // One max-reduction for two things: torchtitan's global_max_loss (the largest per-rank
  // average; ranks outside data parallelism hold the same value) and the stop signal, so that
  // every rank stops after the same step.
  at::Tensor maxed = at::cat({(row_sums.sum() / static_cast<double>(std::max<int64_t>(local_valid, 1))).reshape({1}),
                              components::to_device(at::full({1}, static_cast<double>(g_stop_signal.load()), at::kDouble),
                                                    s.device)});
  s.mesh->group("world").all_reduce(maxed, /*max=*/true).wait();
  // The step's one read on the host (docs/gpu.md): every row's loss, the valid tokens, the two
  // maxima and the gradient norm. On NCCL it gives up when a collective has been running for
  // longer than the collective timeout (the flight recorder watches each).
  const at::Tensor host = components::read_to_host(
      at::cat({rows.reshape({-1}), valid.to(at::kDouble).reshape({1}), maxed, grad_norm.reshape({1}).to(at::kDouble),
               expert_load}),
      [&s]() -> std::string {
        if (s.world->size() <= 1) return "";
        const double timeout = std::chrono::duration<double>(s.world->collective_timeout()).count();
        const double running = distributed::FlightRecorder::instance().oldest_pending_seconds();
        if (running <= timeout) return "";
        return "a collective has been running for " + log::format("%.0f", running) + " s, longer than the collective " +
               "timeout (" + log::format("%.0f", timeout) + " s, comm.train_timeout_seconds): a rank fell behind, " +
               "skipped it or died";
      });
  const double* h = host.data_ptr<double>();
  const int64_t n_rows = rows.numel();
  const double loss_value = global_loss(h, n_rows, h[n_rows]);
  const double grad_norm_value = h[n_rows + 3];
  const double step_seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
  if (!s.first_step_done) {  // the first step of this run (after a resume: not step 1)
    s.first_step_done = true;
    s.result.state_bytes = state_bytes(s.params, *s.optimizer);
    s.world->set_collective_timeout(std::chrono::seconds(s.opt.train_timeout_seconds));
  }
  components::StepValues v;
  v.step = step;
  v.loss = loss_value;
  v.max_loss = h[n_rows + 1];
  v.grad_norm = grad_norm_value;
  v.lr = lr;
  v.tokens = s.accum * s.local_bs * s.seq_len;
  v.tokens_seen = step * s.global_bs * s.seq_len;
  v.step_seconds = step_seconds;
  v.data_seconds = data_seconds;
  v.state_bytes = s.result.state_bytes;
  v.epoch = s.data->epoch();
  v.host_syncs = components::host_reads() - reads_before;
  const auto& cs = distributed::comm_stats();
  v.comm_bytes = {cs.bytes[0], cs.bytes[1], cs.bytes[2], cs.bytes[static_cast<size_t>(distributed::Collective::AllToAll)]};
  for (size_t i = 0; i < s.expert_loads.size(); ++i) v.expert_load.emplace_back(s.expert_loads[i].layer, h[n_rows + 4 + i]);
  s.metrics->record(v);
  if ((!std::isfinite(loss_value) || !std::isfinite(grad_norm_value)) && s.opt.stop_on_nonfinite)
    stop_on_nonfinite(step, loss_value, grad_norm_value);  // after the step's metrics are written
  s.total_data_seconds += data_seconds;
  s.total_step_seconds += step_seconds;
  s.last_step = step;
  s.stop_signal = static_cast<int>(h[n_rows + 2]);
  if (s.stop_signal != 0) {
    s.result.interrupted = true;
    log::warning(std::string("Received ") + signal_name(s.stop_signal) +
                 "; stopped after step " + std::to_string(step) + " of " + std::to_string(s.steps));
  }
  return {step, loss_value, grad_norm_value, lr, s.global_bs * s.seq_len};
}

void Trainer::stop_on_nonfinite(int64_t step, double loss, double grad_norm) {
  Impl& s = *impl_;
  std::string msg = "step " + std::to_string(step) + ": the loss is " + log::format("%g", loss) +
                    " and the gradient norm " + log::format("%g", grad_norm);
  if (!std::isfinite(grad_norm)) {
    // The first parameter (in model order) with a non-finite gradient on any rank.
    int64_t first = static_cast<int64_t>(s.params.size());
    for (size_t i = 0; i < s.params.size() && first == static_cast<int64_t>(s.params.size()); ++i) {
      const at::Tensor& g = s.params[i].grad();
      if (g.defined() && !at::isfinite(g).all().item<bool>()) first = static_cast<int64_t>(i);
    }
    at::Tensor t = at::full({1}, -static_cast<double>(first), at::kDouble).to(s.device);
    s.mesh->group("world").all_reduce(t, /*max=*/true).wait();
    first = -static_cast<int64_t>(t.cpu().item<double>());
    if (first < static_cast<int64_t>(s.param_names.size()))
      msg += "; the first parameter with a non-finite gradient is " + s.param_names[static_cast<size_t>(first)];
  }
  throw Error(msg + ". Training stopped; the metrics of this step were written",
              "lower optimizer.lr, raise lr_scheduler.warmup_steps or keep training.max_norm clipping on; resume "
              "from the last checkpoint, or set training.stop_on_nonfinite = false to keep going")
      .with_exit_code(1);
}

at::Tensor Trainer::balance_experts() {
  Impl& s = *impl_;
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(s.device);
  if (s.expert_loads.empty()) return at::empty({0}, f64);
  TITAN_RANGE("moe_load_balance");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> counts;
  for (const auto& l : s.expert_loads) counts.push_back(l.tokens);
  at::Tensor all = at::stack(counts);  // (layers, E): every data-parallel rank's tokens
  s.loss_group().all_reduce(all).wait();
  for (size_t i = 0; i < s.expert_loads.size(); ++i) {
    auto& l = s.expert_loads[i];
    if (l.update_bias && !TestHooks::get().moe_no_load_balance) l.update_bias(all[static_cast<int64_t>(i)]);
    l.tokens.zero_();
  }
  return (std::get<0>(all.max(1)) / all.mean(1).clamp_min(1e-30)).to(at::kDouble);  // max / mean per layer
}

StateDict Trainer::state_dict() {
  Impl& s = *impl_;
  StateDict d;
  std::vector<std::vector<int64_t>> global_shapes;
  // Whether this rank writes a parameter's box: it holds the first copy, i.e. it is index 0 of
  // every mesh the parameter is not split over (replicas are saved once).
  std::vector<bool> writer;
  if (s.plan.data_parallel) {
    const std::vector<bool> copies = s.plan.data_parallel->copies();  // a tied table's second copy: not saved
    for (size_t i = 0; i < s.plan.data_parallel->layouts().size(); ++i) {
      const auto& l = s.plan.data_parallel->layouts()[i];
      global_shapes.push_back(l.global_shape);
      bool w = !copies[i];
      for (const std::string m : {"dp_replicate", "dp_shard_cp", "tp"}) {
        // Experts split over ep x efsdp are split over all of dp_shard_cp, and over tp when ep borrows it.
        const bool split = l.sharded_on(m) || (l.sharded_on("ep") && (m == "dp_shard_cp" ||
                                                                       (m == "tp" && s.dims.ep_borrows_tp())));
        if (!split && s.mesh->rank(m) != 0) w = false;
      }
      writer.push_back(w);
    }
  } else {
    for (const auto& p : s.params) {
      global_shapes.push_back(p.sizes().vec());
      writer.push_back(true);
    }
  }
  for (size_t i = 0; i < s.params.size(); ++i) {
    // The box's rows lead the (padded) local tensor.
    const distributed::Box& box = s.boxes[i];
    auto mine = [&](const at::Tensor& t) { return box.sizes.empty() ? t : t.narrow(0, 0, box.sizes[0]); };
    const std::string& fqn = s.param_names[i];
    d.tensors.push_back({"model." + fqn, mine(s.params[i].detach()), global_shapes[i], box, writer[i]});
    if (!s.optimizer->exp_avg().empty()) {  // the optimizer's state, by FQN
      const size_t k = s.optimizer->index_of(fqn);
      d.tensors.push_back({"optimizer." + fqn + ".exp_avg", mine(s.optimizer->exp_avg()[k]), global_shapes[i], box, writer[i]});
      d.tensors.push_back({"optimizer." + fqn + ".exp_avg_sq", mine(s.optimizer->exp_avg_sq()[k]), global_shapes[i], box, writer[i]});
      // The step counter once: by the rank that writes the parameter's first element (rank 0
      // does not hold every pipeline stage).
      const bool first_box = writer[i] && std::all_of(box.offsets.begin(), box.offsets.end(),
                                                      [](int64_t o) { return o == 0; });
      d.tensors.push_back({"optimizer." + fqn + ".step", s.optimizer->step_count()[k], {}, {}, first_box});
    }
  }
  {  // persistent buffers (expert_bias): the same on every data-parallel and tensor-parallel rank
    bool writer = true;
    if (s.plan.data_parallel)
      for (const char* m : {"dp_replicate", "dp_shard_cp", "tp"})
        if (s.mesh->rank(m) != 0) writer = false;
    for (const auto& b : s.buffers) {
      const auto shape = b.tensor->sizes().vec();
      components::StateTensor t{"model." + b.name, *b.tensor, shape, {std::vector<int64_t>(shape.size(), 0), shape},
                                writer};
      t.buffer = true;
      d.tensors.push_back(std::move(t));
    }
  }
  d.scalars["train_state"] = {{"step", s.last_step}, {"tokens_seen", s.last_step * s.global_bs * s.seq_len},
                              {"seed", s.seed}, {"run", s.run_shape()}};
  d.scalars["lr_scheduler"] = {{"last_step", s.last_step - s.lr_offset}};
  d.scalars["dataloader"] = s.data->state();
  {  // the CPU generator (nothing in training draws from it today; saved so that what does resumes)
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    const at::Tensor st = gen.get_state();
    const auto* b = st.data_ptr<uint8_t>();
    std::string hex;
    static const char* digits = "0123456789abcdef";
    for (int64_t i = 0; i < st.numel(); ++i) {
      hex += digits[b[i] >> 4];
      hex += digits[b[i] & 15];
    }
    d.scalars["rng"] = {{"cpu", hex}};
  }
  return d;
}

// One line for what this run does differently from the checkpoint's run (a resume on another
// layout or with other settings re-plans the batch and the schedule from the loaded step on).
void Trainer::log_run_changes(const nlohmann::json& sc) const {
  const Impl& s = *impl_;
  if (!sc.contains("train_state") || !sc["train_state"].contains("run") || !sc["train_state"]["run"].is_object()) return;
  const nlohmann::json& was = sc["train_state"]["run"];
  const nlohmann::json now = s.run_shape();
  std::string changes;
  for (const auto& [key, value] : now.items()) {
    if (!was.contains(key) || was[key] == value) continue;
    auto text = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
    changes += (changes.empty() ? "" : "; ") + key + " " + text(was[key]) + " -> " + text(value);
  }
  if (!changes.empty()) log::info("This run differs from the checkpoint's: " + changes);
}

void Trainer::load_scalars(const nlohmann::json& sc) {
  Impl& s = *impl_;
  const std::string fix = "the checkpoint's metadata.json is damaged; load another step";
  try {
    int64_t step = 0;
    if (sc.contains("train_state")) step = sc.at("train_state").at("step").get<int64_t>();
    s.last_step = step;
    // A run without debug.seed goes on recording the seed its first run drew.
    if (s.random_seed && sc.contains("train_state") && sc.at("train_state").contains("seed"))
      s.seed = sc.at("train_state").at("seed").get<uint64_t>();
    // The schedule continues where it was; excluded, it starts again from the loaded step.
    s.lr_offset = sc.contains("lr_scheduler") ? step - sc.at("lr_scheduler").at("last_step").get<int64_t>() : step;
    if (sc.contains("dataloader")) s.data->load_state(sc.at("dataloader"));
    if (sc.contains("rng") && sc.at("rng").contains("cpu")) {
      const std::string hex = sc.at("rng").at("cpu").get<std::string>();
      at::Tensor st = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
      auto* b = st.data_ptr<uint8_t>();
      auto nib = [&](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
      for (size_t i = 0; i + 1 < hex.size(); i += 2) b[i / 2] = static_cast<uint8_t>(nib(hex[i]) << 4 | nib(hex[i + 1]));
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(st);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("the checkpoint's scalars are malformed (") + e.what() + ")", fix);
  } catch (const c10::Error& e) {
    throw Error(std::string("the checkpoint's generator state is malformed (") + e.what_without_backtrace() + ")", fix);
  }
}

namespace {

// Test hooks (TestHooks::initial_state_file, final_state_file): gathered parameters written to
// `path` (float32, in parameter order; <path>.json names them), to compare layouts.
void dump_state_for_test(const std::vector<std::pair<std::string, at::Tensor>>& state, const std::string& path) {
  std::ofstream bin(path, std::ios::binary);
  nlohmann::json index = nlohmann::json::array();
  for (const auto& [name, t] : state) {
    at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
    bin.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * 4));
    index.push_back({{"name", name}, {"shape", c.sizes().vec()}});
  }
  std::ofstream(std::string(path) + ".json") << index.dump();
}

}  // namespace

RunResult Trainer::run() {
  Impl& s = *impl_;
  const TestHooks& hooks = TestHooks::get();
  if (!hooks.describe().empty()) log::warning("test hooks are set (" + hooks.describe() + "): this run is a test");
  if (!hooks.initial_state_file.empty()) {
    std::vector<std::pair<std::string, at::Tensor>> state;
    if (s.plan.data_parallel) state = s.plan.data_parallel->full_state();
    else for (auto& p : s.model->named_parameters()) state.emplace_back(p.name, *p.tensor);
    for (auto& b : s.buffers) state.emplace_back(b.name, *b.tensor);
    if (s.env.rank == 0) dump_state_for_test(state, hooks.initial_state_file);
  }
  if (hooks.stop_after_init) return s.result;  // building only
  auto& ck = *s.checkpointer;
  if (s.opt.create_seed_checkpoint) {
    if (s.world->size() > 1)
      throw Error("checkpoint.create_seed_checkpoint runs on one process (it saves the unparallelized model)",
                  "run it without torchrun; every layout can then start from the seed");
    if (!ck.enabled())
      throw Error("checkpoint.create_seed_checkpoint = true needs checkpoint.enable = true",
                  "add --checkpoint.enable");
    ck.save(0, state_dict(), /*model_only=*/true, /*export_cast=*/false);
    log::info("Created the seed checkpoint " + ck.folder() + "/step-0; runs with checkpoint.folder there start from it");
    return s.result;
  }
  int64_t start = 0;
  const bool hf_in = s.opt.initial_load_in_hf;
  if (ck.enabled() && hf_in && !ck.has_checkpoint()) {
    // Hugging Face weights: the model only, each rank its boxes.
    const std::string& path = s.opt.initial_load_path;
    std::exception_ptr error;
    const auto t0 = Clock::now();
    try {
      if (path.empty())
        throw Error("checkpoint.initial_load_in_hf = true needs checkpoint.initial_load_path",
                    "set it to a Hugging Face model folder (with model.safetensors and config.json)");
      ck.check_nothing_overwritten(0);
      StateDict sd = state_dict();
      load_hf_into(path, *s.args, sd);
    } catch (...) {
      error = std::current_exception();
    }
    ck.agree(error, "loading the Hugging Face weights");
    log::info("Loaded the Hugging Face weights of " + path + " in " +
              log::format("%.2f", std::chrono::duration<double>(Clock::now() - t0).count()) + " seconds");
  } else if (ck.enabled()) {
    s.optimizer->ensure_state();  // loaded into, when the checkpoint has it
    StateDict sd = state_dict();
    const components::LoadResult loaded = ck.load(sd);
    if (loaded.loaded) {
      load_scalars(loaded.scalars);
      start = s.last_step;
      if (start > 0) log::info("Resuming training from step " + std::to_string(start) + " of " + loaded.path);
      if (start > 0) log_run_changes(loaded.scalars);
    }
  }
  if (s.random_seed && start > 0)
    log::info("debug.seed is not set: the weights, optimizer, data position and generator come from the checkpoint "
              "(its run's seed was " + std::to_string(s.seed) + ")");
  else if (s.random_seed)
    log::info("debug.seed is not set; using random seed " + std::to_string(s.seed));
  auto& recorder = distributed::FlightRecorder::instance();
  if (const int sig = s.agree_stop_signal()) {  // a stop request during start-up: all ranks stop here
    s.result.interrupted = true;
    log::warning(std::string("Received ") + signal_name(sig) +
                 " during start-up: stopped before training (nothing trained, nothing saved)");
    return s.result;
  }
  if (start >= s.steps) {
    log::info("The checkpoint is at step " + std::to_string(start) + " and training.steps is " +
              std::to_string(s.steps) + ": nothing left to train");
    return s.result;
  }
  log::info("Training starts at step " + std::to_string(start + 1));
  const bool save_on_signal = s.opt.save_on_preemption;
  const bool last_model_only = s.opt.last_save_model_only;
  int64_t step = 0;
  try {
    for (step = start + 1; step <= s.steps; ++step) {
      s.profiler->step_begin(step);
      s.result.steps.push_back(train_step(step));
      if (s.validation_data && (step == 1 || step % s.opt.validation_freq == 0))
        validate([&s](const components::Batch& b) { return s.validation_sum(b); }, *s.validation_data,
                 s.loss_group(), s.device, s.opt.validation_steps, step, *s.metrics, s.plan.context_parallel.get());
      // Preemption (SIGTERM, or Slurm's SIGUSR1 warning): the full state, to resume from.
      const bool preempted = s.result.interrupted && save_on_signal && ck.enabled() &&
                             !s.opt.load_only &&
                             (s.stop_signal == SIGTERM || s.stop_signal == SIGUSR1);
      const bool last = step == s.steps;
      if (preempted || ck.should_save(step, last)) {
        TITAN_RANGE("checkpoint");
        const bool model_only = last && last_model_only && !preempted;
        ck.save(step, state_dict(), model_only, /*export_cast=*/model_only);
      }
      s.profiler->step_end(step);
      s.snapshots->step_end(step);
      if (s.result.interrupted) break;
    }
    ck.wait();
    if (s.opt.last_save_in_hf && ck.enabled() && step > s.steps) {
      // The final checkpoint, also as a transformers folder with the run's tokenizer, apart
      // from the step folder's own files (step-N/hf).
      const std::string dir = ck.folder() + "/step-" + std::to_string(s.steps);
      std::exception_ptr error;
      try {
        if (s.env.rank == 0) {
          convert_to_hf(dir, dir + "/hf", std::nullopt, int64_t{5} << 30, {}, s.opt.tokenizer_location);
          log::info("Wrote the final checkpoint in Hugging Face format to " + dir + "/hf");
        }
      } catch (...) {
        error = std::current_exception();
      }
      ck.agree(error, "writing the Hugging Face checkpoint");
    }
  } catch (const c10::OutOfMemoryError&) {
    s.snapshots->on_oom(step);
    throw;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    if (s.world->size() > 1) {
      report_comm_failure(recorder, s.opt, s.env, e.what(), s.world->collective_timeout());
      s.world->abort_device_groups();  // NCCL: its stuck work would keep the process from ending
    }
    throw;
  }
  if (!hooks.final_state_file.empty()) {
    // Every rank takes part in the gathers of its stage; the first data-parallel and tensor-parallel
    // rank of each pipeline stage writes them (F, or F.pp<k> with pipeline parallelism).
    std::vector<std::pair<std::string, at::Tensor>> state;
    if (s.plan.data_parallel) state = s.plan.data_parallel->full_state();
    else for (auto& p : s.model->named_parameters()) state.emplace_back(p.name, *p.tensor);
    for (auto& b : s.buffers) state.emplace_back(b.name, *b.tensor);
    if (s.mesh->rank("dp_replicate") == 0 && s.mesh->rank("dp_shard_cp") == 0 && s.mesh->rank("tp") == 0)
      dump_state_for_test(state, hooks.final_state_file +
                                     (s.dims.pp > 1 ? ".pp" + std::to_string(s.mesh->rank("pp")) : std::string()));
  }
  const auto skipped = s.data->skipped();
  log::info("Data: " + std::to_string(s.data->epoch()) + " full passes over " + s.data->describe() +
            log::format(", waiting for data %.2f%% of step time",
                        100.0 * s.total_data_seconds / std::max(s.total_step_seconds, 1e-9)) +
            (skipped.empty || skipped.malformed
                 ? "; skipped " + std::to_string(skipped.empty) + " blank lines and " +
                       std::to_string(skipped.malformed) + " malformed lines"
                 : ""));
  if (s.pipeline && !s.pipeline->summary().empty()) log::info_every_rank(s.pipeline->summary());
  if (s.plan.context_parallel)  // how even the causal work is over the cp ranks (head-tail evens it)
    log::info_every_rank("Context parallel: this rank's attention scored " +
                         log::with_commas(s.plan.context_parallel->attention_pairs()) +
                         " query-key pairs (per batch row and head, forward passes of training and validation)");
  if (!s.result.interrupted) log::info("Training completed");
  return s.result;
}

RunResult run_training(const config::JobConfig& cfg) { return Trainer(cfg).run(); }

}  // namespace titan::train
