// Context parallelism (parallelism.context_parallel_degree): each rank of the cp group holds a
// part of every sequence, and attention reaches the keys of the whole sequence by moving keys
// and values around the group.
//
// The sequence is cut in chunks. With the head-tail load balancer (torchtitan's "headtail") there
// are 2*cp chunks and rank r holds chunks r and 2*cp-1-r, so that every rank's queries see as many
// keys under the causal mask; without it there are cp chunks and rank r holds chunk r. A rank's
// tokens are its chunks in that order; RoPE rotates each at its global position.
//
// Attention, per rotate method (parallelism.context_parallel_rotate_method):
// - "allgather": the keys and values of the whole sequence are all-gathered once per layer; each
//   local chunk of queries attends to the keys before it. Backward gathers them again and
//   reduce-scatters their gradients to the ranks that hold them.
// - "alltoall": the keys and values travel around the ring, one rank's part per step, while the
//   queries attend to the part at hand; partial results are merged by their logsumexps.
//   Backward passes the keys and values around again with their gradients' running sums, which
//   come home after the last step.
// Documents (block-causal attention) are found on the whole sequence and masked in every part.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "titan/common/module.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed {

enum class CpRotate { AllGather, AllToAll };

// "allgather" or "alltoall"; throws std::invalid_argument otherwise.
CpRotate cp_rotate_from_string(const std::string& name);

class ContextParallel : public SequenceSplit {
 public:
  ContextParallel(Group group, bool headtail, CpRotate rotate);

  int size() const { return group_.size(); }
  int group_rank() const { return group_.rank(); }
  int64_t num_chunks() const { return headtail_ ? 2 * size() : size(); }
  // The global chunk indices `rank` holds, in the order its tokens hold them.
  std::vector<int64_t> chunks_of(int rank) const;

  at::Tensor positions(int64_t local_len, at::Device device) const override;
  // (B, T, ...) rows of whole sequences -> this rank's part (B, T/cp, ...).
  at::Tensor split(const at::Tensor& x) const;
  at::Tensor document_starts(const at::Tensor& tokens, int64_t eos) override;
  at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                       const at::Tensor& doc_starts) override;

  // Query-key pairs this rank's attention forward has scored so far per (batch row, head), as
  // the causal mask allows them: the load each rank carries (head-tail evens it).
  int64_t attention_pairs() const { return pairs_; }
  void count_pairs(int64_t n) { pairs_ += n; }
  Group& group() { return group_; }
  CpRotate rotate() const { return rotate_; }

 private:
  Group group_;
  bool headtail_;
  CpRotate rotate_;
  int64_t pairs_ = 0;
};

}  // namespace titan::distributed
