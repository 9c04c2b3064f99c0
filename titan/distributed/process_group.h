// Processes and the groups they talk in. Reads the launcher's environment (torchrun, mpirun,
// srun), meets the other processes through a c10d TCPStore, and builds c10d process groups:
// Gloo for CPU tensors, NCCL for CUDA tensors. Group wraps one of them with the few
// collectives titan.cpp uses, each counting the bytes it moves.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace titan::distributed {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // torchrun, mpirun, srun or none
};

// The environment of this process. Throws titan::Error for inconsistent variables.
DistEnv read_dist_env();

enum class Collective { AllGather, ReduceScatter, AllReduce, Broadcast, AllToAll, kCount };

// Bytes this process put on the wire per collective kind, as the ring algorithms send them:
// all-gather and reduce-scatter (n-1)/n of the full buffer, all-reduce 2(n-1)/n, all-to-all
// the rows sent to the other members.
struct CommStats {
  std::array<double, static_cast<size_t>(Collective::kCount)> bytes{};
  std::array<int64_t, static_cast<size_t>(Collective::kCount)> calls{};
};
CommStats& comm_stats();

// A pending collective; wait() blocks until it is done (and rethrows its error).
struct WorkHandle;
class Pending {
 public:
  Pending() = default;
  explicit Pending(std::shared_ptr<WorkHandle> work) : work_(std::move(work)) {}
  void wait();  // no-op when nothing is pending
  bool valid() const { return work_ != nullptr; }

 private:
  std::shared_ptr<WorkHandle> work_;
};

struct BackendHandle;
class Group {
 public:
  Group() = default;  // a group of one: every collective is a no-op
  Group(std::shared_ptr<BackendHandle> backend, std::vector<int> ranks, int my_index);

  int size() const { return static_cast<int>(ranks_.size()); }
  int rank() const { return my_index_; }           // index of this process in the group
  const std::vector<int>& ranks() const { return ranks_; }  // global ranks
  bool trivial() const { return size() <= 1; }

  // out: size()*in.numel() elements, rank-major. In place when out aliases nothing.
  Pending all_gather(at::Tensor out, at::Tensor in);
  // in: size()*out.numel() elements, rank-major; out gets this rank's block, summed.
  Pending reduce_scatter_sum(at::Tensor out, at::Tensor in);
  Pending all_reduce(at::Tensor t, bool max = false);  // sum (or max), in place
  Pending broadcast(at::Tensor t, int root_index);
  // Rows of `in` (first dim) to each member in turn: in_splits[j] rows to member j; `out` gets
  // out_splits[j] rows from member j, member-major. Both contiguous.
  Pending all_to_all(at::Tensor out, at::Tensor in, std::vector<int64_t> out_splits, std::vector<int64_t> in_splits);
  // Point to point (pipeline parallelism): `t` to, or into `t` from, the member `peer` (its index
  // in this group). `channel` and `seq` name the message in the flight recorder, the same on
  // both ends (e.g. "pp activations stage 0 -> stage 1", #3), so that a message that never
  // comes is reported by the stages it links. A wait gives up after the world's collective timeout.
  Pending send(const at::Tensor& t, int peer, int tag, const std::string& channel, int64_t seq);
  Pending recv(at::Tensor& t, int peer, int tag, const std::string& channel, int64_t seq);
  // Brackets sends and receives that must start together (NCCL runs them as one group, so that
  // two ranks that each send before they receive do not wait on each other); a no-op on Gloo,
  // whose sends never wait for the receiver. end_p2p_batch returns the batch's work on NCCL.
  void begin_p2p_batch();
  Pending end_p2p_batch();

 private:
  std::shared_ptr<BackendHandle> backend_;
  std::vector<int> ranks_{0};
  int my_index_ = 0;
};


// The processes of one job and the store they meet through.
// NCCL's own watchdog timeout for a collective timeout: later than it (by half, at least 30 s), so
// that the host, waiting at most `timeout`, reports a stuck collective before the watchdog kills
// the process.
std::chrono::milliseconds nccl_watchdog_timeout(std::chrono::milliseconds timeout);

class World {
 public:
  // Single-process world when env.world_size == 1; else connects (waits up to `init_timeout`).
  World(const DistEnv& env, at::Device device, std::chrono::milliseconds init_timeout);
  ~World();
  const DistEnv& env() const { return env_; }
  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  Group& all() { return all_; }
  // A group of the given global ranks (ascending). Every process must call this for every
  // group, in the same order, member or not; non-members get a trivial group back.
  Group new_group(const std::vector<int>& ranks, const std::string& name);
  // How long any collective of this world's groups may take before it fails
  // (comm.init_timeout_seconds until the trainer sets comm.train_timeout_seconds after the first
  // step). Shared by every group made from this world, those made earlier included.
  void set_collective_timeout(std::chrono::milliseconds timeout);
  std::chrono::milliseconds collective_timeout() const;
  // NCCL only: ends every group's communicators at once (after a stuck collective, so that the
  // process can exit instead of waiting for work that never finishes). Gloo: nothing.
  void abort_device_groups();

 private:
  DistEnv env_;
  at::Device device_;
  std::chrono::milliseconds timeout_;  // the backends' own (built once, at the init timeout)
  std::shared_ptr<std::atomic<int64_t>> collective_timeout_ms_;
  std::shared_ptr<std::atomic<int64_t>> collectives_issued_;  // by this process, over every group
  std::vector<std::weak_ptr<BackendHandle>> nccl_backends_;     // whose own timeout follows the world's
  std::shared_ptr<struct StoreHandle> store_;
  Group all_;
  int groups_made_ = 0;
};

}  // namespace titan::distributed
