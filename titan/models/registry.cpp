#include "titan/models/registry.h"

#include "titan/common/error.h"

#define TITAN_MODEL(name) \
  namespace titan::models::name { const ModelSpec& spec(); }
#include "titan/models/models.def"
#undef TITAN_MODEL

namespace titan::models {

namespace {

const std::vector<const ModelSpec*>& registered() {
  static const std::vector<const ModelSpec*> specs = {
#define TITAN_MODEL(name) &name::spec(),
#include "titan/models/models.def"
#undef TITAN_MODEL
  };
  return specs;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

std::vector<at::Tensor> Model::parameters() {
  std::vector<at::Tensor> out;
  for (const auto& p : named_parameters()) out.push_back(*p.tensor);
  return out;
}

int64_t Model::num_params() {
  // A tied table appears once in named_parameters().
  int64_t n = 0;
  for (const auto& p : named_parameters()) n += p.tensor->numel();
  return n;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto* s : registered()) names.push_back(s->name);
  return names;
}

const ModelSpec& model_spec(std::string_view name) {
  for (const auto* s : registered())
    if (s->name == name) return *s;
  throw Error("model.name = \"" + std::string(name) + "\" is not a known model",
              "use one of: " + joined(model_names()));
}

const ModelSpec& model_spec_for_hf(const nlohmann::json& config, const std::string& where) {
  const std::string type =
      config.is_object() && config.contains("model_type") && config["model_type"].is_string()
          ? config["model_type"].get<std::string>()
          : "llama";
  std::vector<std::string> known;
  for (const auto* s : registered())
    for (const auto& t : s->hf_model_types) {
      if (t == type) return *s;
      known.push_back(t);
    }
  throw Error(where + ": model_type \"" + type + "\" is not a model titan.cpp builds",
              "convert a folder of one of these model types: " + joined(known));
}

std::unique_ptr<ModelConfig> config_from_description(const nlohmann::json& model, const std::string& where) {
  if (!model.is_object() || !model.contains("args") || !model["args"].is_object())
    throw Error(where + " does not record the model's arguments", "re-save it with this titan.cpp");
  const std::string name = model.contains("name") && model["name"].is_string() ? model["name"].get<std::string>() : "llama3";
  const ModelSpec* spec = nullptr;
  for (const auto* s : registered())
    if (s->name == name) spec = s;
  if (!spec)
    throw Error(where + " holds a \"" + name + "\" model, which this titan.cpp does not build",
                "use a titan.cpp that registers it (known: " + joined(model_names()) + ")");
  try {
    return spec->config_from_json(model["args"]);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed model arguments (" + e.what() + ")", "the checkpoint is damaged");
  }
}

}  // namespace titan::models
