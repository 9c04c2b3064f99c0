// A registry entry for a family built on the shared decoder: `Args` (the family's ModelConfig,
// with decoder()), `Net` (its common::Decoder, built from Args), `Adapter` (its Hugging Face
// StateDictAdapter, with a static args_from_hf_config), and its flavor and JSON functions.
#pragma once

#include <string>
#include <vector>

#include "titan/common/error.h"
#include "titan/models/common/decoder_parallelize.h"
#include "titan/models/registry.h"

namespace titan::models::common {

template <class Args>
const Args& args_of(const ModelConfig& c) {
  const auto* a = dynamic_cast<const Args*>(&c);
  if (!a) throw Error("internal error: a " + c.family() + " model's arguments were given to another family", "");
  return *a;
}

inline Decoder& decoder_of(Model& m) {
  auto* d = dynamic_cast<Decoder*>(&m);
  if (!d) throw Error("internal error: the " + m.config().family() + " model is not a decoder", "");
  return *d;
}

template <class Args, class Net, class Adapter, auto Flavor, auto FromJson>
ModelSpec decoder_spec(std::string name, std::vector<std::string> (*flavor_names)(),
                       std::vector<std::string> hf_model_types, bool reads_torchtitan_checkpoints) {
  return ModelSpec{
      .name = std::move(name),
      .flavor_names = flavor_names,
      .flavor = [](std::string_view f) -> std::unique_ptr<ModelConfig> { return std::make_unique<Args>(Flavor(f)); },
      .config_from_json = [](const nlohmann::json& j) -> std::unique_ptr<ModelConfig> {
        return std::make_unique<Args>(FromJson(j));
      },
      .build = [](const ModelConfig& c, const at::TensorOptions& options) -> std::unique_ptr<Model> {
        return std::make_unique<Net>(args_of<Args>(c), options);
      },
      .validate_plan = [](const ModelConfig& c, const PlanCheck& check, const distributed::ParallelDims& dims) {
        validate_plan(args_of<Args>(c).decoder(), check, dims);
      },
      .parallelize = [](Model& m, const ParallelizeOptions& options, distributed::DeviceMesh& mesh, at::Device device,
                        at::ScalarType compute_dtype, uint64_t seed, const std::vector<size_t>& parts_held) {
        return parallelize(decoder_of(m), options, mesh, device, compute_dtype, seed, parts_held);
      },
      .param_layouts = [](Model& m, const distributed::ParallelDims& dims) { return param_layouts(decoder_of(m), dims); },
      .hf_adapter = [](const ModelConfig& c) -> std::unique_ptr<StateDictAdapter> {
        return std::make_unique<Adapter>(args_of<Args>(c));
      },
      .config_from_hf = [](const nlohmann::json& config, const std::string& where) -> std::unique_ptr<ModelConfig> {
        return std::make_unique<Args>(Adapter::args_from_hf_config(config, where));
      },
      .hf_model_types = std::move(hf_model_types),
      .reads_torchtitan_checkpoints = reads_torchtitan_checkpoints,
  };
}

}  // namespace titan::models::common
