#include "titan/distributed/flight_recorder.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <algorithm>

#include "titan/common/error.h"

namespace titan::distributed {

namespace {

std::mutex g_mutex;

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

extern "C" void on_fatal_signal(int sig) {
  FlightRecorder::instance().dump_from_signal(std::string("fatal signal ") + std::to_string(sig));
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

FlightRecorder& FlightRecorder::instance() {
  static FlightRecorder r;
  return r;
}

void FlightRecorder::configure(size_t capacity, int rank, int world_size, const std::string& file_path,
                               int64_t run_id) {
  std::lock_guard<std::mutex> lock(g_mutex);
  run_id_ = run_id;
  std::error_code ec;
  std::filesystem::remove(file_path, ec);  // a dump of an earlier run must not be mistaken for ours
  capacity_ = capacity;
  ring_.assign(capacity, Record{});
  next_ = 0;
  total_ = 0;
  rank_ = rank;
  world_ = world_size;
  path_ = file_path;
}

int64_t FlightRecorder::started(const std::string& group, int64_t seq, const char* op, const at::Tensor& t) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (capacity_ == 0) return -1;
  poll_locked();
  const int64_t slot = total_++;
  Record& r = ring_[slot % capacity_];
  r.group = group;
  r.seq = seq;
  r.op = op;
  r.numel = t.defined() ? t.numel() : 0;
  r.dtype = t.defined() ? std::string(c10::toString(t.scalar_type())) : "";
  r.start = now_seconds();
  r.end = -1;
  r.failed = false;
  return slot;
}

void FlightRecorder::finished(int64_t slot) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || total_ - slot > static_cast<int64_t>(capacity_)) return;  // overwritten already
  ring_[slot % capacity_].end = now_seconds();
}

void FlightRecorder::finished_when(int64_t slot, std::function<bool()> done) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || capacity_ == 0) return;
  watched_.emplace_back(slot, std::move(done));
  poll_locked();
}

void FlightRecorder::poll_locked() {
  std::erase_if(watched_, [&](auto& w) {
    if (total_ - w.first > static_cast<int64_t>(capacity_)) return true;  // overwritten already
    if (!w.second()) return false;
    ring_[w.first % capacity_].end = now_seconds();
    return true;
  });
}

double FlightRecorder::oldest_pending_seconds() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (capacity_ == 0) return 0;
  poll_locked();
  const double now = now_seconds();
  double oldest = 0;
  for (const auto& [slot, done] : watched_) oldest = std::max(oldest, now - ring_[slot % capacity_].start);
  return oldest;
}

void FlightRecorder::failed(int64_t slot) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || total_ - slot > static_cast<int64_t>(capacity_)) return;
  ring_[slot % capacity_].failed = true;
}

void FlightRecorder::dump(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mutex);
  write_locked(reason, /*poll=*/true);
}

void FlightRecorder::dump_from_signal(const std::string& reason) {
  // No polling here: asking NCCL's work whether it finished takes its mutex and calls CUDA, which a
  // signal handler must not (NCCL's watchdog aborts from inside its own thread, holding them).
  // Entries the last poll saw pending stay "pending".
  std::unique_lock<std::mutex> lock(g_mutex, std::try_to_lock);
  if (lock.owns_lock()) write_locked(reason, /*poll=*/false);
}

void FlightRecorder::write_locked(const std::string& reason, bool poll) {
  if (path_.empty() || capacity_ == 0) return;
  if (poll) poll_locked();
  nlohmann::json j;
  j["rank"] = rank_;
  j["world_size"] = world_;
  j["reason"] = reason;
  j["run_id"] = run_id_;
  j["dumped_at"] = now_seconds();
  j["entries"] = nlohmann::json::array();
  const int64_t first = std::max<int64_t>(0, total_ - static_cast<int64_t>(capacity_));
  for (int64_t i = first; i < total_; ++i) {
    const Record& r = ring_[i % capacity_];
    j["entries"].push_back({{"group", r.group}, {"seq", r.seq}, {"op", r.op}, {"numel", r.numel}, {"dtype", r.dtype},
                            {"start", r.start}, {"end", r.end < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.end)},
                            {"state", r.failed ? "failed" : r.end < 0 ? "pending" : "completed"}});
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream f(tmp);
    f << j.dump(1) << "\n";
  }
  std::filesystem::rename(tmp, path_, ec);
}

void FlightRecorder::install_fatal_signal_dump() {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, on_fatal_signal);
}

}  // namespace titan::distributed
