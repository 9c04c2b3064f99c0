// Checkpoints: torchtitan's checkpoint.* keys over a sharded format anyone can read.
//
// <dump_folder>/<checkpoint.folder>/step-N/ holds one safetensors file per rank with the boxes
// of the state that rank is the first holder of (replicas are written once), metadata.json
// (per tensor: dtype, global shape and each chunk's file, box and CRC-32C; the train state,
// learning-rate schedule, data position and generators; the layout and model it was saved
// from) and config.toml. A save is written under step-N.partial-<run id>/, flushed, and renamed
// by rank 0 once every rank's file is there, so a crash at any moment leaves the previous
// checkpoint loadable. Loading reads, for each box this rank holds, the chunks that overlap it
// (checksums verified), so any layout loads any other. The folder must be shared by the ranks
// (as for PyTorch's distributed checkpoints).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "titan/common/box.h"

namespace titan::components {

// One tensor of the training state: this rank's box of a tensor of `global_shape`.
struct StateTensor {
  std::string key;  // "model.<fqn>", "optimizer.<fqn>.exp_avg", ".exp_avg_sq", ".step"
  at::Tensor local;  // the box's values: a view of the live tensor (loading writes through it)
  std::vector<int64_t> global_shape;
  Box box;
  bool writer = true;  // this rank saves the box (it is its first holder; replicas skip it)
  bool buffer = false;  // a persistent buffer (expert_bias), not a parameter
};
struct StateDict {
  std::vector<StateTensor> tensors;
  // "train_state" (step, tokens_seen, seed), "lr_scheduler", "dataloader", "rng": rank 0's are saved.
  nlohmann::json scalars;
};

// What the checkpointer knows of the run.
struct CheckpointContext {
  int rank = 0, world_size = 1;
  // Every rank calls it with whether it failed; true when any rank did (a collective over the
  // world). Unset: one process.
  std::function<bool(bool failed)> any_failed;
  at::Device device{at::kCPU};  // the training device (async_with_pinned_mem needs CUDA)
  // How long rank 0 waits for the other ranks' files before giving up.
  std::chrono::milliseconds wait_for_files{std::chrono::seconds(600)};
  int64_t run_id = 0;                   // names the unfinished save's folder
  nlohmann::json layout;                // parallel degrees, world size
  nlohmann::json model;                 // name, flavor, args
  // Whether torchtitan's checkpoints (DCP) hold this model's tensors in titan.cpp's layout; when
  // not (Qwen3: wq/wk rows in halves order), loading one is refused.
  bool reads_torchtitan_checkpoints = true;
  // Every "model.<fqn>" of the whole model (all pipeline stages): a checkpoint holding a model
  // tensor outside it is refused. Empty: the keys of the state loaded into.
  std::set<std::string> model_keys;
};

struct LoadResult {
  bool loaded = false;
  std::string path;           // the step folder read
  int64_t step = 0;           // the saved step (0 for a seed or initial checkpoint loaded as model only)
  bool model_only = false;
  nlohmann::json scalars;     // the saved scalars minus those exclude_from_loading names
};

// The checkpoint.* settings a run uses (train/options.h builds them from the job config).
struct CheckpointOptions {
  bool enable = false;
  bool load_only = false;
  bool enable_first_step_checkpoint = false;
  int64_t interval = 500;
  int64_t keep_latest_k = 10;
  int64_t load_step = -1;
  int64_t training_steps = 10000;  // training.steps: the last step saves
  std::string folder;              // job.dump_folder / checkpoint.folder
  std::string initial_load_path;   // "" when unset
  bool initial_load_model_only = true;
  std::string async_mode = "disabled";
  std::string export_dtype = "float32";
  std::vector<std::string> exclude_from_loading;
  std::string config_toml;         // the run's whole config, saved with each checkpoint
};

class StateReader;

class Checkpointer {
 public:
  // Validates the settings (titan::Error naming the checkpoint.* key).
  Checkpointer(const CheckpointOptions& options, CheckpointContext ctx);
  ~Checkpointer();  // waits for a save in flight (errors are logged, not thrown)

  bool enabled() const { return enabled_; }
  std::string folder() const { return folder_; }

  // Loads the checkpoint the config picks (the folder's latest or checkpoint.load_step, else
  // checkpoint.initial_load_path) into `state`'s tensors; nothing loaded when there is none.
  // Every rank returns or throws together.
  LoadResult load(StateDict& state);

  // torchtitan's rule: step 1 with enable_first_step_checkpoint, the last step, every interval.
  bool should_save(int64_t step, bool last_step) const;
  // Saves `state` as step-N; model_only keeps the "model." tensors, cast to export_dtype when
  // `export_cast`. Sync: returns once committed on every rank. Async: returns after staging a
  // copy; the write goes on in the background (the next save or wait() joins it).
  void save(int64_t step, const StateDict& state, bool model_only, bool export_cast);
  // Joins the save in flight; every rank throws if any rank's save failed.
  void wait();
  // Whether checkpoint.folder holds a committed checkpoint (else initial_load_path applies).
  bool has_checkpoint() const;
  // titan::Error when a step folder lies where this run, starting after `start_step`, would save
  // (load() checks this itself; a start from Hugging Face weights calls it).
  void check_nothing_overwritten(int64_t start_step) const;
  // Every rank throws if any rank had `error` (its own error, or one naming what failed elsewhere);
  // `on_failure` runs first on every rank when any failed.
  void agree(std::exception_ptr error, const std::string& doing, const std::function<void()>& on_failure = {});

