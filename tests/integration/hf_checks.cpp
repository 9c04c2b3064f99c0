// The C++ side of the Hugging Face interop test (tests/integration/test_hf.py):
//   hf_checks init --args JSON --seed N --out STEP_FOLDER   a random model as a titan.cpp checkpoint
//   hf_checks logits --checkpoint STEP_FOLDER --tokens 1,2,3 --out FILE
//                                                          our float32 logits (1, T, V) as safetensors
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "titan/common/error.h"
#include "titan/components/checkpoint.h"
#include "titan/components/safetensors.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/state_dict_adapter.h"

using namespace titan;
using models::llama3::Transformer;

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto opt = [&](const std::string& name) {
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == name) return a[i + 1];
    throw Error("missing " + name);
  };
  try {
    if (!a.empty() && a[0] == "init") {
      const auto args = models::llama3::args_from_json(nlohmann::json::parse(opt("--args")));
      Transformer model(args, at::TensorOptions());
      model.init_weights(std::stoull(opt("--seed")));
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      for (const auto& p : model.named_parameters()) tensors.emplace_back("model." + p.name, p.tensor->detach());
      components::write_checkpoint(opt("--out"), 0, tensors,
                                         {{"name", "llama3"}, {"flavor", "test"}, {"args", models::llama3::args_to_json(args)}});
      return 0;
    }
    if (!a.empty() && a[0] == "logits") {
      components::CheckpointReader reader(opt("--checkpoint"));
      auto args = models::llama3::args_from_json(reader.metadata()["model"]["args"]);
      std::vector<int64_t> ids;
      std::stringstream ss(opt("--tokens"));
      for (std::string t; std::getline(ss, t, ',');) ids.push_back(std::stoll(t));
      args.max_seq_len = std::max<int64_t>(args.max_seq_len, static_cast<int64_t>(ids.size()));
      Transformer model(args, at::TensorOptions());
      at::NoGradGuard no_grad;
      for (const auto& p : model.named_parameters()) p.tensor->copy_(reader.read_full("model." + p.name));
      at::Tensor tokens = at::tensor(ids, at::kLong).view({1, -1});
      at::Tensor logits = model.forward(tokens).to(at::kFloat).contiguous();
      components::write_safetensors(opt("--out"), {{"logits", logits}}, {});
      return 0;
    }
    std::fprintf(stderr, "usage: hf_checks init|logits ...\n");
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "hf_checks: error: %s\n", e.message().c_str());
    return 2;
  }
}
