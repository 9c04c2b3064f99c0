#include "titan/models/qwen3/state_dict_adapter.h"

#include <algorithm>

#include "titan/common/error.h"
#include "titan/models/common/hf_layout.h"

namespace titan::models::qwen3 {

nlohmann::json StateDictAdapter::hf_config(const std::string& torch_dtype) const {
  nlohmann::json c = {
      {"architectures", {args_.moe_enabled ? "Qwen3MoeForCausalLM" : "Qwen3ForCausalLM"}},
      {"model_type", args_.moe_enabled ? "qwen3_moe" : "qwen3"},
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
  if (args_.moe_enabled) {
    const common::MoeArgs& m = args_.moe_args;
    c["num_experts"] = m.num_experts;
    c["num_experts_per_tok"] = m.top_k;
    c["moe_intermediate_size"] = args_.moe_inter_dim;
    c["norm_topk_prob"] = m.route_norm;
    c["decoder_sparse_step"] = 1;
    c["mlp_only_layers"] = nlohmann::json::array();
    c["output_router_logits"] = false;
    c["router_aux_loss_coef"] = 0.001;
  }
  return c;
}

void StateDictAdapter::check_same(const ModelConfig& have_config, const std::string& where) const {
  common::DecoderHfAdapter::check_same(have_config, where);
  const auto& have = dynamic_cast<const ModelArgs&>(have_config);
  const std::string fix = "use a model.flavor that matches the Hugging Face model";
  if (have.moe_enabled != args_.moe_enabled)
    throw Error(where + " describes a " + (have.moe_enabled ? "mixture-of-experts" : "dense") + " Qwen3 but this run's " +
                    "model is " + (args_.moe_enabled ? "a mixture of experts" : "dense"),
                fix);
  if (!have.moe_enabled) return;
  auto mismatch = [&](const char* what, int64_t want, int64_t got) {
    if (want != got)
      throw Error(where + ": " + what + " is " + std::to_string(got) + " but this run's model has " + std::to_string(want),
                  fix);
  };
  mismatch("num_experts", args_.moe_args.num_experts, have.moe_args.num_experts);
  mismatch("num_experts_per_tok", args_.moe_args.top_k, have.moe_args.top_k);
  mismatch("moe_intermediate_size", args_.moe_inter_dim, have.moe_inter_dim);
  mismatch("norm_topk_prob", args_.moe_args.route_norm, have.moe_args.route_norm);
}

ModelArgs StateDictAdapter::args_from_hf_config(const nlohmann::json& c, const std::string& where) {
  const std::string fix = "use the config.json of a Qwen3 (Qwen3ForCausalLM or Qwen3MoeForCausalLM) model";
  try {
    const std::string type = c.value("model_type", "");
    if (type != "qwen3" && type != "qwen3_moe")
      throw Error(where + ": model_type \"" + type + "\" is not qwen3 or qwen3_moe", fix);
    ModelArgs a;
    if (type == "qwen3_moe") {
      // Every block's MLP sparse, as titan.cpp's MoE flavors build it.
      const nlohmann::json only = c.value("mlp_only_layers", nlohmann::json::array());
      if (c.value("decoder_sparse_step", int64_t{1}) != 1 || (only.is_array() && !only.empty()))
        throw Error(where + ": decoder_sparse_step " + c.value("decoder_sparse_step", nlohmann::json(1)).dump() +
                        " and mlp_only_layers " + only.dump() + " mix dense and MoE blocks, which is not built",
                    "use a Qwen3 MoE model whose every block is sparse (decoder_sparse_step 1, no mlp_only_layers)");
      a.moe_enabled = true;
      a.moe_inter_dim = c.at("moe_intermediate_size").get<int64_t>();
      // transformers 5 writes num_local_experts, 4 num_experts.
      a.moe_args.num_experts = c.contains("num_experts") ? c["num_experts"].get<int64_t>()
                                                         : c.at("num_local_experts").get<int64_t>();
      a.moe_args.top_k = c.at("num_experts_per_tok").get<int64_t>();
      a.moe_args.route_norm = c.value("norm_topk_prob", false);
      a.moe_args.num_shared_experts = 0;
      a.moe_args.score_func = "softmax";
      a.moe_args.route_scale = 1.0;
      a.moe_args.score_before_experts = false;
      if (a.moe_inter_dim < 1 || a.moe_args.num_experts < 1 || a.moe_args.top_k < 1 ||
          a.moe_args.top_k > a.moe_args.num_experts)
        throw Error(where + ": num_experts " + std::to_string(a.moe_args.num_experts) + ", num_experts_per_tok " +
                        std::to_string(a.moe_args.top_k) + " and moe_intermediate_size " +
                        std::to_string(a.moe_inter_dim) + " must be >= 1, with num_experts_per_tok <= num_experts",
                    fix);
    }
    a.dim = c.at("hidden_size").get<int64_t>();
    a.n_layers = c.at("num_hidden_layers").get<int64_t>();
    a.n_heads = c.at("num_attention_heads").get<int64_t>();
    a.n_kv_heads = c.value("num_key_value_heads", a.n_heads);
    a.head_dim = c.contains("head_dim") && !c["head_dim"].is_null() ? c["head_dim"].get<int64_t>() : a.dim / a.n_heads;
    a.hidden_dim = c.at("intermediate_size").get<int64_t>();
    a.vocab_size = c.at("vocab_size").get<int64_t>();
    a.norm_eps = c.value("rms_norm_eps", 1e-6);
    // transformers 4 writes rope_scaling; 5 writes rope_parameters.
    const nlohmann::json rp = c.value("rope_parameters", nlohmann::json(nullptr));
    a.rope_theta = common::hf_rope_theta(c);
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