 private:
  struct Job;
  void run_job(Job& job);

  // A loaded checkpoint must be of this run's model.
  void check_model(StateReader& reader, const StateDict& state, const std::string& dir) const;
  // Rank 0 removes the step-N.partial-<run id> folder of a save that failed on some rank.
  void remove_unfinished(const std::filesystem::path& partial) const;

  bool enabled_ = false, load_only_ = false, first_step_ = false, async_ = false, pinned_ = false;
  int64_t interval_ = 500, keep_latest_k_ = 10, load_step_ = -1, steps_ = 0;
  std::string folder_, initial_load_path_;
  bool initial_model_only_ = true;
  std::set<std::string> exclude_;
  at::ScalarType export_dtype_ = at::kFloat;
  std::string config_toml_;
  CheckpointContext ctx_;
  std::unique_ptr<Job> job_;
  std::thread thread_;
  std::vector<at::Tensor> staging_;  // async saves' CPU copies, reused from save to save
  at::Tensor pinned_block_;          // async_with_pinned_mem: the pinned memory staging_ views
  std::vector<std::pair<std::vector<int64_t>, at::ScalarType>> staging_shapes_;  // what it was cut for
};

// A saved training state, read by key ("model.<fqn>", "optimizer.<fqn>.exp_avg", ...): a
// titan.cpp step folder (CheckpointReader) or a PyTorch distributed checkpoint that torchtitan
// wrote (components/dcp.h). titan::Error for a damaged or incomplete checkpoint.
class StateReader {
 public:
  virtual ~StateReader() = default;
  virtual const std::string& path() const = 0;
  virtual bool has(const std::string& key) const = 0;
  virtual std::vector<int64_t> global_shape(const std::string& key) const = 0;
  // Fills `out` (the box's sizes; any dtype: converted) with `box` of `key` (a 0-dim box for
  // scalars) from the chunks that overlap it.
  virtual void read_into(const std::string& key, const Box& box, at::Tensor out) = 0;
  virtual bool holds_full_state() const = 0;  // optimizer state and the train state, or the model only
  virtual int64_t step() const = 0;
  virtual nlohmann::json scalars() = 0;        // "train_state", "lr_scheduler", "dataloader", "rng" when saved
  virtual std::string describe() const = 0;    // where it came from, for the log
  virtual std::string model_flavor() const = 0;
  // The model the checkpoint was saved from ({"name", "flavor", "args"}); empty when unknown.
  virtual nlohmann::json model_description() const { return nlohmann::json::object(); }
  virtual std::vector<std::string> keys() const = 0;  // every tensor key saved
  virtual uint64_t bytes_read() const = 0;
  virtual bool thread_safe() const { return false; }  // read_into may run on several threads at once
};

// A step folder titan.cpp wrote: every chunk's checksum verified as it is read.
class CheckpointReader final : public StateReader {
 public:
  explicit CheckpointReader(const std::string& step_dir);
  ~CheckpointReader() override;
  const nlohmann::json& metadata() const { return meta_; }
  const std::string& path() const override { return dir_; }
  bool has(const std::string& key) const override;
  std::vector<int64_t> global_shape(const std::string& key) const override;
  void read_into(const std::string& key, const Box& box, at::Tensor out) override;
  at::Tensor read_full(const std::string& key);  // the whole tensor, in its saved dtype
  bool holds_full_state() const override;
  int64_t step() const override;
  nlohmann::json scalars() override;
  std::string describe() const override;
  std::string model_flavor() const override;
  nlohmann::json model_description() const override;
  std::vector<std::string> keys() const override;
  uint64_t bytes_read() const override;
  bool thread_safe() const override { return true; }

 private:
  std::string dir_;
  nlohmann::json meta_;
  struct Chunks;
  std::unique_ptr<Chunks> chunks_;
};

// The reader of a step folder of either kind (a `.metadata` file marks PyTorch's).
std::unique_ptr<StateReader> open_state_reader(const std::string& step_dir);

// Writes a committed step folder of one file from full tensors (keys as StateTensor's), as
// `titan convert` does: model-only unless `scalars` holds a train state. `model` is recorded as
// the checkpoint's model. An existing `step_dir` is replaced only when `replace` (checked by the
// caller: see check_convert_output), once the new one is whole.
void write_checkpoint(const std::string& step_dir, int64_t step, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const nlohmann::json& model, const nlohmann::json& scalars = nlohmann::json::object(),
                      bool replace = false);

// Where `titan convert` may write: a new or empty folder; with `force`, also a folder of files
// that are not a checkpoint (to-hf) or a model-only step folder (from-hf, from-dcp: replaced
// whole). Never a training checkpoint or a checkpoint folder, force or not. titan::Error
// otherwise. Returns whether `out` exists and will be replaced or written into.
bool check_convert_output(const std::string& out, bool force, bool step_folder);

// `titan checkpoint info PATH`: a step folder (or a checkpoint folder: each step in it) described,
// every chunk's checksum verified. titan::Error for a damaged checkpoint.
std::string checkpoint_info(const std::string& path);

}  // namespace titan::components
