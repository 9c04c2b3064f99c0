#include "titan/models/llama3/args.h"

#include <cmath>

#include "titan/common/error.h"
#include "titan/models/common/flavors.h"
#include "titan/common/log.h"

namespace titan::models::llama3 {

int64_t ModelArgs::ffn_hidden_dim() const {
  // Llama's rounding: 2/3 of 4*dim, optionally scaled, then up to a multiple of multiple_of.
  int64_t hidden = static_cast<int64_t>(2 * 4 * dim / 3);
  if (ffn_dim_multiplier) hidden = static_cast<int64_t>(*ffn_dim_multiplier * hidden);
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

namespace {

using NamedFlavor = common::NamedFlavor<ModelArgs>;

ModelArgs make(int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads, int64_t vocab,
               int64_t multiple_of, std::optional<double> mult, bool tied) {
  ModelArgs a;
  a.dim = dim;
  a.n_layers = layers;
  a.n_heads = heads;
  a.n_kv_heads = kv_heads;
  a.vocab_size = vocab;
  a.multiple_of = multiple_of;
  a.ffn_dim_multiplier = mult;
  a.tied_embeddings = tied;
  return a;
}

// A flavor with block-causal attention run by `attn_type`'s kernel in torchtitan.
ModelArgs documents(ModelArgs a, const char* attn_type) {
  a.attn_type = attn_type;
  a.attn_mask_type = "block_causal";
  return a;
}

const std::vector<NamedFlavor>& flavors() {
  static const std::vector<NamedFlavor> table = {
      {"debugmodel", make(256, 6, 16, 16, 2048, 256, std::nullopt, false)},
      {"debugmodel_flex_attn", documents(make(256, 6, 16, 16, 2048, 256, std::nullopt, false), "flex")},
      {"debugmodel_varlen_attn", documents(make(256, 6, 16, 16, 2048, 256, std::nullopt, false), "varlen")},
      {"1B", make(2048, 16, 32, 8, 128256, 1024, 1.5, true)},
      {"3B", make(3072, 28, 24, 8, 128256, 1024, 1.0, true)},
      {"8B", make(4096, 32, 32, 8, 128256, 1024, 1.3, false)},
      {"8B_flex", documents(make(4096, 32, 32, 8, 128256, 1024, 1.3, false), "flex")},
      {"8B_varlen", documents(make(4096, 32, 32, 8, 128256, 1024, 1.3, false), "varlen")},
      {"70B", make(8192, 80, 64, 8, 128256, 4096, 1.3, false)},
      {"405B", make(16384, 126, 128, 8, 128256, 4096, 1.2, false)},
  };
  return table;
}

}  // namespace

std::vector<std::string> flavor_names() { return common::flavor_names_of(flavors()); }

ModelArgs flavor(std::string_view name) { return common::find_flavor(flavors(), name, "llama3"); }

int64_t num_embedding_params(const ModelArgs& a) { return a.num_embedding_params(); }
int64_t num_params(const ModelArgs& a) { return a.num_params(); }
int64_t flops_per_token(const ModelArgs& a, int64_t seq_len) { return a.flops_per_token(seq_len); }

namespace {
int64_t block_params(const ModelArgs& a) {
  const int64_t hd = a.head_dim();
  const int64_t attention = a.dim * a.n_heads * hd * 2 + a.dim * a.n_kv_heads * hd * 2;
  return attention + 3 * a.dim * a.ffn_hidden_dim() + 2 * a.dim;
}
}  // namespace

Sizes ModelArgs::sizes() const {
  Sizes s;
  s.dim = dim;
  s.n_layers = n_layers;
  s.n_heads = n_heads;
  s.n_kv_heads = n_kv_heads;
  s.head_dim = head_dim();
  s.ffn_hidden_dim = ffn_hidden_dim();
  s.vocab_size = vocab_size;
  s.max_seq_len = max_seq_len;
  s.tied_embeddings = tied_embeddings;
  s.layer_params = block_params(*this);
  return s;
}

std::string ModelArgs::describe() const {
  return "ModelArgs(dim=" + std::to_string(dim) + ", n_layers=" + std::to_string(n_layers) +
         ", n_heads=" + std::to_string(n_heads) + ", n_kv_heads=" + std::to_string(n_kv_heads) +
         ", vocab_size=" + std::to_string(vocab_size) + ", multiple_of=" + std::to_string(multiple_of) +
         ", ffn_dim_multiplier=" + (ffn_dim_multiplier ? log::format("%g", *ffn_dim_multiplier) : "None") +
         ", norm_eps=" + log::format("%g", norm_eps) + ", rope_theta=" + log::format("%g", rope_theta) +
         ", max_seq_len=" + std::to_string(max_seq_len) + ", tied_embeddings=" + (tied_embeddings ? "True" : "False") +
         (attn_mask_type != "causal" || attn_type != "sdpa"
              ? ", attn_type='" + attn_type + "', attn_mask_type='" + attn_mask_type + "'"
              : std::string()) +
         ")";
}

int64_t ModelArgs::num_params() const {
  const ModelArgs& a = *this;
  const int64_t output = a.tied_embeddings ? 0 : a.vocab_size * a.dim;
  return a.num_embedding_params() + a.n_layers * block_params(a) + a.dim + output;
}

int64_t ModelArgs::flops_per_token(int64_t seq_len) const {
  const ModelArgs& a = *this;
  // Parameters are counted once even when tied, so with tied embeddings the shared table is
  // left out entirely (as torchtitan counts it).
  return 6 * (a.num_params() - a.num_embedding_params()) + 12 * a.n_layers * a.n_heads * a.head_dim() * seq_len;
}

}  // namespace titan::models::llama3
