// Qwen3 (dense): the shared decoder (titan/models/common/decoder.h) with q/k RMSNorm per head.
// RoPE: torchtitan's and transformers' Qwen3 rotate the two halves of each head; titan.cpp's
// kernels rotate adjacent pairs, so wq and wk rows and the q/k norm weights are held in pair
// order and the adapters (Hugging Face) permute them. Same numbers, same fused kernels.
#pragma once

#include "titan/models/common/decoder.h"
#include "titan/models/qwen3/args.h"

namespace titan::models::qwen3 {

class Transformer final : public common::Decoder {
 public:
  Transformer(const ModelArgs& args, const at::TensorOptions& options)
      : common::Decoder(args.decoder(), options), args_(args) {}
  const ModelArgs& args() const { return args_; }
  const ModelConfig& config() const override { return args_; }

 private:
  ModelArgs args_;
};

}  // namespace titan::models::qwen3
