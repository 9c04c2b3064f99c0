// Writes the C++ side of the model parity check: for a few small configurations, the weights,
// a batch, our logits, loss and gradients (float32). tests/parity/test_model_parity.py loads
// them into an independent PyTorch implementation and compares.
// usage: parity_dump --out DIR
#include <torch/serialize.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "titan/components/loss.h"
#include "titan/models/llama3/model.h"

using titan::models::llama3::ModelArgs;
using titan::models::llama3::Transformer;

namespace {

struct Case {
  std::string name;
  ModelArgs args;
  int64_t batch, seq;
  double embed_scale = 1.0;  // small embeddings make attention and RoPE errors visible in the logits
};

ModelArgs small(int64_t kv, bool tied, std::optional<double> mult) {
  ModelArgs a;
  a.dim = 64, a.n_layers = 2, a.n_heads = 4, a.n_kv_heads = kv, a.vocab_size = 97;
  a.multiple_of = 32, a.ffn_dim_multiplier = mult, a.max_seq_len = 16, a.tied_embeddings = tied;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out") {
    std::fprintf(stderr, "usage: parity_dump --out DIR\n");
    return 2;
  }
  const std::filesystem::path out = argv[2];
  std::filesystem::create_directories(out);
  ModelArgs debug = titan::models::llama3::flavor("debugmodel");
  debug.max_seq_len = 32;
  ModelArgs long_seq = small(2, false, std::nullopt);
  long_seq.max_seq_len = 256;
  const std::vector<Case> cases = {{"mha", small(4, false, std::nullopt), 2, 16},
                                   {"gqa", small(2, false, 1.3), 2, 16},
                                   {"tied_gqa", small(1, true, std::nullopt), 3, 9},
                                   {"debugmodel", debug, 2, 32},
                                   {"long_seq", long_seq, 1, 256, 0.003}};
  c10::Dict<std::string, at::Tensor> dict;
  nlohmann::json meta;
  meta["cases"] = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    Transformer model(c.args, at::TensorOptions());
    model.init_weights(100 + i);
    if (c.embed_scale != 1.0) {
      at::NoGradGuard no_grad;
      model.named_parameters().front().tensor->mul_(c.embed_scale);
    }
    at::manual_seed(static_cast<uint64_t>(i));
    at::Tensor tokens = at::randint(0, c.args.vocab_size, {c.batch, c.seq}, at::kLong);
    at::Tensor labels = at::randint(0, c.args.vocab_size, {c.batch, c.seq}, at::kLong);
    labels[0][1] = titan::components::kIgnoreIndex;
    labels[c.batch - 1][c.seq - 1] = titan::components::kIgnoreIndex;
    at::Tensor logits = model.forward(tokens);
    at::Tensor loss = titan::components::cross_entropy_loss(
        logits, labels, titan::components::count_valid_tokens(labels));
    loss.backward();
    const std::string p = c.name + "/";
    for (auto& np : model.named_parameters()) {
      dict.insert(p + "param/" + np.name, np.tensor->detach().clone());
      dict.insert(p + "grad/" + np.name, np.tensor->grad().clone());
    }
    dict.insert(p + "tokens", tokens);
    dict.insert(p + "labels", labels);
    dict.insert(p + "logits", logits.detach().clone());
    dict.insert(p + "loss", loss.detach().clone());
    const ModelArgs& a = c.args;
    meta["cases"].push_back({{"name", c.name},
                             {"args",
                              {{"dim", a.dim}, {"n_layers", a.n_layers}, {"n_heads", a.n_heads},
                               {"n_kv_heads", a.n_kv_heads}, {"vocab_size", a.vocab_size},
                               {"multiple_of", a.multiple_of},
                               {"ffn_dim_multiplier", a.ffn_dim_multiplier ? nlohmann::json(*a.ffn_dim_multiplier)
                                                                          : nlohmann::json(nullptr)},
                               {"norm_eps", a.norm_eps}, {"rope_theta", a.rope_theta},
                               {"max_seq_len", a.max_seq_len}, {"tied_embeddings", a.tied_embeddings}}}});
  }
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(out / "case.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::ofstream(out / "case.json") << meta.dump(2);
  std::printf("wrote %zu cases to %s\n", cases.size(), out.c_str());
  return 0;
}
