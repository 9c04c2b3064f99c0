#include "titan/components/metrics/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan::components {

namespace {

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

MetricsProcessor::MetricsProcessor(const MetricsOptions& o, int rank, int64_t flops_per_token, double peak_flops,
                                   int non_data_parallel_size, DeviceInfo& device, int64_t run_id)
    : rank_(rank), run_id_(run_id), log_freq_(o.log_freq), flops_per_token_(flops_per_token), peak_(peak_flops),
      non_dp_(non_data_parallel_size), device_(device), last_log_(std::chrono::steady_clock::now()) {
  const bool all_ranks = o.save_for_all_ranks;
  const std::filesystem::path dump = o.dump_folder;
  if (rank == 0 || all_ranks) {
    std::error_code ec;
    std::filesystem::create_directories(dump, ec);
    const auto file = dump / (rank == 0 ? std::string("metrics.jsonl") : "metrics_rank" + std::to_string(rank) + ".jsonl");
    // Appended to: a rerun into the same folder (a resume) keeps the earlier runs' rows; each
    // row names its run.
    jsonl_ = std::make_unique<std::ofstream>(file, std::ios::app);
    jsonl_path_ = file.string();
    if (!*jsonl_) throw Error("cannot write " + file.string(), "check that job.dump_folder is writable");
    if (o.enable_tensorboard) {
      std::time_t t = std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char stamp[32];
      std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M", &tm);
      std::filesystem::path dir = dump / o.save_tb_folder / stamp;
      if (all_ranks) dir /= "rank_" + std::to_string(rank);
      tb_dir_ = dir.string();
      tb_ = std::make_unique<TensorBoardWriter>(tb_dir_);
      log::info("TensorBoard logging enabled. Logs will be saved at " + tb_dir_);
    }
  }
}

void MetricsProcessor::check_outputs() {
  const int err = errno;
  const std::string why = err ? std::string(": ") + std::strerror(err) : std::string();
  if (jsonl_ && !*jsonl_) {
    log::warning("cannot write " + jsonl_path_ + why + "; metrics are no longer written there (training goes on)");
    jsonl_.reset();
  }
  if (tb_ && !tb_->ok()) {
    log::warning("cannot write TensorBoard events to " + tb_dir_ + why + "; TensorBoard logging stops (training goes on)");
    tb_.reset();
  }
}

double MetricsProcessor::mfu_percent(double tps) {
  const double achieved = static_cast<double>(flops_per_token_) * tps;
  if (achieved > peak_) {
    // A measured peak can come out low (a busy machine at start-up); MFU never exceeds 100%.
    log::warning("achieved " + log::format("%.3e", achieved) + " FLOP/s, above the peak of " +
                 log::format("%.3e", peak_) + " used for MFU; that rate is the peak from now on");
    peak_ = achieved;
  }
  return 100.0 * achieved / peak_;
}

void MetricsProcessor::record(const StepValues& v) {
  tokens_since_log_ += v.tokens;
  data_seconds_since_log_ += v.data_seconds;
  ++steps_since_log_;
  if (jsonl_) {
    const double tps = static_cast<double>(v.tokens) / (v.step_seconds * non_dp_);
    const double rss = static_cast<double>(DeviceInfo::current_resident_bytes()) / (1024.0 * 1024.0 * 1024.0);
    *jsonl_ << "{\"run_id\": " << run_id_ << ", \"step\": " << v.step << ", \"loss\": " << json_number(v.loss)
            << ", \"max_loss\": " << json_number(v.max_loss) << ", \"grad_norm\": " << json_number(v.grad_norm)
            << ", \"lr\": " << json_number(v.lr) << ", \"tokens_seen\": " << v.tokens_seen
            << ", \"step_seconds\": " << json_number(v.step_seconds)
            << ", \"data_loading_seconds\": " << json_number(v.data_seconds) << ", \"tps\": " << json_number(tps)
            << ", \"tflops\": " << json_number(flops_per_token_ * tps / 1e12)
            << ", \"mfu\": " << json_number(mfu_percent(tps))
            << ", \"rss_gib\": " << json_number(rss) << ", \"state_bytes\": " << v.state_bytes
            << ", \"epoch\": " << v.epoch
            << ", \"host_syncs\": " << v.host_syncs
            << ", \"comm_bytes\": {\"all_gather\": " << json_number(v.comm_bytes[0])
            << ", \"reduce_scatter\": " << json_number(v.comm_bytes[1])
            << ", \"all_reduce\": " << json_number(v.comm_bytes[2])
            << ", \"all_to_all\": " << json_number(v.comm_bytes[3]) << "}";
    if (!v.expert_load.empty()) {
      *jsonl_ << ", \"moe_load\": {";
      for (size_t i = 0; i < v.expert_load.size(); ++i)
        *jsonl_ << (i ? ", " : "") << "\"" << v.expert_load[i].first << "\": " << json_number(v.expert_load[i].second);
      *jsonl_ << "}";
    }
    *jsonl_ << "}\n";
    jsonl_->flush();
    check_outputs();
  }
  if (!should_log(v.step)) return;

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_log_).count();
  const double tps = static_cast<double>(tokens_since_log_) / (secs * non_dp_);
  const double tflops = static_cast<double>(flops_per_token_) * tps / 1e12;
  const double mfu = mfu_percent(tps);
  const MemoryStats mem = device_.memory_stats_and_reset();
  auto c = log::colors();
  log::info(std::string(c.red) + "step: " + log::format("%2.0f", static_cast<double>(v.step)) + "  " + c.green +
            "loss: " + log::format("%8.5f", v.loss) + "  " + c.orange + "grad_norm: " + log::format("%7.4f", v.grad_norm) + "  " +
            c.turquoise + "memory: " + log::format("%5.2f", mem.max_reserved_gib) + "GiB(" + log::format("%.2f", mem.max_reserved_pct) +
            "%)  " + c.blue + "tps: " + log::with_commas(std::llround(tps)) + "  " + c.cyan + "tflops: " +
            log::format("%.2f", tflops) + "  " + c.magenta + "mfu: " + log::format("%.2f", mfu) + "%" + c.reset);
  double load_mean = 0;
  if (!v.expert_load.empty()) {  // this step's, over the MoE layers of this rank's stages
    size_t worst = 0;
    for (size_t i = 0; i < v.expert_load.size(); ++i) {
      load_mean += v.expert_load[i].second / static_cast<double>(v.expert_load.size());
      if (v.expert_load[i].second > v.expert_load[worst].second) worst = i;
    }
    log::info("moe load (max/mean tokens per expert): " + log::format("%.2f", load_mean) + " over " +
              std::to_string(v.expert_load.size()) + " layers, worst " +
              log::format("%.2f", v.expert_load[worst].second) + " (" + v.expert_load[worst].first + ")");
  }
  if (tb_) {
    if (!v.expert_load.empty()) {
      std::vector<std::pair<std::string, double>> load{{"moe_load/mean", load_mean}};
      for (const auto& [layer, value] : v.expert_load) load.emplace_back("moe_load/" + layer, value);
      tb_->add_scalars(v.step, load);
    }
    tb_->add_scalars(v.step, {{"loss_metrics/global_avg_loss", v.loss},
                              {"loss_metrics/global_max_loss", v.max_loss},
                              {"grad_norm", v.grad_norm},
                              {"throughput(tps)", tps},
                              {"tflops", tflops},
                              {"mfu(%)", mfu},
                              {"time_metrics/end_to_end(s)", secs / static_cast<double>(steps_since_log_)},
                              {"time_metrics/data_loading(s)", data_seconds_since_log_ / static_cast<double>(steps_since_log_)},
                              {"time_metrics/data_loading(%)", 100.0 * data_seconds_since_log_ / secs},
                              {"memory/max_active(GiB)", mem.max_active_gib},
                              {"memory/max_active(%)", mem.max_active_pct},
                              {"memory/max_reserved(GiB)", mem.max_reserved_gib},
                              {"memory/max_reserved(%)", mem.max_reserved_pct},
                              {"memory/num_alloc_retries", static_cast<double>(mem.num_alloc_retries)},
                              {"memory/num_ooms", static_cast<double>(mem.num_ooms)},
                              {"n_tokens_seen", static_cast<double>(v.tokens_seen)},
                              {"lr", v.lr}});
    tb_->flush();
    check_outputs();
  }
  last_log_ = std::chrono::steady_clock::now();
  tokens_since_log_ = 0;
  data_seconds_since_log_ = 0;
  steps_since_log_ = 0;
}

