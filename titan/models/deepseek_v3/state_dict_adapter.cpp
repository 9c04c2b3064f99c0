#include "titan/models/deepseek_v3/state_dict_adapter.h"

#include <cmath>
#include <limits>
#include <regex>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan::models::deepseek_v3 {

namespace {

// The latent attention's names, ours and transformers'; the rest are the shared decoder's.
const std::pair<const char*, const char*> kAttention[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight"},
    {"attention.wq_a.weight", "self_attn.q_a_proj.weight"},
    {"attention.q_norm.weight", "self_attn.q_a_layernorm.weight"},
    {"attention.wq_b.weight", "self_attn.q_b_proj.weight"},
    {"attention.wkv_a.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {"attention.kv_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {"attention.wkv_b.weight", "self_attn.kv_b_proj.weight"},
    {"attention.wo.weight", "self_attn.o_proj.weight"},
};

const char* kFix = "use the config.json of a DeepSeek-V3 (DeepseekV3ForCausalLM) model";

}  // namespace

std::string StateDictAdapter::to_hf_name(const std::string& fqn) const {
  static const std::regex re(R"(layers\.([0-9]+)\.(attention\..+))");
  std::smatch m;
  if (std::regex_match(fqn, m, re)) {
    for (const auto& [ours, theirs] : kAttention)
      if (m[2] == ours) return "model.layers." + m[1].str() + "." + theirs;
    throw Error("the parameter " + fqn + " has no Hugging Face name", "");
  }
  return common::to_hf_name(fqn);
}

std::optional<std::string> StateDictAdapter::from_hf_name(const std::string& hf_name) const {
  static const std::regex re(R"(model\.layers\.([0-9]+)\.(self_attn\..+))");
  std::smatch m;
  if (std::regex_match(hf_name, m, re)) {
    for (const auto& [ours, theirs] : kAttention)
      if (m[2] == theirs) return "layers." + m[1].str() + "." + ours;
    return std::nullopt;
  }
  return common::from_hf_name(hf_name, false);
}

std::optional<std::string> StateDictAdapter::buffer_hf_name(const std::string& fqn) const {
  static const std::regex re(R"(layers\.([0-9]+)\.moe\.expert_bias)");
  std::smatch m;
  if (!std::regex_match(fqn, m, re)) return std::nullopt;
  return "model.layers." + m[1].str() + ".mlp.gate.e_score_correction_bias";
}

nlohmann::json StateDictAdapter::hf_config(const std::string& torch_dtype) const {
  const common::MoeArgs& m = args_.moe_args;
  const std::string keep = "keep this model in titan.cpp's checkpoint format (DCP), which torchtitan reads";
  if (m.score_func != "sigmoid")
    throw Error("transformers' DeepseekV3ForCausalLM routes tokens by sigmoid scores, but this model's MoE layers "
                "use score_func \"" + m.score_func + "\" (torchtitan's debugmodel, 16B and 236B flavors do), so "
                "it would pick other experts there",
                keep + ", or train a flavor that routes by sigmoid (671B)");
  if (m.score_before_experts || m.gate_bias)
    throw Error(std::string("transformers' DeepseekV3ForCausalLM scales the experts' outputs by the gate and its "
                            "router has no bias, but this model's MoE layers ") +
                    (m.gate_bias ? "have a router bias" : "scale the experts' inputs (score_before_experts)"),
                keep);
  if (m.num_shared_experts < 1)
    throw Error("transformers' DeepseekV3ForCausalLM has shared experts in every MoE block, this model none", keep);
  const double final_eps = args_.final_norm_eps.value_or(std::numeric_limits<float>::epsilon());
  if (final_eps != args_.norm_eps)
    log::warning("this DeepSeek-V3 model's final norm uses epsilon " + log::format("%g", final_eps) +
                 (args_.final_norm_eps ? "" : " (float32's, as torchtitan builds it)") +
                 " where transformers' DeepseekV3ForCausalLM uses rms_norm_eps " + log::format("%g", args_.norm_eps) +
                 ": its logits there differ slightly from titan.cpp's");
  const bool yarn = args_.max_seq_len > args_.original_seq_len;
  nlohmann::json rope_scaling = nullptr;
  if (yarn)
    rope_scaling = {{"rope_type", "yarn"},
                    {"factor", args_.rope_factor},
                    {"original_max_position_embeddings", args_.original_seq_len},
                    {"beta_fast", static_cast<double>(args_.beta_fast)},
                    {"beta_slow", static_cast<double>(args_.beta_slow)},
                    {"mscale", args_.mscale},
                    {"mscale_all_dim", args_.mscale}};
  nlohmann::json q_lora = args_.mla.q_lora_rank > 0 ? nlohmann::json(args_.mla.q_lora_rank) : nlohmann::json(nullptr);
  return {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", args_.vocab_size},
      {"hidden_size", args_.dim},
      {"intermediate_size", args_.inter_dim},
      {"moe_intermediate_size", args_.moe_inter_dim},
      {"num_hidden_layers", args_.n_layers},
      {"first_k_dense_replace", args_.n_dense_layers},
      {"num_attention_heads", args_.n_heads},
      {"num_key_value_heads", args_.n_heads},
      {"n_routed_experts", m.num_experts},
      {"n_shared_experts", m.num_shared_experts},
      {"num_experts_per_tok", m.top_k},
      {"norm_topk_prob", m.route_norm},
      {"routed_scaling_factor", m.route_scale},
      {"n_group", m.num_expert_groups.value_or(1)},
      {"topk_group", m.num_limited_groups.value_or(1)},
      {"q_lora_rank", q_lora},
      {"kv_lora_rank", args_.mla.kv_lora_rank},
      {"qk_nope_head_dim", args_.mla.qk_nope_head_dim},
      {"qk_rope_head_dim", args_.mla.qk_rope_head_dim},
      {"v_head_dim", args_.mla.v_head_dim},
      {"rms_norm_eps", args_.norm_eps},
      {"rope_theta", args_.rope_theta},
      {"rope_scaling", rope_scaling},
      {"rope_interleave", true},
      {"max_position_embeddings", yarn ? args_.max_seq_len : std::max(args_.max_seq_len, args_.original_seq_len)},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", false},
      {"num_nextn_predict_layers", 0},
      {"torch_dtype", torch_dtype},
  };
}

void StateDictAdapter::check_same(const ModelConfig& have_config, const std::string& where) const {
  if (have_config.family() != family_)
    return common::DecoderHfAdapter::check_same(have_config, where);  // names both families
  const auto& have = dynamic_cast<const ModelArgs&>(have_config);
  const std::string fix = "use a model.flavor that matches the Hugging Face model";
  auto mismatch = [&](const char* what, double want, double got) {
    if (want != got)
      throw Error(where + ": " + what + " is " + log::format("%g", got) + " but this run's model has " +
                      log::format("%g", want),
                  fix);
  };
  const common::MoeArgs &a = args_.moe_args, &b = have.moe_args;
  mismatch("first_k_dense_replace", args_.n_dense_layers, have.n_dense_layers);
  mismatch("intermediate_size", args_.inter_dim, have.inter_dim);
  mismatch("moe_intermediate_size", args_.moe_inter_dim, have.moe_inter_dim);
  mismatch("q_lora_rank", args_.mla.q_lora_rank, have.mla.q_lora_rank);
  mismatch("kv_lora_rank", args_.mla.kv_lora_rank, have.mla.kv_lora_rank);
  mismatch("qk_nope_head_dim", args_.mla.qk_nope_head_dim, have.mla.qk_nope_head_dim);
  mismatch("qk_rope_head_dim", args_.mla.qk_rope_head_dim, have.mla.qk_rope_head_dim);
  mismatch("v_head_dim", args_.mla.v_head_dim, have.mla.v_head_dim);
  mismatch("n_routed_experts", a.num_experts, b.num_experts);
  mismatch("n_shared_experts", a.num_shared_experts, b.num_shared_experts);
  mismatch("num_experts_per_tok", a.top_k, b.top_k);
  mismatch("norm_topk_prob", a.route_norm, b.route_norm);
  mismatch("routed_scaling_factor", a.route_scale, b.route_scale);
  mismatch("n_group", a.num_expert_groups.value_or(1), b.num_expert_groups.value_or(1));
  mismatch("topk_group", a.num_limited_groups.value_or(1), b.num_limited_groups.value_or(1));
  if (a.score_func != b.score_func)
    throw Error(where + " routes by " + b.score_func + " scores but this run's model by " + a.score_func, fix);
  common::DecoderHfAdapter::check_same(have_config, where);
}

ModelArgs StateDictAdapter::args_from_hf_config(const nlohmann::json& c, const std::string& where) {
  try {
    const std::string type = c.value("model_type", "");
    if (type != "deepseek_v3") throw Error(where + ": model_type \"" + type + "\" is not deepseek_v3", kFix);
    if (c.contains("quantization_config") && !c["quantization_config"].is_null())
      throw Error(where + " describes quantized weights (quantization_config " + c["quantization_config"].dump() +
                      "), which titan.cpp does not read",
                  "convert a folder of bfloat16 or float32 weights (dequantize the checkpoint first)");
    auto opt_int = [&](const char* key, int64_t fallback) {
      return c.contains(key) && !c[key].is_null() ? c[key].get<int64_t>() : fallback;
    };
    ModelArgs a;
    a.vocab_size = c.at("vocab_size").get<int64_t>();
    a.dim = c.at("hidden_size").get<int64_t>();
    a.inter_dim = c.at("intermediate_size").get<int64_t>();
    a.moe_inter_dim = c.at("moe_intermediate_size").get<int64_t>();
    a.n_layers = c.at("num_hidden_layers").get<int64_t>();
    a.n_dense_layers = opt_int("first_k_dense_replace", 0);
    a.n_heads = c.at("num_attention_heads").get<int64_t>();
    if (opt_int("num_key_value_heads", a.n_heads) != a.n_heads)
      throw Error(where + ": num_key_value_heads " + c["num_key_value_heads"].dump() + " is not num_attention_heads " +
                      std::to_string(a.n_heads) + ", which DeepSeek-V3's latent attention expands its keys to",
                  kFix);
    a.norm_eps = c.value("rms_norm_eps", 1e-6);
    a.final_norm_eps = a.norm_eps;
    a.mla.q_lora_rank = opt_int("q_lora_rank", 0);
    a.mla.kv_lora_rank = c.at("kv_lora_rank").get<int64_t>();
    a.mla.qk_nope_head_dim = c.at("qk_nope_head_dim").get<int64_t>();
    a.mla.qk_rope_head_dim = c.at("qk_rope_head_dim").get<int64_t>();
    a.mla.v_head_dim = c.at("v_head_dim").get<int64_t>();
    common::MoeArgs& m = a.moe_args;
    // transformers 5 writes num_local_experts beside n_routed_experts.
    m.num_experts = c.contains("n_routed_experts") ? c["n_routed_experts"].get<int64_t>()
                                                   : c.at("num_local_experts").get<int64_t>();
    m.num_shared_experts = opt_int("n_shared_experts", 0);
    m.top_k = c.at("num_experts_per_tok").get<int64_t>();
    m.score_func = "sigmoid";
    m.route_norm = c.value("norm_topk_prob", false);
    m.route_scale = c.value("routed_scaling_factor", 1.0);
    m.score_before_experts = false;
    m.gate_bias = false;
    const int64_t groups = opt_int("n_group", 1), limited = opt_int("topk_group", 1);
    if (groups > 1) {
      m.num_expert_groups = groups;
      m.num_limited_groups = limited;
    }
    a.max_seq_len = c.value("max_position_embeddings", int64_t{4096});
    // transformers 4 writes rope_scaling; 5 writes rope_parameters.
    const nlohmann::json rp = c.value("rope_parameters", nlohmann::json(nullptr));
    const nlohmann::json rs = c.value("rope_scaling", nlohmann::json(nullptr));
    a.rope_theta = common::hf_rope_theta(c);
    const nlohmann::json& scaling = rs.is_object() ? rs : rp;
    const std::string rope_type =
        scaling.is_object() ? scaling.value("rope_type", scaling.value("type", std::string("default"))) : "default";
    if (rope_type == "default") {  // plain RoPE: YaRN's factor 1 changes nothing
      a.rope_factor = 1.0;
      a.original_seq_len = a.max_seq_len;
    } else if (rope_type == "yarn") {
      const std::string yarn_fix = "titan.cpp builds DeepSeek-V3's YaRN as torchtitan does: mscale equal to "
                                   "mscale_all_dim, no attention_factor, truncate true, whole beta_fast and beta_slow";
      a.original_seq_len = scaling.at("original_max_position_embeddings").get<int64_t>();
      a.rope_factor = scaling.contains("factor") && !scaling["factor"].is_null()
                          ? scaling["factor"].get<double>()
                          : static_cast<double>(a.max_seq_len) / static_cast<double>(a.original_seq_len);
      const double fast = scaling.contains("beta_fast") && !scaling["beta_fast"].is_null() ? scaling["beta_fast"].get<double>() : 32;
      const double slow = scaling.contains("beta_slow") && !scaling["beta_slow"].is_null() ? scaling["beta_slow"].get<double>() : 1;
      const double mscale = scaling.value("mscale", 0.0), all_dim = scaling.value("mscale_all_dim", 0.0);
      const bool attention_factor = scaling.contains("attention_factor") && !scaling["attention_factor"].is_null() &&
                                    scaling["attention_factor"].get<double>() != 1.0;
      if (fast != std::floor(fast) || slow != std::floor(slow) || mscale == 0.0 || mscale != all_dim ||
          attention_factor || !scaling.value("truncate", true))
        throw Error(where + ": the YaRN settings " + scaling.dump() + " are not built", yarn_fix);
      a.beta_fast = static_cast<int64_t>(fast);
      a.beta_slow = static_cast<int64_t>(slow);
      a.mscale = mscale;
    } else {
      throw Error(where + ": rope type \"" + rope_type + "\" is not built for deepseek_v3",
                  "titan.cpp builds DeepSeek-V3 with plain RoPE or YaRN");
    }
    if (!c.value("rope_interleave", true))
      throw Error(where + ": rope_interleave = false (rotary halves) is not built for deepseek_v3",
                  "titan.cpp rotates interleaved pairs, as DeepSeek-V3's own weights expect (rope_interleave true)");
    if (c.value("attention_bias", false)) throw Error(where + ": attention_bias = true is not DeepSeek-V3's", kFix);
    if (c.value("tie_word_embeddings", false))
      throw Error(where + ": tie_word_embeddings = true is not built for deepseek_v3", kFix);
    if (c.value("hidden_act", "silu") != "silu")
      throw Error(where + ": hidden_act \"" + c.value("hidden_act", "") + "\" is not silu", kFix);
    for (int64_t v : {a.vocab_size, a.dim, a.inter_dim, a.moe_inter_dim, a.n_layers, a.n_heads, a.mla.kv_lora_rank,
                      a.mla.qk_nope_head_dim, a.mla.qk_rope_head_dim, a.mla.v_head_dim, m.num_experts, m.top_k,
                      m.num_shared_experts})
      if (v < 1)
        throw Error(where + ": a size is " + std::to_string(v) + " (n_shared_experts, too, must be at least 1)", kFix);
    if (a.n_dense_layers < 0 || a.n_dense_layers > a.n_layers || m.top_k > m.num_experts ||
        a.mla.qk_rope_head_dim % 2 != 0 || a.mla.q_lora_rank < 0)
      throw Error(where + ": first_k_dense_replace " + std::to_string(a.n_dense_layers) + ", num_experts_per_tok " +
                      std::to_string(m.top_k) + " or qk_rope_head_dim " + std::to_string(a.mla.qk_rope_head_dim) +
                      " is out of range",
                  kFix);
    if (m.num_expert_groups && (m.num_experts % groups != 0 || m.num_experts / groups < 2 || limited < 1 ||
                                limited > groups))
      throw Error(where + ": n_group " + std::to_string(groups) + " and topk_group " + std::to_string(limited) +
                      " do not split " + std::to_string(m.num_experts) + " experts into groups of 2 or more",
                  kFix);
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": " + e.what(), kFix);
  }
}

}  // namespace titan::models::deepseek_v3
