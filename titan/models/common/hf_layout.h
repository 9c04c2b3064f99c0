// The shared decoder in Hugging Face transformers' terms: parameter names (LlamaForCausalLM and
// Qwen3ForCausalLM name them alike; Qwen3 adds self_attn.q_norm / k_norm; Qwen3MoeForCausalLM
// has mlp.gate and mlp.experts.<e>.* in the feed-forward's place), and the row order of
// RoPE'd projections: ours rotates adjacent pairs (2i, 2i+1) of each head, transformers'
// rotate_half the two halves.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "titan/models/model.h"

namespace titan::models::common {

// "layers.3.attention.wq.weight" -> "model.layers.3.self_attn.q_proj.weight"; throws titan::Error
// for a name transformers does not have.
std::string to_hf_name(const std::string& fqn);
// The inverse; nullopt for names that are not decoder parameters (rotary caches), and for
// lm_head.weight when `tied`.
std::optional<std::string> from_hf_name(const std::string& hf_name, bool tied);

// Rows of each of `heads` heads (the first dim), or the elements of a (head_dim,) vector with
// heads = 1: pair order -> halves order, and back.
at::Tensor pairs_to_halves(const at::Tensor& w, int64_t heads);
at::Tensor halves_to_pairs(const at::Tensor& w, int64_t heads);

// RoPE's theta from a config.json: transformers 4 writes rope_theta, 5 writes it inside
// rope_parameters; 10000 when neither has it.
double hf_rope_theta(const nlohmann::json& config);

// The adapter of a family built on the shared decoder: names, the wq/wk row permutation (and the
// q/k norm weights'), tied embeddings, and the comparison of a folder's config.json with the
// run's model in transformers' field names. A family adds its config.json (hf_config and a
// static args_from_hf_config).
class DecoderHfAdapter : public models::StateDictAdapter {
 public:
  // `num_experts`: a mixture-of-experts model's routed experts per block (0: dense).
  explicit DecoderHfAdapter(const ModelConfig& config, int64_t num_experts = 0)
      : family_(config.family()), sizes_(config.sizes()), num_experts_(num_experts) {}
  std::string to_hf_name(const std::string& fqn) const override { return common::to_hf_name(fqn); }
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override {
    return common::from_hf_name(hf_name, sizes_.tied_embeddings);
  }
  at::Tensor to_hf(const std::string& fqn, const at::Tensor& t) const override;
  at::Tensor from_hf(const std::string& fqn, const at::Tensor& t) const override;
  // "layers.N.moe.experts.w1" (E, H, D) is "model.layers.N.mlp.experts.<e>.gate_proj.weight" for
  // each expert e (w3: up_proj, w2: down_proj).
  std::vector<std::string> to_hf_names(const std::string& fqn) const override;
  std::vector<at::Tensor> to_hf_parts(const std::string& fqn, const at::Tensor& t) const override;
  at::Tensor from_hf_parts(const std::string& fqn, const std::vector<at::Tensor>& parts) const override;
  void check_same(const ModelConfig& have, const std::string& where) const override;
  bool ignorable(const std::string& hf_name) const override;

 protected:
  std::string family_;
  Sizes sizes_;
  int64_t num_experts_ = 0;
};

}  // namespace titan::models::common
