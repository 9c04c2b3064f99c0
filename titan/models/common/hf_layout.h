// The shared decoder in Hugging Face transformers' terms: parameter names (LlamaForCausalLM and
// Qwen3ForCausalLM name them alike; Qwen3 adds self_attn.q_norm / k_norm), and the row order of
// RoPE'd projections: ours rotates adjacent pairs (2i, 2i+1) of each head, transformers'
// rotate_half the two halves.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

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

}  // namespace titan::models::common
