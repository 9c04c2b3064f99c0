#include "titan/distributed/process_group.h"

// ProcessGroupGloo.hpp needs gloo's headers to compile. The wheel does not ship them, so they
// come from Debian's libgloo-dev (headers only; nothing of it is linked). Every gloo type in
// ProcessGroupGloo is held through a pointer, so the class layout does not depend on the gloo
// version, and we call only its exported constructor and device factories (docs/fsdp.md).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/record_function.h>

#include <chrono>
#include <cstdio>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include "titan/common/error.h"
#include "titan/common/test_hooks.h"
#include "titan/distributed/backend_internal.h"
#include "titan/distributed/flight_recorder.h"

namespace titan::distributed {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// An integer environment variable within [lo, hi]; titan::Error naming it otherwise.
int env_int(const char* name, int fallback, long long lo = 0, long long hi = INT_MAX) {
  const char* v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0')
    throw Error(std::string("environment variable ") + name + " = \"" + v + "\" is not an integer",
                "set it to a whole number, as torchrun, mpirun and srun do");
  if (errno == ERANGE || x < lo || x > hi)
    throw Error(std::string("environment variable ") + name + " = " + v + " is out of range: it must be from " +
                    std::to_string(lo) + " to " + std::to_string(hi),
                "set it to a value in that range");
  return static_cast<int>(x);
}

}  // namespace

DistEnv read_dist_env() {
  DistEnv e;
  if (env("RANK") && env("WORLD_SIZE")) {
    e.launcher = env("TORCHELASTIC_RUN_ID") ? "torchrun" : "env";
    e.rank = env_int("RANK", 0);
    e.world_size = env_int("WORLD_SIZE", 1, 1);
    e.local_rank = env_int("LOCAL_RANK", 0);
    e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size);
  } else if (env("OMPI_COMM_WORLD_RANK")) {
    e.launcher = "mpirun";
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    e.local_world_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", e.world_size);
  } else if (env("PMI_RANK") && env("PMI_SIZE")) {
    e.launcher = "mpirun";
    e.rank = env_int("PMI_RANK", 0);
    e.world_size = env_int("PMI_SIZE", 1);
    e.local_rank = env_int("MPI_LOCALRANKID", 0);
    e.local_world_size = env_int("MPI_LOCALNRANKS", e.world_size);
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    e.launcher = "srun";
    e.rank = env_int("SLURM_PROCID", 0);
    e.world_size = env_int("SLURM_NTASKS", 1);
    e.local_rank = env_int("SLURM_LOCALID", 0);
    // SLURM_TASKS_PER_NODE looks like "4(x2),3": the first number is this layout's per-node count.
    const char* tpn = env("SLURM_TASKS_PER_NODE");
    e.local_world_size = tpn ? std::atoi(tpn) : e.world_size;
  }
  if (const char* a = env("MASTER_ADDR")) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port, 1, 65535);
  if (e.world_size < 1 || e.rank < 0 || e.rank >= e.world_size)
    throw Error("launcher environment: rank " + std::to_string(e.rank) + " of world size " +
                    std::to_string(e.world_size) + " is impossible",
                "launch with torchrun, mpirun or srun, or set RANK and WORLD_SIZE consistently");
  if (e.world_size > 1 && e.local_world_size < e.world_size && !env("MASTER_ADDR"))
    throw Error("launcher environment: " + std::to_string(e.world_size) + " processes on several nodes but MASTER_ADDR is not set",
                "export MASTER_ADDR (the first node's address) and MASTER_PORT on every node");
  return e;
}


CommStats& comm_stats() {
  static CommStats stats;
  return stats;
}

void Pending::wait() {
  if (!work_) return;
  RECORD_USER_SCOPE("comm:wait");
  auto work = std::move(work_);
  try {
    if (work->work) {
      if (work->wait_timeout.count() > 0) {
        if (!work->work->wait(work->wait_timeout))
          throw std::runtime_error("a point-to-point message did not come within " +
                                   std::to_string(work->wait_timeout.count() / 1000) + " s");
      } else {
        work->work->wait();
      }
    }
  } catch (...) {
    FlightRecorder::instance().failed(work->record);
    throw;
  }
  if (work->completes_on_device && work->work) {
    // The current stream now waits for the collective; it is finished when the work says so.
    auto w = work->work;
    FlightRecorder::instance().finished_when(work->record, [w] { return w->isCompleted(); });
  } else {
    FlightRecorder::instance().finished(work->record);
  }
}

