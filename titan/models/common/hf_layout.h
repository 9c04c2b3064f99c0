// The shared decoder in Hugging Face transformers' terms: parameter names (LlamaForCausalLM and
// Qwen3ForCausalLM name them alike; Qwen3 adds self_attn.q_norm / k_norm), and the row order of
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

// The adapter of a family built on the shared decoder: names, the wq/wk row permutation (and the
// q/k norm weights'), tied embeddings, and the comparison of a folder's config.json with the
// run's model in transformers' field names. A family adds its config.json (hf_config and a
// static args_from_hf_config).
class DecoderHfAdapter : public models::StateDictAdapter {
 public:
  explicit DecoderHfAdapter(const ModelConfig& config) : family_(config.family()), sizes_(config.sizes()) {}
  std::string to_hf_name(const std::string& fqn) const override { return common::to_hf_name(fqn); }
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override {
    return common::from_hf_name(hf_name, sizes_.tied_embeddings);
  }
  at::Tensor to_hf(const std::string& fqn, const at::Tensor& t) const override;
  at::Tensor from_hf(const std::string& fqn, const at::Tensor& t) const override;
  void check_same(const ModelConfig& have, const std::string& where) const override;
  bool ignorable(const std::string& hf_name) const override;

 protected:
  std::string family_;
  Sizes sizes_;
};

}  // namespace titan::models::common
