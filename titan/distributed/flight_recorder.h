// A flight recorder for collectives: each rank keeps its last comm.trace_buf_size collectives
// (group, sequence number in the group, op, element count, dtype, start and end time). When a
// collective fails or times out, or the process dies of a fatal signal, the buffer is written
// to <dump>/<comm.save_traces_folder>/<comm.save_traces_file_prefix><rank> (JSON), and
// comm_report() reads every rank's file and names the rank and collective that fell behind.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace titan::distributed {

class FlightRecorder {
 public:
  static FlightRecorder& instance();
  // capacity 0 disables recording.
  void configure(size_t capacity, int rank, int world_size, const std::string& file_path);
  // A collective starts: returns its slot, to pass to finished()/failed().
  int64_t started(const std::string& group, int64_t seq, const char* op, const at::Tensor& t);
  void finished(int64_t slot);
  void failed(int64_t slot);
  // Writes the buffer; safe to call more than once (later calls overwrite).
  void dump(const std::string& reason);
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
  size_t capacity_ = 0, next_ = 0;
  int64_t total_ = 0;
  int rank_ = 0, world_ = 1;
  std::string path_;
};

// Reads the recorder files of every rank in `folder` (prefix `prefix`) and explains which rank
// fell behind or diverged, at which collective. Throws titan::Error when there is nothing to read.
std::string comm_report(const std::string& folder, const std::string& prefix = "rank_");

}  // namespace titan::distributed