Group::Group(std::shared_ptr<BackendHandle> backend, std::vector<int> ranks, int my_index)
    : backend_(std::move(backend)), ranks_(std::move(ranks)), my_index_(my_index) {}

namespace {

void count(Collective c, double bytes) {
  auto& s = comm_stats();
  s.bytes[static_cast<size_t>(c)] += bytes;
  s.calls[static_cast<size_t>(c)] += 1;
}

// Records the collective, then runs `issue` unless the test hook TITAN_TEST_SKIP_COLLECTIVE=R:N
// skips it (rank R's N-th collective, counted from 1 over the world's groups: hang diagnosis).
template <typename F>
Pending run_collective(BackendHandle& b, int global_rank, const char* op, const at::Tensor& t, F issue) {
  const TestHooks& hooks = TestHooks::get();
  if (hooks.skip_collective_rank == global_rank && b.collectives_in_world &&
      ++*b.collectives_in_world == hooks.skip_collective_number)
    return {};  // as if the code never issued it
  const int64_t seq = b.seq++;
  RECORD_USER_SCOPE(std::string("comm:") + op);
  const int64_t slot = FlightRecorder::instance().started(b.name, seq, op, t);
  try {
    return Pending(std::make_shared<WorkHandle>(WorkHandle{issue(), slot, b.completes_on_device}));
  } catch (...) {
    FlightRecorder::instance().failed(slot);
    throw;
  }
}

double nbytes(const at::Tensor& t) { return static_cast<double>(t.numel()) * static_cast<double>(t.element_size()); }

}  // namespace

Pending Group::all_gather(at::Tensor out, at::Tensor in) {
  if (trivial()) {
    if (!out.is_same(in)) out.copy_(in.view(out.sizes()));
    return {};
  }
  TORCH_CHECK(out.numel() == in.numel() * size(), "all_gather: output size mismatch");
  const double n = size();
  count(Collective::AllGather, nbytes(out) * (n - 1) / n);
  c10d::AllgatherOptions o;
  o.timeout = backend_->timeout();
  // c10d wants output dim 0 = size() * input dim 0: hand it flat views.
  at::Tensor flat_out = out.view({-1}), flat_in = in.contiguous().view({-1});
  return run_collective(*backend_, ranks_[my_index_], "all_gather", flat_in,
                        [&] { return backend_->backend->_allgather_base(flat_out, flat_in, o); });
}

Pending Group::reduce_scatter_sum(at::Tensor out, at::Tensor in) {
  if (trivial()) {
    out.copy_(in.view(out.sizes()));
    return {};
  }
  TORCH_CHECK(in.numel() == out.numel() * size(), "reduce_scatter: input size mismatch");
  const double n = size();
  count(Collective::ReduceScatter, nbytes(in) * (n - 1) / n);
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = backend_->timeout();
  at::Tensor flat_out = out.view({-1}), flat_in = in.contiguous().view({-1});
  return run_collective(*backend_, ranks_[my_index_], "reduce_scatter", flat_in,
                        [&] { return backend_->backend->_reduce_scatter_base(flat_out, flat_in, o); });
}

Pending Group::all_reduce(at::Tensor t, bool max) {
  if (trivial()) return {};
  const double n = size();
  count(Collective::AllReduce, nbytes(t) * 2 * (n - 1) / n);
  c10d::AllreduceOptions o;
  o.reduceOp = max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
  o.timeout = backend_->timeout();
  std::vector<at::Tensor> ts{t};
  return run_collective(*backend_, ranks_[my_index_], max ? "all_reduce_max" : "all_reduce", t,
                        [&] { return backend_->backend->allreduce(ts, o); });
}

