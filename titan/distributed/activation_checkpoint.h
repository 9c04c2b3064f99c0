// Activation checkpointing: a transformer block whose activations are not kept in forward and
// are recomputed in backward. Applied from outside the model by installing a block runner.
#pragma once

#include "titan/models/llama3/model.h"

namespace titan::distributed {

// Runs `block` on x without keeping its intermediate activations; backward recomputes them
// (with the autocast state of the forward) and returns gradients for x and the block's weights.
at::Tensor checkpointed_block_forward(const models::llama3::TransformerBlock& block,
                                      const at::Tensor& x, const models::llama3::RopeTable& rope);

// Op-level selective checkpointing (torchtitan's "op" policy): like the above, but the outputs
// of attention and of every second matmul (the 1st, 3rd, ...) are kept in forward, and backward
// recomputes only the rest (kernels/ops.h). Gradients equal those without checkpointing, bit for bit.
at::Tensor op_checkpointed_block_forward(const models::llama3::TransformerBlock& block,
                                         const at::Tensor& x, const models::llama3::RopeTable& rope);

}  // namespace titan::distributed
