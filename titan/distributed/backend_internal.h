// Internal to process_group*.cpp: the c10d objects behind Group, Pending and World.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <string>

namespace titan::distributed {

struct BackendHandle {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::string name;  // for the flight recorder
  int64_t seq = 0;   // collectives issued on this group so far
  // NCCL: wait() only orders the current CUDA stream after the collective; it has finished
  // when the work says so (polled by the flight recorder), not when wait() returns.
  bool completes_on_device = false;
  // The world's collective timeout (milliseconds), shared by all its groups.
  std::shared_ptr<std::atomic<int64_t>> timeout_ms;
  std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(timeout_ms ? timeout_ms->load() : 300000); }
  // Collectives issued on the world's groups so far (TestHooks' skip_collective counts them).
  std::shared_ptr<std::atomic<int64_t>> collectives_in_world;
};
struct WorkHandle {
  c10::intrusive_ptr<c10d::Work> work;
  int64_t record = -1;  // flight-recorder slot
  bool completes_on_device = false;
  // Point-to-point work: waited with this timeout (Gloo's own is the one it was built with).
  std::chrono::milliseconds wait_timeout{0};
};
struct StoreHandle {
  c10::intrusive_ptr<c10d::Store> store;
};

// Gloo over TCP for CPU tensors (process_group.cpp).
std::shared_ptr<BackendHandle> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                 int size, std::chrono::milliseconds timeout,
                                                 const std::string& master_addr);
// NCCL for CUDA tensors (process_group_nccl.cpp; throws where CUDA code is not built).
std::shared_ptr<BackendHandle> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                 int size, std::chrono::milliseconds timeout);

}  // namespace titan::distributed
