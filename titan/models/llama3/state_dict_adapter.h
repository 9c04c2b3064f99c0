// Llama 3 in Hugging Face transformers' terms (LlamaForCausalLM): parameter names, the row
// permutation of wq and wk (our RoPE rotates adjacent pairs, transformers' rotate_half the two
// halves of each head), tied embeddings (no lm_head.weight), and config.json. The only place
// that knows both.
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "titan/models/llama3/args.h"
#include "titan/models/model.h"

namespace titan::models::llama3 {

class StateDictAdapter final : public models::StateDictAdapter {
 public:
  explicit StateDictAdapter(ModelArgs args) : args_(std::move(args)) {}

  // "layers.3.attention.wq.weight" -> "model.layers.3.self_attn.q_proj.weight"; "" for a parameter
  // transformers does not store (none today).
  std::string to_hf_name(const std::string& fqn) const override;
  // The inverse; nullopt for names that are not Llama parameters (rotary caches, lm_head when tied).
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override;
  // A full tensor in our layout -> transformers' layout, and back.
  at::Tensor to_hf(const std::string& fqn, const at::Tensor& t) const override;
  at::Tensor from_hf(const std::string& fqn, const at::Tensor& t) const override;

  // config.json for transformers, with the given torch_dtype ("float32", "bfloat16").
  nlohmann::json hf_config(const std::string& torch_dtype) const override;
  // Model arguments from a transformers config.json (`where` names the file in errors).
  void check_same(const ModelConfig& have, const std::string& where) const override;
  bool ignorable(const std::string& hf_name) const override;
  static ModelArgs args_from_hf_config(const nlohmann::json& config, const std::string& where);

 private:
  ModelArgs args_;
};

// ModelArgs <-> JSON (what checkpoints record of the model).
nlohmann::json args_to_json(const ModelArgs& a);
ModelArgs args_from_json(const nlohmann::json& j);

}  // namespace titan::models::llama3
