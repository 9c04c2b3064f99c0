// Writes titan.cpp's side of the DeepSeek-V3 parity check: for a few small configurations
// (queries with and without their latent, YaRN off and on, softmax and node-limited sigmoid
// routing, dense and MoE blocks, fused kernels with block-causal attention), the weights, a
// random expert bias, a batch, the logits, the loss and every gradient (float32).
// tests/parity/test_deepseek_parity.py recomputes them with deepseek_ref.py.
// usage: deepseek_dump --out DIR
#include <torch/serialize.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "titan/components/loss.h"
#include "titan/models/deepseek_v3/model.h"

using titan::models::deepseek_v3::ModelArgs;
using titan::models::deepseek_v3::Transformer;

namespace {

struct Case {
  std::string name;
  ModelArgs args;
  int64_t batch, seq;
  bool fused = false;
  int64_t document_eos = -1;  // >= 0: block-causal attention
};

ModelArgs small(int64_t q_lora_rank) {
  ModelArgs a;
  a.vocab_size = 97;
  a.dim = 64;
  a.inter_dim = 96;
  a.moe_inter_dim = 32;
  a.n_layers = 3;
  a.n_dense_layers = 1;
  a.n_heads = 4;
  a.mla.q_lora_rank = q_lora_rank;
  a.mla.kv_lora_rank = 32;
  a.mla.qk_nope_head_dim = 16;
  a.mla.qk_rope_head_dim = 8;
  a.mla.v_head_dim = 12;
  a.moe_args.num_experts = 8;
  a.moe_args.num_shared_experts = 2;
  a.moe_args.top_k = 3;
  a.moe_args.score_func = "softmax";
  a.moe_args.score_before_experts = false;
  a.mscale = 0.7;
  return a;
}

// torchtitan's 671B router at small size, and YaRN: 32 positions past an original context of 8.
ModelArgs yarn_sigmoid(int64_t q_lora_rank) {
  ModelArgs a = small(q_lora_rank);
  a.moe_args.num_shared_experts = 1;
  a.moe_args.score_func = "sigmoid";
  a.moe_args.route_norm = true;
  a.moe_args.route_scale = 2.5;
  a.moe_args.num_expert_groups = 4;
  a.moe_args.num_limited_groups = 2;
  a.original_seq_len = 8;
  a.rope_factor = 40;
  a.mscale = 1.0;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out") {
    std::fprintf(stderr, "usage: deepseek_dump --out DIR\n");
    return 2;
  }
  const std::filesystem::path out = argv[2];
  std::filesystem::create_directories(out);
  std::vector<Case> cases = {{"no_query_latent", small(0), 2, 16},
                             {"query_latent_yarn_groups", yarn_sigmoid(24), 2, 32},
                             {"fused_documents", yarn_sigmoid(24), 2, 32, true, 5}};
  c10::Dict<std::string, at::Tensor> dict;
  nlohmann::json meta;
  meta["cases"] = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    c.args.max_seq_len = c.seq;
    Transformer model(c.args, at::TensorOptions());
    model.init_weights(200 + i);
    model.set_fused_kernels(c.fused, false);
    if (c.document_eos >= 0) model.set_document_eos(c.document_eos);
    at::manual_seed(static_cast<uint64_t>(i));
    for (auto& b : model.named_buffers()) b.tensor->copy_(at::randn(b.tensor->sizes()) * 0.01);  // expert_bias
    at::Tensor tokens = at::randint(0, c.args.vocab_size, {c.batch, c.seq}, at::kLong);
    if (c.document_eos >= 0) {  // a few documents per row
      tokens[0][6] = c.document_eos;
      tokens[0][20] = c.document_eos;
      tokens[1][11] = c.document_eos;
    }
    at::Tensor labels = at::randint(0, c.args.vocab_size, {c.batch, c.seq}, at::kLong);
    labels[0][1] = titan::components::kIgnoreIndex;
    at::Tensor logits = model.forward(tokens);
    at::Tensor loss =
        titan::components::cross_entropy_loss(logits, labels, titan::components::count_valid_tokens(labels));
    loss.backward();
    const std::string p = c.name + "/";
    for (auto& np : model.named_parameters()) {
      dict.insert(p + "param/" + np.name, np.tensor->detach().clone());
      dict.insert(p + "grad/" + np.name, np.tensor->grad().clone());
    }
    for (auto& b : model.named_buffers()) dict.insert(p + "buffer/" + b.name, b.tensor->clone());
    dict.insert(p + "tokens", tokens);
    dict.insert(p + "labels", labels);
    dict.insert(p + "logits", logits.detach().clone());
    dict.insert(p + "loss", loss.detach().clone());
    meta["cases"].push_back({{"name", c.name}, {"args", c.args.to_json()}, {"document_eos", c.document_eos}});
  }
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(out / "case.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::ofstream(out / "case.json") << meta.dump(2);
  std::printf("wrote %zu cases to %s\n", cases.size(), out.c_str());
  return 0;
}
