// Activation checkpointing: a block whose activations are not kept in forward and are
// recomputed in backward, installed from outside the model as a block runner
// (titan/common/module.h). Knows no model: a block is a function of its input plus the weights
// it reads.
#pragma once

#include "titan/common/module.h"

namespace titan::distributed {

// Runs `block` on x keeping only x; backward recomputes the block (with the autocast state and
// the weights of the forward: the slots hold them again during the recompute) and returns the
// gradients of x and of the weights. `block` and the slots must outlive the backward pass
// (model members, not temporaries).
at::Tensor checkpoint_block(const BlockFn& block, const at::Tensor& x, const BlockContext& context,
                            const std::vector<at::Tensor*>& weights);

// Op-level selective checkpointing (torchtitan's "op" policy): like the above, but the outputs
// of attention and of every second matmul (the 1st, 3rd, ...) are kept in forward, and backward
// recomputes only the rest (kernels/ops.h). Gradients equal those without checkpointing, bit for bit.
at::Tensor op_checkpoint_block(const BlockFn& block, const at::Tensor& x, const BlockContext& context,
                               const std::vector<at::Tensor*>& weights);

}  // namespace titan::distributed
