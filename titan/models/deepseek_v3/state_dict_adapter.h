// DeepSeek-V3 in Hugging Face transformers' terms (DeepseekV3ForCausalLM): parameter names (the
// latent attention's q_a_proj, kv_a_proj_with_mqa, ...; dense blocks' mlp.gate_proj, MoE blocks'
// mlp.experts.<e>.*), the expert bias as mlp.gate.e_score_correction_bias, and config.json.
// No row is reordered: transformers' DeepSeek-V3 rotates interleaved pairs (rope_interleave), as
// titan.cpp and torchtitan do.
//
// transformers routes with sigmoid scores, the gate applied to the experts' outputs, and without
// a router bias, so models that route otherwise (torchtitan's softmax flavors: debugmodel, 16B,
// 236B) are refused by hf_config. Its final norm takes rms_norm_eps where torchtitan's takes
// float32's epsilon: a model read from transformers keeps transformers' (final_norm_eps), and an
// export of a torchtitan-built model says that the last norm differs.
#pragma once

#include <nlohmann/json.hpp>

#include "titan/models/common/hf_layout.h"
#include "titan/models/deepseek_v3/args.h"

namespace titan::models::deepseek_v3 {

class StateDictAdapter final : public common::DecoderHfAdapter {
 public:
  explicit StateDictAdapter(ModelArgs args)
      : common::DecoderHfAdapter(args, args.moe_args.num_experts), args_(std::move(args)) {}

  std::string to_hf_name(const std::string& fqn) const override;
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override;
  // Interleaved rotary pairs on both sides: every tensor as it is.
  at::Tensor to_hf(const std::string&, const at::Tensor& t) const override { return t; }
  at::Tensor from_hf(const std::string&, const at::Tensor& t) const override { return t; }
  std::optional<std::string> buffer_hf_name(const std::string& fqn) const override;
  nlohmann::json hf_config(const std::string& torch_dtype) const override;
  void check_same(const ModelConfig& have, const std::string& where) const override;
  // Model arguments from a transformers config.json (`where` names the file in errors).
  static ModelArgs args_from_hf_config(const nlohmann::json& config, const std::string& where);

 private:
  ModelArgs args_;
};

}  // namespace titan::models::deepseek_v3
