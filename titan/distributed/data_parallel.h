// Data parallelism applied to a model from outside, per part (embeddings, each block, norm +
// output), in the manner of FSDP2:
// - FSDP / HSDP: each parameter is sharded on dim 0 over the shard group (padded to a multiple
//   of its size); before a part runs its parameters are all-gathered in the compute dtype,
//   after it they are released (reshard_after_forward) and gathered again for its backward;
//   gradients are reduce-scattered in float32 (and all-reduced over the replicate group for
//   HSDP) while backward goes on; float32 shards are what the optimizer owns. The next part's
//   all-gather is issued before the current part runs (prefetch).
// - DDP: parameters replicated; each part's gradients are all-reduced while backward goes on.
// Gradients are summed, not averaged: the loss is already divided by the global token count.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "titan/distributed/process_group.h"
#include "titan/models/llama3/model.h"

namespace titan::distributed {

struct DataParallelOptions {
  at::ScalarType param_dtype = at::kFloat;   // dtype parameters are gathered and used in
  bool reshard_after_forward = true;         // blocks and embeddings
  bool reshard_output_after_forward = false; // norm + output (needed again at once by backward)
  bool prefetch = true;
  uint64_t seed = 0;                         // initialisation (per parameter name)
};

struct Unit;  // one part's parameters and their state

class DataParallel final : public models::llama3::ForwardHooks {
 public:
  // `model` may live on the meta device: parameters are created here, initialised by name
  // (models::llama3::init_value) and sharded, on `device`. shard / replicate may be trivial.
  DataParallel(models::llama3::Transformer& model, Group shard, Group replicate, at::Device device,
               DataParallelOptions options);
  ~DataParallel() override;

  // The parameters the optimizer updates: float32 shards (FSDP) or full replicas (DDP).
  std::vector<at::Tensor> parameters() const;
  // FQN of each entry of parameters(), and its full (unsharded) shape.
  std::vector<std::string> parameter_names() const;

  // Call after each backward (every microbatch): waits for the gradient collectives and adds
  // the reduced gradients into parameters()'s .grad.
  void finish_backward();

  // Total L2 norm of the gradients over all shards (the optimizer applies the clipping).
  double grad_norm();

  // The full value of every parameter (gathered), for tests and exports.
  std::vector<std::pair<std::string, at::Tensor>> full_state();

  void before(size_t part_index, const std::string& part) override;
  at::Tensor after(size_t part_index, const std::string& part, const at::Tensor& out) override;

  // Called from the autograd graph (public for the autograd functions in the .cpp).
  void pre_backward(size_t unit_index);
  void post_backward(size_t unit_index, std::vector<at::Tensor> full_grads);

 private:
  void gather_start(size_t u);
  void gather_finish(size_t u, bool for_backward);
  void release(size_t u);

  models::llama3::Transformer& model_;
  Group shard_, replicate_;
  at::Device device_;
  DataParallelOptions options_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<std::pair<std::shared_ptr<Pending>, std::function<void()>>> pending_grads_;
};

}  // namespace titan::distributed
