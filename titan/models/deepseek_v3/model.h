// DeepSeek-V3: the shared decoder (titan/models/common/decoder.h) with multi-head latent
// attention, YaRN, dense first blocks and mixture-of-experts blocks. RoPE rotates adjacent pairs
// of the rotary dims, as torchtitan's and transformers' (rope_interleave) DeepSeek-V3 do.
#pragma once

#include "titan/models/common/decoder.h"
#include "titan/models/deepseek_v3/args.h"

namespace titan::models::deepseek_v3 {

using Transformer = common::FamilyDecoder<ModelArgs>;

}  // namespace titan::models::deepseek_v3
