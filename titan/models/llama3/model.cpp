#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {

common::DecoderArgs ModelArgs::decoder() const {
  const ModelArgs& a = *this;
  common::DecoderArgs d;
  d.dim = a.dim;
  d.n_layers = a.n_layers;
  d.n_heads = a.n_heads;
  d.n_kv_heads = a.n_kv_heads;
  d.head_dim = a.head_dim();
  d.ffn_hidden_dim = a.ffn_hidden_dim();
  d.vocab_size = a.vocab_size;
  d.max_seq_len = a.max_seq_len;
  d.norm_eps = a.norm_eps;
  d.rope_theta = a.rope_theta;
  d.llama31_rope_scaling = a.use_scaled_rope;
  d.tied_embeddings = a.tied_embeddings;
  d.depth_init = a.depth_init;
  return d;
}

RopeTable rope_table(const ModelArgs& args, const at::TensorOptions& options) {
  return common::rope_table(args.decoder(), options);
}

at::Tensor init_value(const ModelArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                      at::IntArrayRef offsets, at::IntArrayRef sizes) {
  return common::init_value(args.decoder(), name, shape, seed, offsets, sizes);
}

void init_value_into(const ModelArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                     at::IntArrayRef offsets, at::Tensor& out) {
  common::init_value_into(args.decoder(), name, shape, seed, offsets, out);
}

}  // namespace titan::models::llama3