Pending Group::all_to_all(at::Tensor out, at::Tensor in, std::vector<int64_t> out_splits,
                          std::vector<int64_t> in_splits) {
  TORCH_CHECK(static_cast<int>(out_splits.size()) == size() && static_cast<int>(in_splits.size()) == size(),
              "all_to_all: one split per member");
  if (trivial()) {
    if (!out.is_same(in)) out.copy_(in);
    return {};
  }
  const double row = in.size(0) ? nbytes(in) / static_cast<double>(in.size(0)) : 0;
  int64_t sent = 0;
  for (int j = 0; j < size(); ++j)
    if (j != my_index_) sent += in_splits[j];
  count(Collective::AllToAll, row * static_cast<double>(sent));
  c10d::AllToAllOptions o;
  o.timeout = backend_->timeout();
  return run_collective(*backend_, ranks_[my_index_], "all_to_all", in, [&] {
    return backend_->backend->alltoall_base(out, in, out_splits, in_splits, o);
  });
}

Pending Group::broadcast(at::Tensor t, int root_index) {
  if (trivial()) return {};
  count(Collective::Broadcast, nbytes(t));
  c10d::BroadcastOptions o;
  o.rootRank = root_index;
  o.timeout = backend_->timeout();
  std::vector<at::Tensor> ts{t};
  return run_collective(*backend_, ranks_[my_index_], "broadcast", t,
                        [&] { return backend_->backend->broadcast(ts, o); });
}

namespace {

// A send or a receive: recorded under `channel` #seq, waited with the collective timeout on Gloo.
template <typename F>
Pending point_to_point(BackendHandle& b, const char* scope, const at::Tensor& t, const std::string& channel,
                       int64_t seq, F issue) {
  TORCH_CHECK(t.is_contiguous(), scope, ": the tensor must be contiguous");
  RECORD_USER_SCOPE(scope);
  const int64_t slot = FlightRecorder::instance().started(channel, seq, "p2p", t);
  try {
    auto work = std::make_shared<WorkHandle>(WorkHandle{issue(), slot, b.completes_on_device});
    if (!b.completes_on_device) work->wait_timeout = b.timeout();  // NCCL: its own watchdog
    return Pending(work);
  } catch (...) {
    FlightRecorder::instance().failed(slot);
    throw;
  }
}

}  // namespace

Pending Group::send(const at::Tensor& t, int peer, int tag, const std::string& channel, int64_t seq) {
  TORCH_CHECK(!trivial() && peer >= 0 && peer < size() && peer != my_index_, "send: bad peer ", peer);
  std::vector<at::Tensor> ts{t};
  return point_to_point(*backend_, "comm:send", t, channel, seq, [&] { return backend_->backend->send(ts, peer, tag); });
}

Pending Group::recv(at::Tensor& t, int peer, int tag, const std::string& channel, int64_t seq) {
  TORCH_CHECK(!trivial() && peer >= 0 && peer < size() && peer != my_index_, "recv: bad peer ", peer);
  std::vector<at::Tensor> ts{t};
  return point_to_point(*backend_, "comm:recv", t, channel, seq, [&] { return backend_->backend->recv(ts, peer, tag); });
}

void Group::begin_p2p_batch() {
  if (!trivial() && backend_->completes_on_device) backend_->backend->startCoalescing();
}

Pending Group::end_p2p_batch() {
  if (trivial() || !backend_->completes_on_device) return {};
  return Pending(std::make_shared<WorkHandle>(WorkHandle{backend_->backend->endCoalescing(), -1, true}));
}

std::shared_ptr<BackendHandle> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                 std::chrono::milliseconds timeout, const std::string& master_addr) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (master_addr == "127.0.0.1" || master_addr == "localhost")
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
  auto handle = std::make_shared<BackendHandle>();
  handle->backend = pg;
  return handle;
}

