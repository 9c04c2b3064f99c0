// Qwen3 in Hugging Face transformers' terms (Qwen3ForCausalLM): parameter names, the row
// permutation of wq and wk and of the q/k norm weights (pair order here, halves there), tied
// embeddings (no lm_head.weight), and config.json.
#pragma once

#include <nlohmann/json.hpp>

#include "titan/models/model.h"
#include "titan/models/qwen3/args.h"

namespace titan::models::qwen3 {

class StateDictAdapter final : public models::StateDictAdapter {
 public:
  explicit StateDictAdapter(ModelArgs args) : args_(std::move(args)) {}

  std::string to_hf_name(const std::string& fqn) const override;
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override;
  at::Tensor to_hf(const std::string& fqn, const at::Tensor& t) const override;
  at::Tensor from_hf(const std::string& fqn, const at::Tensor& t) const override;
  nlohmann::json hf_config(const std::string& torch_dtype) const override;
  void check_same(const ModelConfig& have, const std::string& where) const override;
  bool ignorable(const std::string& hf_name) const override;
  // Model arguments from a transformers config.json (`where` names the file in errors).
  static ModelArgs args_from_hf_config(const nlohmann::json& config, const std::string& where);

 private:
  ModelArgs args_;
};

}  // namespace titan::models::qwen3
