// Llama 3 model arguments and the named flavors (debugmodel, 1B, 3B, 8B, 70B, 405B), with the
// derived quantities every other part needs: FFN hidden size, parameter counts, FLOPs per token.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "titan/models/common/decoder.h"
#include "titan/models/model.h"

namespace titan::models::llama3 {

struct ModelArgs final : ModelConfig {
  int64_t dim = 4096;
  int64_t n_layers = 32;
  int64_t n_heads = 32;
  int64_t n_kv_heads = 32;
  int64_t vocab_size = 128256;
  int64_t multiple_of = 256;
  std::optional<double> ffn_dim_multiplier;
  double norm_eps = 1e-5;
  double rope_theta = 500000.0;
  bool use_scaled_rope = true;  // Llama 3.1 RoPE scaling (factor 8, low 1, high 4, context 8192)
  int64_t max_seq_len = 2048;   // RoPE table length; set from training.seq_len
  bool tied_embeddings = false; // output.weight is tok_embeddings.weight (1B, 3B)
  bool depth_init = true;       // wo/w2/w3 std 0.02/sqrt(2*(layer_id+1))
  // torchtitan's attention choice: attn_type "sdpa", "flex" or "varlen" names its kernel (titan.cpp
  // runs its own for each, with the same numbers); attn_mask_type "causal", or "block_causal":
  // documents, split at the tokenizer's EOS, do not attend to each other.
  std::string attn_type = "sdpa";
  std::string attn_mask_type = "causal";

  int64_t head_dim() const { return dim / n_heads; }
  int64_t ffn_hidden_dim() const;
  common::DecoderArgs decoder() const;  // the shared decoder's arguments

  // ModelConfig
  std::unique_ptr<ModelConfig> clone() const override { return std::make_unique<ModelArgs>(*this); }
  std::string family() const override { return "llama3"; }
  Sizes sizes() const override;
  void set_max_seq_len(int64_t n) override { max_seq_len = n; }
  void set_vocab_size(int64_t n) override { vocab_size = n; }
  void set_n_layers(int64_t n) override { n_layers = n; }
  int64_t num_params() const override;
  int64_t num_embedding_params() const override { return vocab_size * dim; }
  int64_t flops_per_token(int64_t seq_len) const override;
  bool block_causal() const override { return attn_mask_type == "block_causal"; }
  nlohmann::json to_json() const override;
  std::string describe() const override;
};

// The flavor by name; throws titan::Error listing the known names.
ModelArgs flavor(std::string_view name);
std::vector<std::string> flavor_names();

// Analytic counts (equal to the counts of a built model; a test checks both).
int64_t num_params(const ModelArgs& args);
int64_t num_embedding_params(const ModelArgs& args);  // the tok_embeddings table

// FLOPs per token of a training step (forward + backward), torchtitan's formula:
// 6 * (N - N_embedding) + 12 * n_layers * n_heads * head_dim * seq_len.
// N counts a tied table once, so with tied embeddings the table is left out entirely.
int64_t flops_per_token(const ModelArgs& args, int64_t seq_len);

}  // namespace titan::models::llama3
