#include "titan/models/common/hf_layout.h"

#include <regex>

#include "titan/common/error.h"

namespace titan::models::common {

namespace {

// Our per-layer names and transformers'.
const std::pair<const char*, const char*> kLayerNames[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight"},   {"attention.wk.weight", "self_attn.k_proj.weight"},
    {"attention.wv.weight", "self_attn.v_proj.weight"},   {"attention.wo.weight", "self_attn.o_proj.weight"},
    {"attention.q_norm.weight", "self_attn.q_norm.weight"}, {"attention.k_norm.weight", "self_attn.k_norm.weight"},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight"},   {"feed_forward.w2.weight", "mlp.down_proj.weight"},
    {"feed_forward.w3.weight", "mlp.up_proj.weight"},     {"attention_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"}, {"moe.router.gate.weight", "mlp.gate.weight"},
    {"moe.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"},
    {"moe.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"},
    {"moe.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"},
};

// A MoE block's routed experts: ours (E, ...) and transformers' name of one expert's matrix.
const std::pair<const char*, const char*> kExpertNames[] = {
    {"moe.experts.w1", "gate_proj.weight"}, {"moe.experts.w2", "down_proj.weight"}, {"moe.experts.w3", "up_proj.weight"}};

// "layers.N.moe.experts.w1" -> ("N", "gate_proj.weight"); nullopt for other names.
std::optional<std::pair<std::string, std::string>> expert_name(const std::string& fqn) {
  static const std::regex re(R"(layers\.([0-9]+)\.(moe\.experts\.w[123]))");
  std::smatch m;
  if (!std::regex_match(fqn, m, re)) return std::nullopt;
  for (const auto& [ours, theirs] : kExpertNames)
    if (m[2] == ours) return std::make_pair(m[1].str(), std::string(theirs));
  return std::nullopt;
}

// (rows, cols) or (rows,) viewed as (heads, 2, rows / heads / 2, cols) in one order or the other.
at::Tensor permute_heads(const at::Tensor& w, int64_t heads, bool to_halves) {
  const bool vector = w.dim() == 1;
  const at::Tensor m = vector ? w.unsqueeze(1) : w;
  const int64_t rows = m.size(0), cols = m.size(1), hd = rows / heads;
  at::Tensor out = to_halves ? m.reshape({heads, hd / 2, 2, cols}).transpose(1, 2)
                             : m.reshape({heads, 2, hd / 2, cols}).transpose(1, 2);
  out = out.reshape({rows, cols}).contiguous();
  return vector ? out.squeeze(1) : out;
}

}  // namespace

std::string to_hf_name(const std::string& fqn) {
  if (fqn == "tok_embeddings.weight") return "model.embed_tokens.weight";
  if (fqn == "norm.weight") return "model.norm.weight";
  if (fqn == "output.weight") return "lm_head.weight";
  static const std::regex layer_re(R"(layers\.([0-9]+)\.(.+))");
  std::smatch m;
  if (std::regex_match(fqn, m, layer_re))
    for (const auto& [ours, theirs] : kLayerNames)
      if (m[2] == ours) return "model.layers." + m[1].str() + "." + theirs;
  throw Error("the parameter " + fqn + " has no Hugging Face name", "");
}

std::optional<std::string> from_hf_name(const std::string& hf, bool tied) {
  if (hf == "model.embed_tokens.weight") return "tok_embeddings.weight";
  if (hf == "model.norm.weight") return "norm.weight";
  if (hf == "lm_head.weight") return tied ? std::nullopt : std::optional<std::string>("output.weight");
  static const std::regex layer_re(R"(model\.layers\.([0-9]+)\.(.+))");
  static const std::regex expert_re(R"(mlp\.experts\.[0-9]+\.(.+))");
  std::smatch m;
  if (std::regex_match(hf, m, layer_re)) {
    const std::string layer = m[1].str(), rest = m[2].str();
    for (const auto& [ours, theirs] : kLayerNames)
      if (rest == theirs) return "layers." + layer + "." + ours;
    std::smatch e;
    if (std::regex_match(rest, e, expert_re))
      for (const auto& [ours, theirs] : kExpertNames)
        if (e[1] == theirs) return "layers." + layer + "." + ours;
  }
  return std::nullopt;
}

double hf_rope_theta(const nlohmann::json& c) {
  if (c.contains("rope_theta")) return c["rope_theta"].get<double>();
  const nlohmann::json rp = c.value("rope_parameters", nlohmann::json(nullptr));
  return rp.is_object() ? rp.value("rope_theta", 10000.0) : 10000.0;
}

at::Tensor pairs_to_halves(const at::Tensor& w, int64_t heads) { return permute_heads(w, heads, true); }
at::Tensor halves_to_pairs(const at::Tensor& w, int64_t heads) { return permute_heads(w, heads, false); }

namespace {

// The heads whose rows (or, for the per-head norms, whose one vector) `fqn` holds; 0 when it
// is not rotated.
int64_t rotated_heads(const std::string& fqn, const Sizes& s) {
  if (fqn.ends_with("attention.wq.weight")) return s.n_heads;
  if (fqn.ends_with("attention.wk.weight")) return s.n_kv_heads;
  if (fqn.ends_with("attention.q_norm.weight") || fqn.ends_with("attention.k_norm.weight")) return 1;
  return 0;
}

}  // namespace

at::Tensor DecoderHfAdapter::to_hf(const std::string& fqn, const at::Tensor& t) const {
  const int64_t heads = rotated_heads(fqn, sizes_);
  return heads ? pairs_to_halves(t, heads) : t;
}

at::Tensor DecoderHfAdapter::from_hf(const std::string& fqn, const at::Tensor& t) const {
  const int64_t heads = rotated_heads(fqn, sizes_);
  return heads ? halves_to_pairs(t, heads) : t;
}

std::vector<std::string> DecoderHfAdapter::to_hf_names(const std::string& fqn) const {
  const auto expert = expert_name(fqn);
  if (!expert) return {to_hf_name(fqn)};
  std::vector<std::string> out;
  for (int64_t e = 0; e < num_experts_; ++e)
    out.push_back("model.layers." + expert->first + ".mlp.experts." + std::to_string(e) + "." + expert->second);
  return out;
}

std::vector<at::Tensor> DecoderHfAdapter::to_hf_parts(const std::string& fqn, const at::Tensor& t) const {
  if (!expert_name(fqn)) return {to_hf(fqn, t)};
  TORCH_CHECK(t.size(0) == num_experts_, "to_hf_parts: ", fqn, " holds ", t.size(0), " experts, not ", num_experts_);
  return t.unbind(0);
}

at::Tensor DecoderHfAdapter::from_hf_parts(const std::string& fqn, const std::vector<at::Tensor>& parts) const {
  if (!expert_name(fqn)) return from_hf(fqn, parts.at(0));
  for (const auto& p : parts)  // experts of unequal shapes cannot stack
    if (p.sizes() != parts.at(0).sizes())
      throw Error("the experts of " + fqn + " have shapes " + c10::str(parts.at(0).sizes()) + " and " +
                      c10::str(p.sizes()),
                  "the weights are damaged; convert a folder saved whole by save_pretrained");
  return at::stack(parts, 0);
}

void DecoderHfAdapter::check_same(const ModelConfig& have_config, const std::string& where) const {
  if (have_config.family() != family_)
    throw Error(where + " describes a " + have_config.family() + " model but this run's model is " + family_,
                "use a model.name that matches the Hugging Face model");
  const Sizes have = have_config.sizes();
  auto mismatch = [&](const char* what, int64_t want, int64_t got) {
    if (want != got)
      throw Error(where + ": " + what + " is " + std::to_string(got) + " but this run's model has " + std::to_string(want),
                  "use a model.flavor (and model.vocab_size) that matches the Hugging Face model");
  };
  mismatch("hidden_size", sizes_.dim, have.dim);
  mismatch("num_hidden_layers", sizes_.n_layers, have.n_layers);
  mismatch("num_attention_heads", sizes_.n_heads, have.n_heads);
  mismatch("num_key_value_heads", sizes_.n_kv_heads, have.n_kv_heads);
  mismatch("head_dim", sizes_.head_dim, have.head_dim);
  mismatch("vocab_size", sizes_.vocab_size, have.vocab_size);
  mismatch("intermediate_size", sizes_.ffn_hidden_dim, have.ffn_hidden_dim);
  mismatch("tie_word_embeddings", sizes_.tied_embeddings, have.tied_embeddings);
}

bool DecoderHfAdapter::ignorable(const std::string& hf_name) const {
  return hf_name.find("rotary_emb.inv_freq") != std::string::npos ||
         (sizes_.tied_embeddings && hf_name == "lm_head.weight");
}

}  // namespace titan::models::common
