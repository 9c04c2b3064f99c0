// Qwen3's entry in the model registry.
#include "titan/models/common/decoder_spec.h"
#include "titan/models/qwen3/model.h"
#include "titan/models/qwen3/state_dict_adapter.h"

namespace titan::models::qwen3 {

const ModelSpec& spec() {
  // torchtitan's qwen3 rotates the halves of each head, so its wq/wk rows are in another order
  // than titan.cpp's: its checkpoints do not load as they are.
  static const ModelSpec s = common::decoder_spec<ModelArgs, Transformer, StateDictAdapter, flavor, args_from_json>(
      "qwen3", flavor_names, {"qwen3", "qwen3_moe"}, false);
  return s;
}

}  // namespace titan::models::qwen3