World::World(const DistEnv& env, at::Device device, std::chrono::milliseconds init_timeout)
    : env_(env), device_(device), timeout_(init_timeout),
      collective_timeout_ms_(std::make_shared<std::atomic<int64_t>>(init_timeout.count())),
      collectives_issued_(std::make_shared<std::atomic<int64_t>>(0)) {
  if (env.world_size == 1) return;
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  // Under torchrun the agent already serves the store on MASTER_PORT.
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  o.isServer = env.rank == 0 && !(agent_store && std::string(agent_store) == "True");
  o.numWorkers = env.world_size;
  o.waitWorkers = true;
  o.timeout = init_timeout;
  c10::intrusive_ptr<c10d::Store> store;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    const auto* c = dynamic_cast<const c10::Error*>(&e);
    const std::string what = c ? c->what_without_backtrace() : e.what();
    if (o.isServer && (what.find("EADDRINUSE") != std::string::npos || what.find("already in use") != std::string::npos))
      throw Error("MASTER_PORT " + std::to_string(env.master_port) +
                      " is already in use on this host (another job, or an earlier run still ending), so rank 0 "
                      "cannot serve the rendezvous there",
                  "choose a free port: torchrun --master-port P, or export MASTER_PORT=P for every process");
    throw Error("rank " + std::to_string(env.rank) + " could not meet the other processes at " + where +
                    " within comm.init_timeout_seconds (" +
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(init_timeout).count()) +
                    " s): " + what.substr(0, what.find('\n')),
                "check MASTER_ADDR/MASTER_PORT and that every process was started");
  }
  // A torchrun restart keeps the agent's store: keys of this attempt get their own prefix.
  if (o.isServer == false && std::getenv("TORCHELASTIC_RESTART_COUNT"))
    store = c10::make_intrusive<c10d::PrefixStore>(
        std::string("/worker/attempt_") + std::getenv("TORCHELASTIC_RESTART_COUNT"), store);
  // Each rank claims its number in the store: a second claim means this store belongs to another
  // job (rank 0 of this one could not take MASTER_PORT, and the port is another job's).
  if (store->add("titan/claimed_rank_" + std::to_string(env.rank), 1) > 1)
    throw Error("rank " + std::to_string(env.rank) + " found another job's rendezvous at " + where +
                    " (its rank " + std::to_string(env.rank) + " already joined there)",
                "choose a free MASTER_PORT for this job (torchrun --master-port P, or export MASTER_PORT=P)");
  store_ = std::make_shared<StoreHandle>(StoreHandle{store});
  std::vector<int> ranks(env.world_size);
  for (int i = 0; i < env.world_size; ++i) ranks[i] = i;
  all_ = new_group(ranks, "world");
}

World::~World() = default;

std::chrono::milliseconds nccl_watchdog_timeout(std::chrono::milliseconds timeout) {
  return timeout + std::max<std::chrono::milliseconds>(std::chrono::seconds(30), timeout / 2);
}

void World::set_collective_timeout(std::chrono::milliseconds timeout) {
  collective_timeout_ms_->store(timeout.count());
  // Gloo takes each collective's timeout from its options; NCCL ignores that and times its work
  // by the process group's own option, which is set here for every group made so far. NCCL's
  // watchdog is the backstop: the step's read (components::read_to_host) gives up first, once a
  // collective has run for `timeout`, and the comm-failure report runs; the watchdog would abort
  // the process unreported.
  for (const auto& weak : nccl_backends_)
    if (auto b = weak.lock()) b->backend->setTimeout(nccl_watchdog_timeout(timeout));
}

void World::abort_device_groups() {
  for (const auto& weak : nccl_backends_)
    if (auto b = weak.lock()) {
      try {
        b->backend->abort();
      } catch (...) {  // already aborted by its watchdog: nothing left to free
      }
    }
}
std::chrono::milliseconds World::collective_timeout() const {
  return std::chrono::milliseconds(collective_timeout_ms_->load());
}

Group World::new_group(const std::vector<int>& ranks, const std::string& name) {
  const int id = groups_made_++;
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == env_.rank) index = static_cast<int>(i);
  if (index < 0 || ranks.size() <= 1) return Group();
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("titan/" + std::to_string(id) + "/" + name, store_->store);
  const int n = static_cast<int>(ranks.size());
  auto backend = device_.is_cuda() ? make_nccl_backend(prefixed, index, n, timeout_)
                                   : make_gloo_backend(prefixed, index, n, timeout_, env_.master_addr);
  std::string members;
  for (int r : ranks) {
    if (!members.empty()) members += ",";
    members += std::to_string(r);
  }
  backend->name = name + "[" + members + "]";
  backend->timeout_ms = collective_timeout_ms_;
  backend->collectives_in_world = collectives_issued_;
  if (backend->completes_on_device) nccl_backends_.push_back(backend);
  return Group(backend, ranks, index);
}

}  // namespace titan::distributed
