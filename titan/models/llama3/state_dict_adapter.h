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
#include "titan/models/common/hf_layout.h"

namespace titan::models::llama3 {

class StateDictAdapter final : public common::DecoderHfAdapter {
 public:
  explicit StateDictAdapter(ModelArgs args) : common::DecoderHfAdapter(args), args_(std::move(args)) {}

  // config.json for transformers, with the given torch_dtype ("float32", "bfloat16").
  nlohmann::json hf_config(const std::string& torch_dtype) const override;
  // Model arguments from a transformers config.json (`where` names the file in errors).
  static ModelArgs args_from_hf_config(const nlohmann::json& config, const std::string& where);

 private:
  ModelArgs args_;
};

// ModelArgs <-> JSON (what checkpoints record of the model).
nlohmann::json args_to_json(const ModelArgs& a);
ModelArgs args_from_json(const nlohmann::json& j);

}  // namespace titan::models::llama3