void MetricsProcessor::log_validation(int64_t step, double loss, int64_t tokens, double seconds) {
  const double tps = static_cast<double>(tokens) / (std::max(seconds, 1e-9) * non_dp_);
  const MemoryStats mem = device_.memory_stats_and_reset();
  auto c = log::colors();
  log::info(std::string(c.yellow) + "validate step: " + log::format("%2.0f", static_cast<double>(step)) + "  " + c.green +
            "loss: " + log::format("%7.4f", loss) + "  " + c.turquoise + "memory: " + log::format("%5.2f", mem.max_reserved_gib) +
            "GiB(" + log::format("%.2f", mem.max_reserved_pct) + "%)  " + c.blue + "tps: " + log::with_commas(std::llround(tps)) +
            c.reset);
  if (jsonl_) {
    *jsonl_ << "{\"run_id\": " << run_id_ << ", \"validate_step\": " << step << ", \"validation_loss\": " << json_number(loss)
            << ", \"validation_tps\": " << json_number(tps) << "}\n";
    jsonl_->flush();
    check_outputs();
  }
  if (tb_) {
    tb_->add_scalars(step, {{"validation_metrics/loss", loss},
                            {"validation_metrics/throughput(tps)", tps},
                            {"validation_metrics/memory/max_active(GiB)", mem.max_active_gib},
                            {"validation_metrics/memory/max_active(%)", mem.max_active_pct},
                            {"validation_metrics/memory/max_reserved(GiB)", mem.max_reserved_gib},
                            {"validation_metrics/memory/max_reserved(%)", mem.max_reserved_pct}});
    tb_->flush();
    check_outputs();
  }
  last_log_ = std::chrono::steady_clock::now();  // validation time is not training throughput
}

}  // namespace titan::components
