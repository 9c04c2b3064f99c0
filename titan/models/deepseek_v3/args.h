// DeepSeek-V3 model arguments and the named flavors of torchtitan's deepseek_v3 model
// (debugmodel, debugmodel_flex_attn, 16B, 236B, 671B): multi-head latent attention with YaRN
// past original_seq_len, the first n_dense_layers blocks dense (SwiGLU of inter_dim), every
// other block a mixture of experts (routed experts of moe_inter_dim, shared experts, node-limited
// routing on the large flavors).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "titan/models/common/decoder.h"
#include "titan/models/model.h"

namespace titan::models::deepseek_v3 {

struct ModelArgs final : ModelConfig {
  int64_t max_seq_len = 4096 * 4;  // RoPE table length; set from training.seq_len
  int64_t vocab_size = 102400;
  int64_t dim = 2048;
  int64_t inter_dim = 10944;      // the dense blocks' feed-forward width
  int64_t moe_inter_dim = 1408;   // each expert's
  int64_t n_layers = 27;
  int64_t n_dense_layers = 1;
  int64_t n_heads = 16;
  double norm_eps = 1e-5;
  // The final norm's epsilon. torchtitan builds that norm without one, and RMSNorm then takes
  // float32's (nullopt here); a model read from Hugging Face keeps its rms_norm_eps.
  std::optional<double> final_norm_eps;
  common::MoeArgs moe_args;
  common::MlaArgs mla;
  // torchtitan's attention choice: attn_type "sdpa" or "flex" (titan.cpp runs its own kernel for
  // both, with the same numbers); attn_mask_type "causal" or "block_causal" (documents split at
  // the tokenizer's EOS do not attend to each other).
  std::string attn_type = "sdpa";
  std::string attn_mask_type = "causal";
  // YaRN: applied when max_seq_len > original_seq_len.
  int64_t original_seq_len = 4096;
  double rope_theta = 10000.0;
  double rope_factor = 40;
  int64_t beta_fast = 32;
  int64_t beta_slow = 1;
  double mscale = 1.0;

  common::DecoderArgs decoder() const;

  // ModelConfig
  std::unique_ptr<ModelConfig> clone() const override { return std::make_unique<ModelArgs>(*this); }
  std::string family() const override { return "deepseek_v3"; }
  Sizes sizes() const override;
  void set_max_seq_len(int64_t n) override { max_seq_len = n; }
  void set_vocab_size(int64_t n) override { vocab_size = n; }
  void set_n_layers(int64_t n) override { n_layers = n; }
  void set_moe_force_load_balance(bool on) override { moe_args.force_load_balance = on; }
  std::string parameter_count_line() const override;
  int64_t num_params() const override;
  int64_t num_embedding_params() const override { return vocab_size * dim; }
  bool block_causal() const override { return attn_mask_type == "block_causal"; }
  std::string attention_note() const override;
  int64_t flops_per_token(int64_t seq_len) const override;
  nlohmann::json to_json() const override;
  std::string describe() const override;
};

// The flavor by name; throws titan::Error listing the known names.
ModelArgs flavor(std::string_view name);
std::vector<std::string> flavor_names();
// What a checkpoint recorded (ModelArgs::to_json); nlohmann::json::exception when malformed.
ModelArgs args_from_json(const nlohmann::json& j);

}  // namespace titan::models::deepseek_v3
