// Expert parallelism (parallelism.expert_parallel_degree): the ranks of the ep group hold the
// experts of every mixture-of-experts layer in equal parts, rank r experts [r*E/ep, (r+1)*E/ep),
// and the tokens travel instead of the weights:
//
// 1. each rank routes its own tokens and counts the rows it has for each expert;
// 2. the counts are exchanged (an all-to-all of E integers), so that each rank knows how many
//    rows it receives from every other for each of its experts;
// 3. the rows go to the ranks holding their experts (an all-to-all of rows, no row dropped),
//    are put in order of local expert, and run through the local experts as grouped GEMMs;
// 4. the outputs come back the same way (the reverse all-to-all) to be combined per token.
//
// Backward runs the two all-to-alls the other way. titan.cpp's ep group is FSDP's (dp_shard x
// cp): an expert tensor sharded by FSDP on its first dimension is exactly this rank's experts,
// so expert parallelism keeps those shards where they are instead of gathering them
// (DataParallelOptions::local).
#pragma once

#include <ATen/ATen.h>

#include "titan/common/module.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed {

class ExpertParallel final : public ExpertDispatch {
 public:
  explicit ExpertParallel(Group group) : group_(std::move(group)) {}
  int size() const { return group_.size(); }
  at::Tensor run(const at::Tensor& x, const at::Tensor& counts, const LocalExperts& experts) override;

 private:
  Group group_;
};

}  // namespace titan::distributed
