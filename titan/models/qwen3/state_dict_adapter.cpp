#include "titan/models/qwen3/state_dict_adapter.h"

#include <algorithm>

#include "titan/common/error.h"
#include "titan/models/common/hf_layout.h"

namespace titan::models::qwen3 {

nlohmann::json StateDictAdapter::hf_config(const std::string& torch_dtype) const {
  return {
      {"architectures", {"Qwen3ForCausalLM"}},
      {"model_type", "qwen3"},
      {"hidden_size", args_.dim},
      {"intermediate_size", args_.hidden_dim},
      {"num_hidden_layers", args_.n_layers},
      {"num_attention_heads", args_.n_heads},
      {"num_key_value_heads", args_.n_kv_heads},
      {"head_dim", args_.head_dim},
      {"vocab_size", args_.vocab_size},
      {"rms_norm_eps", args_.norm_eps},
      {"rope_theta", args_.rope_theta},
      {"rope_scaling", nullptr},
      {"max_position_embeddings", std::max<int64_t>(args_.max_seq_len, 40960)},
      {"tie_word_embeddings", args_.tied_embeddings},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"use_sliding_window", false},
      {"sliding_window", nullptr},
      {"max_window_layers", args_.n_layers},
      {"torch_dtype", torch_dtype},
  };
}

ModelArgs StateDictAdapter::args_from_hf_config(const nlohmann::json& c, const std::string& where) {
  const std::string fix = "use the config.json of a dense Qwen3 (Qwen3ForCausalLM) model";
  try {
    if (c.value("model_type", "") != "qwen3")
      throw Error(where + ": model_type \"" + c.value("model_type", "") + "\" is not qwen3", fix);
    ModelArgs a;
    a.dim = c.at("hidden_size").get<int64_t>();
    a.n_layers = c.at("num_hidden_layers").get<int64_t>();
    a.n_heads = c.at("num_attention_heads").get<int64_t>();
    a.n_kv_heads = c.value("num_key_value_heads", a.n_heads);
    a.head_dim = c.contains("head_dim") && !c["head_dim"].is_null() ? c["head_dim"].get<int64_t>() : a.dim / a.n_heads;
    a.hidden_dim = c.at("intermediate_size").get<int64_t>();
    a.vocab_size = c.at("vocab_size").get<int64_t>();
    a.norm_eps = c.value("rms_norm_eps", 1e-6);
    // transformers 4 writes rope_theta and rope_scaling; 5 writes rope_parameters (theta inside).
    const nlohmann::json rp = c.value("rope_parameters", nlohmann::json(nullptr));
    a.rope_theta = c.contains("rope_theta") ? c["rope_theta"].get<double>()
                   : rp.is_object()          ? rp.value("rope_theta", 10000.0)
                                             : 10000.0;
    a.tied_embeddings = c.value("tie_word_embeddings", false);
    const nlohmann::json rs = c.value("rope_scaling", nlohmann::json(nullptr));
    if (!rs.is_null() || (rp.is_object() && rp.value("rope_type", "default") != "default"))
      throw Error(where + ": RoPE scaling " + (rs.is_null() ? rp : rs).dump() + " is not built for qwen3",
                  "titan.cpp builds Qwen3 with plain RoPE (rope_scaling null)");
    if (c.value("attention_bias", false)) throw Error(where + ": attention_bias = true is not Qwen3's", fix);
    if (c.value("use_sliding_window", false))
      throw Error(where + ": use_sliding_window = true: sliding-window attention is not built", fix);
    if (c.value("hidden_act", "silu") != "silu")
      throw Error(where + ": hidden_act \"" + c.value("hidden_act", "") + "\" is not silu", fix);
    for (int64_t v : {a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_dim, a.vocab_size})
      if (v < 1) throw Error(where + ": a size is " + std::to_string(v), fix);
    if (a.head_dim % 2 != 0 || a.n_heads % a.n_kv_heads != 0)
      throw Error(where + ": head_dim must be even and num_attention_heads a multiple of num_key_value_heads", fix);
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": " + e.what(), fix);
  }
}

}  // namespace titan::models::qwen3
