// The owner of a parallel model's parameters, applied from outside per part (embeddings, each
// block, norm + output), in the manner of FSDP2 on tensor-parallel shards. Every parameter has
// a layout (placement.h); each rank creates only its box of each parameter, with the values
// one process draws. Then:
// - FSDP / HSDP (dp_shard_cp > 1): a parameter's tensor-parallel share is sharded on dim 0
//   (padded to a multiple of the shard size); before a part runs, its parameters are
//   all-gathered in the compute dtype into one persistent unsharded buffer per parameter,
//   released after (reshard_after_forward) and gathered again for its backward, so that several
//   microbatches' graphs may be alive at once; the next part's gather is issued first
//   (prefetch). Gradients are reduce-scattered in float32 on a group of their own (so that
//   they overlap the next gathers), all-reduced over dp_replicate for HSDP, and added into the
//   float32 shards the optimizer owns.
// - DDP (dp_replicate only): parameters replicated; each part's gradients are all-reduced while
//   backward goes on.
// - Tensor parallelism: parameters Shard(dim) over "tp" are this rank's share; Partial
//   gradients (the norms under sequence parallelism) are all-reduced over "tp".
// Gradients are summed, not averaged: the loss is already divided by the global token count.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "titan/common/module.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/placement.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed {

struct DataParallelOptions {
  at::ScalarType param_dtype = at::kFloat;  // dtype parameters are gathered and used in
  std::vector<bool> reshard_after_forward;  // per part: free the gathered parameters after forward
  bool prefetch = true;
  // false: reduce gradients once per step, after the last microbatch (set_gradient_sync), holding
  // unsharded float32 gradients meanwhile.
  bool sync_every_microbatch = true;
  // Pipeline parallelism: the forwards and backwards of several microbatches interleave in a
  // step, so gathered parameters stay gathered through it (unless reshard_after_forward): the
  // first part's forward and a part's backward do not release them, the trainer calls
  // release_all() once the shards have changed.
  bool pipelined = false;
  // Parameters this rank holds as a copy of another pipeline rank's (a tied table on the last
  // stage): left out of grad_norm, which counts the original.
  std::vector<std::string> copies;
  // FSDP's float8 all-gather: these parameters (weights of float8 layers, tensorwise recipe) are
  // cast to float8 e4m3 shard by shard with one scale for the whole weight (its amax, the
  // maximum over the shard and tensor-parallel groups), gathered as float8 bytes, and handed to
  // their layer attached to a stand-in tensor (kernels::attach_float8_weight). The scale is
  // computed again only when the shard has changed: at the gather, one collective per part, or,
  // with float8_precompute, for every such parameter in one collective after each optimizer step.
  std::vector<std::string> float8_gather;
  bool float8_precompute = false;
  // Expert parallelism: these parameters (a MoE layer's experts, laid out Shard(0) over "ep" then
  // over "efsdp") are this rank's experts, computed where they are on the rows the other ep ranks
  // send it (expert_parallel.h). FSDP gathers and reduce-scatters them over efsdp, the ranks that
  // hold the same experts, as it does the others over dp_shard_cp; with efsdp 1
  // (expert_parallel_degree = dp_shard x cp) they are used as they are, never gathered, their
  // gradients this rank's experts' whole gradients already. HSDP sums them over dp_replicate.
  std::vector<std::string> local;
};

// Draws the initial value of a box [offsets, offsets + out.sizes()) of parameter `fqn` (global
// shape `shape`) into `out` (contiguous float32 on the CPU): the same values whichever rank
// draws which box.
using InitFn = std::function<void(const std::string& fqn, at::IntArrayRef shape, at::IntArrayRef offsets,
                                  at::Tensor& out)>;

struct Unit;  // one part's parameters and their state
struct Slot;  // one parameter and its state

class DataParallel final : public ForwardHooks {
 public:
  // `parts` may live on the meta device (global shapes); `layouts` has one entry per parameter of
  // `parts`, in order; FSDP shards over "dp_shard_cp" when its size is above 1. `install_hooks`
  // puts this object around the model's parts (and nullptr back when it is destroyed).
  DataParallel(std::vector<ModelPart> parts, std::vector<ParamLayout> layouts, InitFn init,
               std::function<void(ForwardHooks*)> install_hooks, DeviceMesh& mesh, at::Device device,
               DataParallelOptions options);
  ~DataParallel() override;

  // The tensors the optimizer updates, float32 (this rank's box, padded for FSDP), with FQNs.
  std::vector<at::Tensor> parameters() const;
  std::vector<std::string> parameter_names() const;
  const std::vector<ParamLayout>& layouts() const { return layouts_; }
  // This rank's box of each parameter (parameters() holds it in its first rows).
  std::vector<Box> boxes() const;
  // Per parameter: whether it is a copy (DataParallelOptions::copies), which checkpoints do not save.
  std::vector<bool> copies() const;

  // Whether the next backward reduces the gradients (see sync_every_microbatch); the trainer
  // turns it on for the last microbatch of a step.
  void set_gradient_sync(bool sync) { sync_ = sync; }

  // Frees every gathered part (their shards changed: the next use gathers them again).
  void release_all();

  // After each optimizer step (the shards changed): the float8 all-gather's scales are computed
  // again, here in one collective (float8_precompute) or at each part's next gather.
  void after_optimizer_step();

  // Call after each backward (every microbatch): waits for the gradient collectives and adds
  // the reduced gradients into parameters()'s .grad.
  void finish_backward();

  // Total L2 norm of the gradients over every rank (and pipeline stage), each element counted
  // once (float64 accumulation), as a float64 tensor of one element on the device (not read on the
  // host). The optimizer applies the clipping.
  at::Tensor grad_norm();

  // The full value of every parameter (gathered over every mesh it is split on), for tests and exports.
  std::vector<std::pair<std::string, at::Tensor>> full_state();

  void before(size_t part_index, const std::string& part) override;
  at::Tensor after(size_t part_index, const std::string& part, const at::Tensor& out) override;

  // Called from the autograd graph (public for the autograd functions in the .cpp).
  void pre_backward(size_t unit_index);
  void post_backward(size_t unit_index, std::vector<at::Tensor> full_grads);
  void post_backward_local(size_t unit_index, std::vector<at::Tensor> grads);

 private:
  void gather_start(size_t u);
  void gather_finish(size_t u, bool for_backward);
  void release(size_t u);
  void use_local(size_t u);  // the unit's expert-parallel slots, for this forward
  bool is_copy(const std::string& name) const;
  void update_float8_scales(const std::vector<Slot*>& slots);

  std::function<void(ForwardHooks*)> install_hooks_;
  DeviceMesh& mesh_;
  Group shard_, reduce_, replicate_, tp_, ep_, efsdp_, efsdp_reduce_;
  at::Device device_;
  DataParallelOptions options_;
  std::vector<ParamLayout> layouts_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<std::pair<std::shared_ptr<Pending>, std::function<void()>>> pending_grads_;
  bool sync_ = true;
};

}  // namespace titan::distributed
