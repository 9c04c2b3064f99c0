// DeepSeek-V3 in Hugging Face transformers' terms: not built yet. Every conversion (titan
// convert, checkpoint.last_save_in_hf, initial_load_in_hf) stops with one error saying so,
// before anything is read or written.
#pragma once

#include <nlohmann/json.hpp>

#include "titan/common/error.h"
#include "titan/models/common/hf_layout.h"
#include "titan/models/deepseek_v3/args.h"

namespace titan::models::deepseek_v3 {

class StateDictAdapter final : public common::DecoderHfAdapter {
 public:
  explicit StateDictAdapter(const ModelArgs& args) : common::DecoderHfAdapter(args, args.moe_args.num_experts) {}

  std::string to_hf_name(const std::string&) const override { throw not_built(); }
  std::optional<std::string> from_hf_name(const std::string&) const override { throw not_built(); }
  nlohmann::json hf_config(const std::string&) const override { throw not_built(); }
  void check_same(const ModelConfig&, const std::string&) const override { throw not_built(); }
  static ModelArgs args_from_hf_config(const nlohmann::json&, const std::string&) { throw not_built(); }

 private:
  static Error not_built() {
    return Error("Hugging Face conversion of deepseek_v3 (DeepseekV3ForCausalLM) is not built yet",
                 "train and checkpoint DeepSeek-V3 in titan.cpp's own format (DCP); llama3 and qwen3 convert");
  }
};

}  // namespace titan::models::deepseek_v3
