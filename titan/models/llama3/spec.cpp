// Llama 3's entry in the model registry.
#include "titan/common/error.h"
#include "titan/models/llama3/args.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/parallelize.h"
#include "titan/models/llama3/state_dict_adapter.h"
#include "titan/models/registry.h"

namespace titan::models::llama3 {

namespace {

const ModelArgs& args_of(const ModelConfig& c) {
  const auto* a = dynamic_cast<const ModelArgs*>(&c);
  if (!a) throw Error("internal error: a " + c.family() + " model's arguments were given to llama3", "");
  return *a;
}
Transformer& model_of(Model& m) {
  auto* t = dynamic_cast<Transformer*>(&m);
  if (!t) throw Error("internal error: a " + m.config().family() + " model was given to llama3's plan", "");
  return *t;
}

}  // namespace

const ModelSpec& spec() {
  static const ModelSpec s{
      .name = "llama3",
      .flavor_names = &flavor_names,
      .flavor = [](std::string_view name) -> std::unique_ptr<ModelConfig> {
        return std::make_unique<ModelArgs>(flavor(name));
      },
      .config_from_json = [](const nlohmann::json& j) -> std::unique_ptr<ModelConfig> {
        return std::make_unique<ModelArgs>(args_from_json(j));
      },
      .build = [](const ModelConfig& c, const at::TensorOptions& options) -> std::unique_ptr<Model> {
        return std::make_unique<Transformer>(args_of(c), options);
      },
      .validate_plan = [](const ModelConfig& c, const config::JobConfig& cfg, const distributed::ParallelDims& dims) {
        validate_plan(args_of(c), cfg, dims);
      },
      .parallelize = [](Model& m, const config::JobConfig& cfg, distributed::DeviceMesh& mesh, at::Device device,
                        at::ScalarType compute_dtype, uint64_t seed, const std::vector<size_t>& parts_held) {
        return parallelize(model_of(m), cfg, mesh, device, compute_dtype, seed, parts_held);
      },
      .param_layouts = [](Model& m, const distributed::ParallelDims& dims) { return param_layouts(model_of(m), dims); },
      .hf_adapter = [](const ModelConfig& c) -> std::unique_ptr<models::StateDictAdapter> {
        return std::make_unique<StateDictAdapter>(args_of(c));
      },
      .config_from_hf = [](const nlohmann::json& config, const std::string& where) -> std::unique_ptr<ModelConfig> {
        return std::make_unique<ModelArgs>(StateDictAdapter::args_from_hf_config(config, where));
      },
      .hf_model_types = {"llama"},
  };
  return s;
}

}  // namespace titan::models::llama3
