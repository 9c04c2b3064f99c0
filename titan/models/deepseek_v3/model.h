// DeepSeek-V3: the shared decoder (titan/models/common/decoder.h) with multi-head latent
// attention, YaRN, dense first blocks and mixture-of-experts blocks. RoPE rotates adjacent pairs
// of the rotary dims, as torchtitan's and transformers' (rope_interleave) DeepSeek-V3 do.
#pragma once

#include "titan/models/common/decoder.h"
#include "titan/models/deepseek_v3/args.h"

namespace titan::models::deepseek_v3 {

class Transformer final : public common::Decoder {
 public:
  Transformer(const ModelArgs& args, const at::TensorOptions& options)
      : common::Decoder(args.decoder(), options), args_(args) {}
  const ModelArgs& args() const { return args_; }
  const ModelConfig& config() const override { return args_; }

 private:
  ModelArgs args_;
};

}  // namespace titan::models::deepseek_v3
