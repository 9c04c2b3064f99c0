// The C++ side of the Hugging Face interop test (tests/integration/test_hf.py):
//   hf_checks init [--model NAME] --args JSON --seed N --out STEP_FOLDER [--random-buffers]
//                                                          a random model (of the registry's family
//                                                          NAME, llama3 when not given) as a checkpoint;
//                                                          its expert bias random too when asked
//   hf_checks logits --checkpoint STEP_FOLDER --tokens 1,2,3 --out FILE
//                                                          our float32 logits (1, T, V) as safetensors
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "titan/common/error.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/checkpoint/safetensors.h"
#include "titan/models/registry.h"

using namespace titan;

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto opt = [&](const std::string& name, const char* fallback = nullptr) {
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == name) return a[i + 1];
    if (fallback) return std::string(fallback);
    throw Error("missing " + name);
  };
  try {
    if (!a.empty() && a[0] == "init") {
      const auto& spec = models::model_spec(opt("--model", "llama3"));
      const auto args = spec.config_from_json(nlohmann::json::parse(opt("--args")));
      const auto model = spec.build(*args, at::TensorOptions());
      model->init_weights(std::stoull(opt("--seed")));
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      for (const auto& p : model->named_parameters()) tensors.emplace_back("model." + p.name, p.tensor->detach());
      const bool random_buffers = std::find(a.begin(), a.end(), "--random-buffers") != a.end();
      at::manual_seed(std::stoull(opt("--seed")));
      for (const auto& b : model->named_buffers())
        tensors.emplace_back("model." + b.name, random_buffers ? at::randn(b.tensor->sizes()) * 0.05 : b.tensor->detach());
      components::write_checkpoint(opt("--out"), 0, tensors,
                                   {{"name", spec.name}, {"flavor", "test"}, {"args", args->to_json()}});
      return 0;
    }
    if (!a.empty() && a[0] == "logits") {
      components::CheckpointReader reader(opt("--checkpoint"));
      auto args = models::config_from_description(reader.model_description(), opt("--checkpoint"));
      std::vector<int64_t> ids;
      std::stringstream ss(opt("--tokens"));
      for (std::string t; std::getline(ss, t, ',');) ids.push_back(std::stoll(t));
      args->set_max_seq_len(std::max<int64_t>(args->sizes().max_seq_len, static_cast<int64_t>(ids.size())));
      const auto model = models::model_spec(args->family()).build(*args, at::TensorOptions());
      at::NoGradGuard no_grad;
      for (const auto& p : model->named_parameters()) p.tensor->copy_(reader.read_full("model." + p.name));
      for (const auto& b : model->named_buffers())
        if (reader.has("model." + b.name)) b.tensor->copy_(reader.read_full("model." + b.name));
      at::Tensor tokens = at::tensor(ids, at::kLong).view({1, -1});
      at::Tensor logits = model->forward(tokens).to(at::kFloat).contiguous();
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
