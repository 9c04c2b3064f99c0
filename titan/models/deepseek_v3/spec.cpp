// DeepSeek-V3's entry in the model registry.
#include "titan/models/common/decoder_spec.h"
#include "titan/models/deepseek_v3/model.h"
#include "titan/models/deepseek_v3/state_dict_adapter.h"

namespace titan::models::deepseek_v3 {

const ModelSpec& spec() {
  // torchtitan's deepseek_v3 rotates adjacent pairs as titan.cpp does: same FQNs, same layout.
  static const ModelSpec s = common::decoder_spec<ModelArgs, Transformer, StateDictAdapter, flavor, args_from_json>(
      "deepseek_v3", flavor_names, {"deepseek_v3"}, true);
  return s;
}

}  // namespace titan::models::deepseek_v3
