// Qwen3 model arguments and the named flavors of torchtitan's qwen3 model: dense (debugmodel,
// 0.6B, 1.7B, 4B, 8B, 14B, 32B) and mixture-of-experts (debugmodel_moe, 30B-A3B, 235B-A22B):
// head_dim apart from dim / n_heads, RMSNorm on q and k per head, RoPE theta 1e6 without
// scaling, tied embeddings on the small dense flavors; the MoE flavors replace every block's
// feed-forward with routed experts (softmax top-8, gate values normalised, no shared expert).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "titan/models/common/decoder.h"
#include "titan/models/model.h"

namespace titan::models::qwen3 {

struct ModelArgs final : ModelConfig {
  int64_t dim = 1024;
  int64_t n_layers = 28;
  int64_t n_heads = 16;
  int64_t n_kv_heads = 8;
  int64_t head_dim = 128;
  int64_t hidden_dim = 3072;  // the feed-forward's inner width
  int64_t vocab_size = 151936;
  double norm_eps = 1e-6;
  double rope_theta = 1000000.0;
  bool qk_norm = true;
  int64_t max_seq_len = 4096;  // RoPE table length; set from training.seq_len
  bool tied_embeddings = false;
  bool depth_init = true;
  // Mixture of experts: every block's feed-forward is moe_args' experts of width moe_inter_dim.
  bool moe_enabled = false;
  int64_t moe_inter_dim = 768;
  common::MoeArgs moe_args;

  common::DecoderArgs decoder() const;

  // ModelConfig
  std::unique_ptr<ModelConfig> clone() const override { return std::make_unique<ModelArgs>(*this); }
  std::string family() const override { return "qwen3"; }
  Sizes sizes() const override;
  void set_max_seq_len(int64_t n) override { max_seq_len = n; }
  void set_vocab_size(int64_t n) override { vocab_size = n; }
  void set_n_layers(int64_t n) override { n_layers = n; }
  void set_moe_force_load_balance(bool on) override { moe_args.force_load_balance = on; }
  std::string parameter_count_line() const override;
  int64_t num_params() const override;
  int64_t num_embedding_params() const override { return vocab_size * dim; }
  int64_t reported_num_params() const override;
  int64_t flops_per_token(int64_t seq_len) const override;
  nlohmann::json to_json() const override;
  std::string describe() const override;
};

// The flavor by name; throws titan::Error listing the known names.
ModelArgs flavor(std::string_view name);
std::vector<std::string> flavor_names();
// What a checkpoint recorded (ModelArgs::to_json); nlohmann::json::exception when malformed.
ModelArgs args_from_json(const nlohmann::json& j);

}  // namespace titan::models::qwen3
