// The decoder's parallel plan, applied in torchtitan's order: tensor parallelism (with sequence
// and loss parallelism), the fused kernels (compile), activation checkpointing, then data
// parallelism (FSDP/HSDP/DDP) and its precision. Everything else only sees the model's hooks
// (titan/common/module.h) and parameter layouts (distributed/placement.h).
#pragma once

#include <vector>

#include "titan/distributed/device_mesh.h"
#include "titan/models/common/decoder.h"
#include "titan/models/registry.h"

namespace titan::models::common {

// Every parameter's layout on the mesh: tensor-parallel shards (column-wise wq wk wv w1 w3 and
// output, row-wise wo w2 and tok_embeddings, Partial gradients for the norms: the
// sequence-parallel ones and the per-head q/k norms), then FSDP's Shard(0) over dp_shard_cp.
// In the order of model.parts().
std::vector<distributed::ParamLayout> param_layouts(Decoder& model, const distributed::ParallelDims& dims);

// Throws titan::Error, naming the key, for a layout this model cannot split: heads, key/value
// heads, sequence length, vocabulary or FFN size not divisible by the tensor-parallel degree.
void validate_plan(const DecoderArgs& args, const PlanCheck& check, const distributed::ParallelDims& dims);

// Applies the plan. `model` is on the meta device when the mesh has more than one rank (each
// rank then creates only its own slices of the parameters, from `seed`), else on `device` with
// its weights. `compute_dtype` is what mixed precision computes in on this device.
// `parts_held` (pipeline parallelism): the indices in model.parts() of this rank's stages; only
// those are materialised. Empty: every part.
ParallelPlan parallelize(Decoder& model, const ParallelizeOptions& options, distributed::DeviceMesh& mesh,
                         at::Device device, at::ScalarType compute_dtype, uint64_t seed,
                         const std::vector<size_t>& parts_held = {});

}  // namespace titan::models::common
