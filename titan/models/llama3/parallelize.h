// Llama 3's parallel plan: the shared decoder's (titan/models/common/decoder_parallelize.h),
// torchtitan's plan for Llama 3.
#pragma once

#include "titan/models/common/decoder_parallelize.h"
#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {

using models::ParallelPlan;
using common::param_layouts;
using common::parallelize;

inline void validate_plan(const ModelArgs& args, const PlanCheck& check, const distributed::ParallelDims& dims) {
  common::validate_plan(args.decoder(), check, dims);
}

}  // namespace titan::models::llama3
