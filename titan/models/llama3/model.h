// Llama 3: the shared dense decoder (titan/models/common/decoder.h) with Llama's arguments:
// head_dim = dim / n_heads, no q/k norms, Llama 3.1 RoPE scaling, the table's own
// initialisation when tied.
#pragma once

#include "titan/models/common/decoder.h"
#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {

using common::Attention;
using common::Embedding;
using common::FeedForward;
using common::Linear;
using common::RMSNorm;
using common::RopeTable;
using common::TransformerBlock;
using common::apply_rope;

using Transformer = common::FamilyDecoder<ModelArgs>;

RopeTable rope_table(const ModelArgs& args, const at::TensorOptions& options);
at::Tensor init_value(const ModelArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                      at::IntArrayRef offsets = {}, at::IntArrayRef sizes = {});
void init_value_into(const ModelArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                     at::IntArrayRef offsets, at::Tensor& out);

}  // namespace titan::models::llama3
