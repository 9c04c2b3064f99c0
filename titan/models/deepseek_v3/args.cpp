#include "titan/models/deepseek_v3/args.h"

#include "titan/common/test_hooks.h"

#include <limits>

#include "titan/common/log.h"
#include "titan/models/common/flavors.h"

namespace titan::models::deepseek_v3 {

namespace {

using NamedFlavor = common::NamedFlavor<ModelArgs>;

ModelArgs make(int64_t vocab, int64_t dim, int64_t inter_dim, int64_t moe_inter_dim, int64_t layers,
               int64_t dense_layers, int64_t heads) {
  ModelArgs a;
  a.vocab_size = vocab;
  a.dim = dim;
  a.inter_dim = inter_dim;
  a.moe_inter_dim = moe_inter_dim;
  a.n_layers = layers;
  a.n_dense_layers = dense_layers;
  a.n_heads = heads;
  return a;
}

// The experts: the gate applied to their outputs on every flavor.
ModelArgs experts(ModelArgs a, int64_t num, int64_t shared, int64_t top_k, const char* score, bool norm = false,
                  double scale = 1.0, std::optional<int64_t> groups = {}, std::optional<int64_t> limited = {}) {
  a.moe_args.num_experts = num;
  a.moe_args.num_shared_experts = shared;
  a.moe_args.top_k = top_k;
  a.moe_args.score_func = score;
  a.moe_args.route_norm = norm;
  a.moe_args.route_scale = scale;
  a.moe_args.score_before_experts = false;
  a.moe_args.num_expert_groups = groups;
  a.moe_args.num_limited_groups = limited;
  return a;
}

// The attention: a query latent of q_lora_rank (0: none), keys and values through 512.
ModelArgs latent(ModelArgs a, int64_t q_lora_rank, double mscale) {
  a.mla.q_lora_rank = q_lora_rank;
  a.mla.kv_lora_rank = 512;
  a.mla.qk_nope_head_dim = 128;
  a.mla.qk_rope_head_dim = 64;
  a.mla.v_head_dim = 128;
  a.mscale = mscale;
  return a;
}

// Block-causal attention, run by FlexAttention in torchtitan.
ModelArgs documents(ModelArgs a) {
  a.attn_type = "flex";
  a.attn_mask_type = "block_causal";
  return a;
}

// torchtitan v0.2.2's deepseek_v3 flavors.
const std::vector<NamedFlavor>& flavors() {
  static const std::vector<NamedFlavor> table = {
      {"debugmodel", latent(experts(make(2048, 256, 1024, 256, 6, 1, 16), 8, 2, 3, "softmax"), 0, 0.70)},
      {"debugmodel_flex_attn",
       documents(latent(experts(make(2048, 256, 1024, 256, 6, 1, 16), 8, 2, 3, "softmax"), 0, 0.70))},
      {"16B", documents(latent(experts(make(102400, 2048, 10944, 1408, 27, 1, 16), 64, 2, 6, "softmax"), 0, 0.70))},
      {"236B", documents(latent(experts(make(102400, 5120, 12288, 1536, 60, 1, 128), 160, 2, 6, "softmax", false, 16.0,
                                        8, 3),
                                1536, 1.0))},
      {"671B", documents(latent(experts(make(129280, 7168, 18432, 2048, 61, 3, 128), 256, 1, 8, "sigmoid", true, 2.5,
                                        8, 4),
                                1536, 1.0))},
  };
  return table;
}

}  // namespace

std::vector<std::string> flavor_names() { return common::flavor_names_of(flavors()); }

ModelArgs flavor(std::string_view name) {
  ModelArgs a = common::find_flavor(flavors(), name, "deepseek_v3");
  // Tests of the query latent on the debug model (torchtitan's small flavors have none).
  if (const int64_t r = TestHooks::get().deepseek_q_lora_rank; r >= 0) a.mla.q_lora_rank = r;
  return a;
}

common::DecoderArgs ModelArgs::decoder() const {
  common::DecoderArgs d;
  d.dim = dim;
  d.n_layers = n_layers;
  d.n_heads = n_heads;
  d.n_kv_heads = n_heads;  // every head has its own key and value (from the shared latent)
  d.head_dim = mla.qk_head_dim();
  d.ffn_hidden_dim = inter_dim;
  d.vocab_size = vocab_size;
  d.max_seq_len = max_seq_len;
  d.norm_eps = norm_eps;
  d.rope_theta = rope_theta;
  d.moe = moe_args;
  d.moe_inter_dim = moe_inter_dim;
  d.n_dense_layers = n_dense_layers;
  d.mla = mla;
  d.yarn = common::YarnArgs{original_seq_len, rope_factor, static_cast<double>(beta_fast),
                            static_cast<double>(beta_slow), mscale};
  // torchtitan builds the final norm without an epsilon: RMSNorm then takes float32's, whatever
  // the input's dtype.
  d.final_norm_eps = final_norm_eps.value_or(std::numeric_limits<float>::epsilon());
  return d;
}

Sizes ModelArgs::sizes() const {
  Sizes s;
  s.dim = dim;
  s.n_layers = n_layers;
  s.n_heads = n_heads;
  s.n_kv_heads = n_heads;
  s.head_dim = mla.qk_head_dim();
  // A MoE block's feed-forward activations per token: its top_k experts' and shared experts'.
  s.ffn_hidden_dim = (moe_args.top_k + moe_args.num_shared_experts) * moe_inter_dim;
  s.vocab_size = vocab_size;
  s.max_seq_len = max_seq_len;
  s.tied_embeddings = false;
  s.layer_params = common::mean_block_params(decoder());
  s.layer_expert_params = common::moe_params(moe_args, dim, moe_inter_dim).experts;
  s.moe_top_k = moe_args.top_k;
  return s;
}

int64_t ModelArgs::num_params() const { return common::num_params(decoder()); }

int64_t ModelArgs::flops_per_token(int64_t seq_len) const {
  // torchtitan's MoE count: 6 * (N_active - N_embedding) + 6 * n_layers * n_heads *
  // (qk_nope_head_dim + qk_rope_head_dim + v_head_dim) * seq_len.
  return common::moe_flops_per_token(decoder(), seq_len);
}

std::string ModelArgs::attention_note() const {
  const common::DecoderArgs d = decoder();
  std::string note = "; multi-head latent attention (" +
                     (mla.q_lora_rank > 0 ? "queries through a " + std::to_string(mla.q_lora_rank) + "-wide latent, "
                                          : std::string()) +
                     "keys and values through a " + std::to_string(mla.kv_lora_rank) + "-wide latent; query-key heads " +
                     std::to_string(mla.qk_head_dim()) + " wide, values " + std::to_string(mla.v_head_dim) +
                     (mla.v_head_dim < mla.qk_head_dim() ? ", zero-padded to " + std::to_string(mla.qk_head_dim()) +
                                                               " for the attention kernel"
                                                         : std::string()) +
                     ")";
  if (max_seq_len > original_seq_len)
    note += "; YaRN: rotary frequencies scaled for " + std::to_string(max_seq_len) + " positions past " +
            std::to_string(original_seq_len) + " (factor " + log::format("%g", rope_factor) + "), softmax scale " +
            log::format("%.6g", d.softmax_scale());
  return note;
}

std::string ModelArgs::parameter_count_line() const { return common::moe_count_line(decoder()); }

std::string ModelArgs::describe() const {
  using common::py_float;
  // rope_factor is an int in torchtitan's flavors (40): printed without a fraction when whole.
  const std::string factor =
      rope_factor == static_cast<double>(static_cast<int64_t>(rope_factor)) ? std::to_string(static_cast<int64_t>(rope_factor))
                                                                             : py_float(rope_factor);
  return "DeepSeekV3ModelArgs(max_batch_size=8, max_seq_len=" + std::to_string(max_seq_len) +
         ", vocab_size=" + std::to_string(vocab_size) + ", dim=" + std::to_string(dim) +
         ", inter_dim=" + std::to_string(inter_dim) + ", moe_inter_dim=" + std::to_string(moe_inter_dim) +
         ", n_layers=" + std::to_string(n_layers) + ", n_dense_layers=" + std::to_string(n_dense_layers) +
         ", n_heads=" + std::to_string(n_heads) + ", norm_eps=" + log::format("%g", norm_eps) +
         ", moe_args=" + common::describe(moe_args) + ", expert_parallel_comm_backend='standard'" +
         ", q_lora_rank=" + std::to_string(mla.q_lora_rank) + ", kv_lora_rank=" + std::to_string(mla.kv_lora_rank) +
         ", qk_nope_head_dim=" + std::to_string(mla.qk_nope_head_dim) +
         ", qk_rope_head_dim=" + std::to_string(mla.qk_rope_head_dim) + ", v_head_dim=" + std::to_string(mla.v_head_dim) +
         ", attn_type='" + attn_type + "', attn_mask_type='" + attn_mask_type +
         "', original_seq_len=" + std::to_string(original_seq_len) + ", rope_theta=" + py_float(rope_theta) +
         ", rope_factor=" + factor + ", beta_fast=" + std::to_string(beta_fast) +
         ", beta_slow=" + std::to_string(beta_slow) + ", mscale=" + py_float(mscale) +
         (final_norm_eps ? ", final_norm_eps=" + log::format("%g", *final_norm_eps) : std::string()) + ")";
}

nlohmann::json ModelArgs::to_json() const {
  nlohmann::json j = {{"dim", dim},
          {"n_layers", n_layers},
          {"n_dense_layers", n_dense_layers},
          {"n_heads", n_heads},
          {"inter_dim", inter_dim},
          {"ffn_hidden_dim", inter_dim},
          {"moe_inter_dim", moe_inter_dim},
          {"vocab_size", vocab_size},
          {"norm_eps", norm_eps},
          {"max_seq_len", max_seq_len},
          {"moe_args", common::to_json(moe_args)},
          {"q_lora_rank", mla.q_lora_rank},
          {"kv_lora_rank", mla.kv_lora_rank},
          {"qk_nope_head_dim", mla.qk_nope_head_dim},
          {"qk_rope_head_dim", mla.qk_rope_head_dim},
          {"v_head_dim", mla.v_head_dim},
          {"attn_type", attn_type},
          {"attn_mask_type", attn_mask_type},
          {"original_seq_len", original_seq_len},
          {"rope_theta", rope_theta},
          {"rope_factor", rope_factor},
          {"beta_fast", beta_fast},
          {"beta_slow", beta_slow},
          {"mscale", mscale},
          {"tied_embeddings", false}};
  if (final_norm_eps) j["final_norm_eps"] = *final_norm_eps;
  return j;
}

ModelArgs args_from_json(const nlohmann::json& j) {
  ModelArgs a;
  a.dim = j.at("dim").get<int64_t>();
  a.n_layers = j.at("n_layers").get<int64_t>();
  a.n_dense_layers = j.at("n_dense_layers").get<int64_t>();
  a.n_heads = j.at("n_heads").get<int64_t>();
  a.inter_dim = j.at("inter_dim").get<int64_t>();
  a.moe_inter_dim = j.at("moe_inter_dim").get<int64_t>();
  a.vocab_size = j.at("vocab_size").get<int64_t>();
  a.norm_eps = j.at("norm_eps").get<double>();
  a.max_seq_len = j.at("max_seq_len").get<int64_t>();
  a.moe_args = common::moe_args_from_json(j.at("moe_args"));
  a.mla.q_lora_rank = j.at("q_lora_rank").get<int64_t>();
  a.mla.kv_lora_rank = j.at("kv_lora_rank").get<int64_t>();
  a.mla.qk_nope_head_dim = j.at("qk_nope_head_dim").get<int64_t>();
  a.mla.qk_rope_head_dim = j.at("qk_rope_head_dim").get<int64_t>();
  a.mla.v_head_dim = j.at("v_head_dim").get<int64_t>();
  a.attn_type = j.at("attn_type").get<std::string>();
  a.attn_mask_type = j.at("attn_mask_type").get<std::string>();
  a.original_seq_len = j.at("original_seq_len").get<int64_t>();
  a.rope_theta = j.at("rope_theta").get<double>();
  a.rope_factor = j.at("rope_factor").get<double>();
  a.beta_fast = j.at("beta_fast").get<int64_t>();
  a.beta_slow = j.at("beta_slow").get<int64_t>();
  a.mscale = j.at("mscale").get<double>();
  if (j.contains("final_norm_eps")) a.final_norm_eps = j["final_norm_eps"].get<double>();
  return a;
}

}  // namespace titan::models::deepseek_v3
