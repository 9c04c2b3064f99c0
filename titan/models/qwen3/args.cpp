#include "titan/models/qwen3/args.h"

#include "titan/common/error.h"
#include "titan/models/common/flavors.h"
#include "titan/common/log.h"

namespace titan::models::qwen3 {

namespace {

using NamedFlavor = common::NamedFlavor<ModelArgs>;

ModelArgs make(int64_t vocab, int64_t dim, int64_t layers, int64_t heads, int64_t hidden, bool tied) {
  ModelArgs a;
  a.vocab_size = vocab;
  a.dim = dim;
  a.n_layers = layers;
  a.n_heads = heads;
  a.n_kv_heads = 8;
  a.head_dim = 128;
  a.hidden_dim = hidden;
  a.tied_embeddings = tied;
  return a;
}

// torchtitan v0.2.2's MoE flavors: the dense arguments, then every block's experts.
ModelArgs moe(ModelArgs a, int64_t max_seq_len, int64_t kv_heads, double rope_theta, int64_t experts,
              int64_t inter_dim) {
  a.max_seq_len = max_seq_len;
  a.n_kv_heads = kv_heads;
  a.rope_theta = rope_theta;
  a.moe_enabled = true;
  a.moe_inter_dim = inter_dim;
  a.moe_args.num_experts = experts;
  a.moe_args.num_shared_experts = 0;
  a.moe_args.top_k = 8;
  a.moe_args.score_func = "softmax";
  a.moe_args.route_norm = true;
  a.moe_args.route_scale = 1.0;
  a.moe_args.score_before_experts = false;
  return a;
}

// torchtitan v0.2.2's qwen3 flavors.
const std::vector<NamedFlavor>& flavors() {
  static const std::vector<NamedFlavor> table = {
      {"debugmodel", make(2048, 256, 8, 16, 3072, true)},
      {"0.6B", make(151936, 1024, 28, 16, 3072, true)},
      {"1.7B", make(151936, 2048, 28, 16, 6144, true)},
      {"4B", make(151936, 2560, 36, 32, 9728, true)},
      {"8B", make(151936, 4096, 36, 32, 12288, false)},
      {"14B", make(151936, 5120, 40, 40, 17408, false)},
      {"32B", make(151936, 5120, 64, 64, 25600, false)},
      {"debugmodel_moe", moe(make(2048, 256, 8, 16, 3072, false), 4096, 8, 1e6, 64, 768)},
      {"30B-A3B", moe(make(151936, 2048, 48, 32, 6144, false), 262144, 4, 1e6, 128, 768)},
      {"235B-A22B", moe(make(151936, 4096, 94, 64, 12288, false), 4096, 4, 5e6, 128, 1536)},
  };
  return table;
}

}  // namespace

std::vector<std::string> flavor_names() { return common::flavor_names_of(flavors()); }

ModelArgs flavor(std::string_view name) { return common::find_flavor(flavors(), name, "qwen3"); }

common::DecoderArgs ModelArgs::decoder() const {
  common::DecoderArgs d;
  d.dim = dim;
  d.n_layers = n_layers;
  d.n_heads = n_heads;
  d.n_kv_heads = n_kv_heads;
  d.head_dim = head_dim;
  d.ffn_hidden_dim = hidden_dim;
  d.vocab_size = vocab_size;
  d.max_seq_len = max_seq_len;
  d.norm_eps = norm_eps;
  d.rope_theta = rope_theta;
  d.qk_norm = qk_norm;
  d.tied_embeddings = tied_embeddings;
  d.depth_init = depth_init;
  d.tied_table_takes_output_init = true;
  if (moe_enabled) {
    d.moe = moe_args;
    d.moe_inter_dim = moe_inter_dim;
  }
  return d;
}

Sizes ModelArgs::sizes() const {
  Sizes s;
  s.dim = dim;
  s.n_layers = n_layers;
  s.n_heads = n_heads;
  s.n_kv_heads = n_kv_heads;
  s.head_dim = head_dim;
  // A MoE block's feed-forward activations per token: its top_k experts' (and shared experts').
  s.ffn_hidden_dim = moe_enabled ? (moe_args.top_k + moe_args.num_shared_experts) * moe_inter_dim : hidden_dim;
  s.vocab_size = vocab_size;
  s.max_seq_len = max_seq_len;
  s.tied_embeddings = tied_embeddings;
  s.layer_params = common::mean_block_params(decoder());
  if (moe_enabled) {
    s.layer_expert_params = common::moe_params(moe_args, dim, moe_inter_dim).experts;
    s.moe_top_k = moe_args.top_k;
  }
  return s;
}

int64_t ModelArgs::num_params() const { return common::num_params(decoder()); }

int64_t ModelArgs::reported_num_params() const {
  // torchtitan's qwen3 count (the mixture-of-experts counter) leaves a tied table out.
  return num_params() - (tied_embeddings ? num_embedding_params() : 0);
}

int64_t ModelArgs::flops_per_token(int64_t seq_len) const {
  // 6 * (N_active - N_embedding) + 6 * n_layers * n_heads * (2 * head_dim) * seq_len, with only
  // top_k / num_experts of the experts active; N counts a tied table once, so with tied
  // embeddings the head's matmul is left out as torchtitan leaves it.
  return common::moe_flops_per_token(decoder(), seq_len);
}

std::string ModelArgs::parameter_count_line() const { return common::moe_count_line(decoder()); }


std::string ModelArgs::describe() const {
  return "Qwen3ModelArgs(dim=" + std::to_string(dim) + ", n_layers=" + std::to_string(n_layers) +
         ", n_heads=" + std::to_string(n_heads) + ", n_kv_heads=" + std::to_string(n_kv_heads) +
         ", head_dim=" + std::to_string(head_dim) + ", hidden_dim=" + std::to_string(hidden_dim) +
         ", vocab_size=" + std::to_string(vocab_size) + ", norm_eps=" + log::format("%g", norm_eps) +
         ", rope_theta=" + log::format("%g", rope_theta) + ", qk_norm=" + (qk_norm ? "True" : "False") +
         ", max_seq_len=" + std::to_string(max_seq_len) +
         ", enable_weight_tying=" + (tied_embeddings ? "True" : "False") +
         (moe_enabled ? ", moe_enabled=True, moe_inter_dim=" + std::to_string(moe_inter_dim) +
                            ", moe_args=" + common::describe(moe_args)
                      : "") +
         ")";
}

nlohmann::json ModelArgs::to_json() const {
  nlohmann::json j = {{"dim", dim},
          {"n_layers", n_layers},
          {"n_heads", n_heads},
          {"n_kv_heads", n_kv_heads},
          {"head_dim", head_dim},
          {"hidden_dim", hidden_dim},
          {"ffn_hidden_dim", hidden_dim},
          {"vocab_size", vocab_size},
          {"norm_eps", norm_eps},
          {"rope_theta", rope_theta},
          {"qk_norm", qk_norm},
          {"max_seq_len", max_seq_len},
          {"tied_embeddings", tied_embeddings}};
  if (moe_enabled) {
    j["moe_inter_dim"] = moe_inter_dim;
    j["moe_args"] = common::to_json(moe_args);
  }
  return j;
}

ModelArgs args_from_json(const nlohmann::json& j) {
  ModelArgs a;
  a.dim = j.at("dim").get<int64_t>();
  a.n_layers = j.at("n_layers").get<int64_t>();
  a.n_heads = j.at("n_heads").get<int64_t>();
  a.n_kv_heads = j.at("n_kv_heads").get<int64_t>();
  a.head_dim = j.at("head_dim").get<int64_t>();
  a.hidden_dim = j.at("hidden_dim").get<int64_t>();
  a.vocab_size = j.at("vocab_size").get<int64_t>();
  a.norm_eps = j.at("norm_eps").get<double>();
  a.rope_theta = j.at("rope_theta").get<double>();
  a.qk_norm = j.at("qk_norm").get<bool>();
  a.max_seq_len = j.at("max_seq_len").get<int64_t>();
  a.tied_embeddings = j.at("tied_embeddings").get<bool>();
  if (j.contains("moe_args")) {  // a mixture-of-experts flavor
    a.moe_enabled = true;
    a.moe_inter_dim = j.at("moe_inter_dim").get<int64_t>();
    a.moe_args = common::moe_args_from_json(j.at("moe_args"));
  }
  return a;
}

}  // namespace titan::models::qwen3
