// Per-step metrics, as torchtitan's MetricsProcessor: the step log line (step 1 and every
// metrics.log_freq), TensorBoard scalars under torchtitan's names, and a JSON-lines file with
// every value of every step (titan.cpp's addition, for scripts and plots).
#pragma once

#include <array>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "titan/components/device/device.h"
#include "titan/components/metrics/tensorboard.h"

namespace titan::components {

struct StepValues {
  int64_t step = 0;
  double loss = 0;          // global average over valid tokens
  double max_loss = 0;      // max over data-parallel ranks of the local average
  double grad_norm = 0;
  double lr = 0;
  int64_t tokens = 0;       // tokens this rank processed this step
  int64_t tokens_seen = 0;  // all ranks, since the start
  double step_seconds = 0;
  double data_seconds = 0;  // of step_seconds, waiting for data
  int64_t state_bytes = 0;  // parameters + gradients + optimizer state on this rank
  int64_t epoch = 0;        // passes the training data has completed
  int64_t host_syncs = 0;   // the step's reads of device values on the host (read_to_host calls)
  // Bytes this rank put on the wire since the start: all-gather, reduce-scatter, all-reduce,
  // all-to-all.
  std::array<double, 4> comm_bytes{};
  // Mixture of experts: each MoE layer's max / mean tokens per expert this step ("layers.3").
  std::vector<std::pair<std::string, double>> expert_load;
};

// The metrics.* settings a run uses (train/options.h builds them from the job config).
struct MetricsOptions {
  int64_t log_freq = 10;
  bool save_for_all_ranks = false;
  std::string dump_folder = "./outputs";
  bool enable_tensorboard = false;
  std::string save_tb_folder = "tb";
};

class MetricsProcessor {
 public:
  // rank: this process; tp*cp*pp divide tokens per second (per device), as torchtitan.
  MetricsProcessor(const MetricsOptions& options, int rank, int64_t flops_per_token, double peak_flops,
                   int non_data_parallel_size, DeviceInfo& device, int64_t run_id = 0);
  bool should_log(int64_t step) const { return step == 1 || step % log_freq_ == 0; }
  void record(const StepValues& v);
  // torchtitan's `validate step:` line and validation_metrics/* scalars. `tokens`: this rank's
  // validation tokens, read in `seconds`.
  void log_validation(int64_t step, double loss, int64_t tokens, double seconds);
  std::string tensorboard_dir() const { return tb_dir_; }
  double peak_flops() const { return peak_; }

 private:
  // 100 * achieved / peak; an achieved rate above the peak raises the peak (with a warning).
  double mfu_percent(double tps);

  int rank_;
  int64_t run_id_;  // in every metrics.jsonl row: a rerun appends to the file
  int64_t log_freq_, flops_per_token_;
  double peak_;
  int non_dp_;
  DeviceInfo& device_;
  std::unique_ptr<TensorBoardWriter> tb_;
  std::string tb_dir_;
  std::unique_ptr<std::ofstream> jsonl_;
  std::string jsonl_path_;
  // After a write: a failed one (a full disk) is a warning, once, and that output stops; the run goes on.
  void check_outputs();
  std::chrono::steady_clock::time_point last_log_;
  int64_t tokens_since_log_ = 0;
  double data_seconds_since_log_ = 0;
  int64_t steps_since_log_ = 0;
};

}  // namespace titan::components
