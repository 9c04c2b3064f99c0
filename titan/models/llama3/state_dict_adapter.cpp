#include "titan/models/llama3/state_dict_adapter.h"

#include "titan/common/error.h"
#include "titan/models/common/hf_layout.h"

namespace titan::models::llama3 {

nlohmann::json StateDictAdapter::hf_config(const std::string& torch_dtype) const {
  nlohmann::json c = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", args_.dim},
      {"intermediate_size", args_.ffn_hidden_dim()},
      {"num_hidden_layers", args_.n_layers},
      {"num_attention_heads", args_.n_heads},
      {"num_key_value_heads", args_.n_kv_heads},
      {"head_dim", args_.head_dim()},
      {"vocab_size", args_.vocab_size},
      {"rms_norm_eps", args_.norm_eps},
      {"rope_theta", args_.rope_theta},
      {"max_position_embeddings", std::max<int64_t>(args_.max_seq_len, 131072)},
      {"tie_word_embeddings", args_.tied_embeddings},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"torch_dtype", torch_dtype},
  };
  c["rope_scaling"] = args_.use_scaled_rope
                          ? nlohmann::json{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}
                          : nlohmann::json(nullptr);
  return c;
}

ModelArgs StateDictAdapter::args_from_hf_config(const nlohmann::json& c, const std::string& where) {
  const std::string fix = "use the config.json of a Llama (LlamaForCausalLM) model";
  try {
    if (c.value("model_type", "llama") != "llama")
      throw Error(where + ": model_type \"" + c.value("model_type", "") + "\" is not llama", fix);
    ModelArgs a;
    a.dim = c.at("hidden_size").get<int64_t>();
    a.n_layers = c.at("num_hidden_layers").get<int64_t>();
    a.n_heads = c.at("num_attention_heads").get<int64_t>();
    a.n_kv_heads = c.value("num_key_value_heads", a.n_heads);
    a.vocab_size = c.at("vocab_size").get<int64_t>();
    a.norm_eps = c.value("rms_norm_eps", 1e-5);
    // transformers 4 writes rope_scaling; 5 writes rope_parameters.
    const nlohmann::json rp = c.value("rope_parameters", nlohmann::json(nullptr));
    a.rope_theta = common::hf_rope_theta(c);
    a.tied_embeddings = c.value("tie_word_embeddings", false);
    if (c.contains("head_dim") && !c["head_dim"].is_null() && c["head_dim"].get<int64_t>() * a.n_heads != a.dim)
      throw Error(where + ": head_dim * num_attention_heads != hidden_size, which Llama 3 in titan.cpp does not build", fix);
    nlohmann::json rs = c.value("rope_scaling", nlohmann::json(nullptr));
    if (rs.is_null() && rp.is_object() && rp.value("rope_type", "default") != "default") rs = rp;
    a.use_scaled_rope = !rs.is_null();
    if (a.use_scaled_rope && (rs.value("rope_type", rs.value("type", "")) != "llama3" || rs.value("factor", 0.0) != 8.0 ||
                              rs.value("low_freq_factor", 0.0) != 1.0 || rs.value("high_freq_factor", 0.0) != 4.0 ||
                              rs.value("original_max_position_embeddings", 0) != 8192))
      throw Error(where + ": rope_scaling " + rs.dump() + " is not Llama 3.1's (llama3, factor 8, low 1, high 4, 8192)",
                  "titan.cpp builds Llama 3 with that scaling or none");
    // The FFN size as given: multiple_of = intermediate_size, scaled down to it when 8/3 * dim is larger.
    const int64_t ffn = c.at("intermediate_size").get<int64_t>();
    const int64_t base = 2 * 4 * a.dim / 3;
    a.multiple_of = ffn;
    a.ffn_dim_multiplier = base > ffn ? std::optional<double>(static_cast<double>(ffn) / static_cast<double>(base))
                                      : std::nullopt;
    if (ffn < 2 || a.ffn_hidden_dim() != ffn)
      throw Error(where + ": intermediate_size " + std::to_string(ffn) + " cannot be built", fix);
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": " + e.what(), fix);
  }
}

nlohmann::json ModelArgs::to_json() const { return args_to_json(*this); }

nlohmann::json args_to_json(const ModelArgs& a) {
  return {{"dim", a.dim},
          {"n_layers", a.n_layers},
          {"n_heads", a.n_heads},
          {"n_kv_heads", a.n_kv_heads},
          {"vocab_size", a.vocab_size},
          {"multiple_of", a.multiple_of},
          {"ffn_dim_multiplier", a.ffn_dim_multiplier ? nlohmann::json(*a.ffn_dim_multiplier) : nlohmann::json(nullptr)},
          {"ffn_hidden_dim", a.ffn_hidden_dim()},
          {"norm_eps", a.norm_eps},
          {"rope_theta", a.rope_theta},
          {"use_scaled_rope", a.use_scaled_rope},
          {"max_seq_len", a.max_seq_len},
          {"tied_embeddings", a.tied_embeddings}};
}

ModelArgs args_from_json(const nlohmann::json& j) {
  ModelArgs a;
  a.dim = j.at("dim").get<int64_t>();
  a.n_layers = j.at("n_layers").get<int64_t>();
  a.n_heads = j.at("n_heads").get<int64_t>();
  a.n_kv_heads = j.at("n_kv_heads").get<int64_t>();
  a.vocab_size = j.at("vocab_size").get<int64_t>();
  a.multiple_of = j.at("multiple_of").get<int64_t>();
  if (!j.at("ffn_dim_multiplier").is_null()) a.ffn_dim_multiplier = j.at("ffn_dim_multiplier").get<double>();
  a.norm_eps = j.at("norm_eps").get<double>();
  a.rope_theta = j.at("rope_theta").get<double>();
  a.use_scaled_rope = j.at("use_scaled_rope").get<bool>();
  a.max_seq_len = j.at("max_seq_len").get<int64_t>();
  a.tied_embeddings = j.at("tied_embeddings").get<bool>();
  return a;
}

}  // namespace titan::models::llama3
