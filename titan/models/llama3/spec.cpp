// Llama 3's entry in the model registry.
#include "titan/models/common/decoder_spec.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/state_dict_adapter.h"

namespace titan::models::llama3 {

const ModelSpec& spec() {
  static const ModelSpec s =
      common::decoder_spec<ModelArgs, Transformer, StateDictAdapter, flavor, args_from_json>("llama3", flavor_names,
                                                                                             {"llama"}, true);
  return s;
}

}  // namespace titan::models::llama3
