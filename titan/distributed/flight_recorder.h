// A flight recorder for collectives: each rank keeps its last comm.trace_buf_size collectives
// (group, sequence number in the group, op, element count, dtype, start and end time). When a
// collective fails or times out, or the process dies of a fatal signal, the buffer is written
// to <dump>/<comm.save_traces_folder>/<comm.save_traces_file_prefix><rank> (JSON), and
// comm_report() reads every rank's file and names the rank and collective that fell behind.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "titan/distributed/comm_report.h"

namespace titan::distributed {

class FlightRecorder {
 public:
  static FlightRecorder& instance();
  // capacity 0 disables recording.
  // run_id is the same on every rank of one run: reports ignore dumps of other runs, and this
  // rank's dump of an earlier run is deleted here.
  void configure(size_t capacity, int rank, int world_size, const std::string& file_path, int64_t run_id);
  // A collective starts: returns its slot, to pass to finished()/failed().
  int64_t started(const std::string& group, int64_t seq, const char* op, const at::Tensor& t);
  void finished(int64_t slot);
  // The collective is finished once `done` says so (a device-side collective that the host only
  // queued): checked at every later start and before a dump.
  void finished_when(int64_t slot, std::function<bool()> done);
  void failed(int64_t slot);
  // How long the oldest collective queued on the device (finished_when) has been running, in
  // seconds; 0 when none is. Polls them first (not from a signal handler).
  double oldest_pending_seconds();
  // Writes the buffer; safe to call more than once (later calls overwrite).
  void dump(const std::string& reason);
  void dump_from_signal(const std::string& reason);  // gives up instead of waiting for the lock
  int64_t run_id() const { return run_id_; }
  // Best effort from a signal handler: no allocation-free guarantee, but it is the last act.
  void install_fatal_signal_dump();
  const std::string& file_path() const { return path_; }

 private:
  struct Record {
    std::string group;
    int64_t seq = 0;
    const char* op = "";
    int64_t numel = 0;
    std::string dtype;
    double start = 0, end = -1;
    bool failed = false;
  };
  std::vector<Record> ring_;
  std::vector<std::pair<int64_t, std::function<bool()>>> watched_;
  void poll_locked();
  size_t capacity_ = 0, next_ = 0;
  int64_t total_ = 0;
  int rank_ = 0, world_ = 1;
  int64_t run_id_ = 0;
  std::string path_;
  void write_locked(const std::string& reason, bool poll);
};

}  // namespace titan::distributed
