// Qwen3 in Hugging Face transformers' terms (Qwen3ForCausalLM, Qwen3MoeForCausalLM): parameter
// names, the row permutation of wq and wk and of the q/k norm weights (pair order here, halves
// there), tied embeddings (no lm_head.weight), the experts one by one, and config.json.
#pragma once

#include <nlohmann/json.hpp>

#include "titan/models/common/hf_layout.h"
#include "titan/models/qwen3/args.h"

namespace titan::models::qwen3 {

class StateDictAdapter final : public common::DecoderHfAdapter {
 public:
  explicit StateDictAdapter(ModelArgs args)
      : common::DecoderHfAdapter(args, args.moe_enabled ? args.moe_args.num_experts : 0), args_(std::move(args)) {}

  nlohmann::json hf_config(const std::string& torch_dtype) const override;
  void check_same(const ModelConfig& have, const std::string& where) const override;
  // Model arguments from a transformers config.json (`where` names the file in errors).
  static ModelArgs args_from_hf_config(const nlohmann::json& config, const std::string& where);

 private:
  ModelArgs args_;
};

}  // namespace titan::models::qwen3
