// Qwen3 (dense): the shared decoder (titan/models/common/decoder.h) with q/k RMSNorm per head.
// RoPE: torchtitan's and transformers' Qwen3 rotate the two halves of each head; titan.cpp's
// kernels rotate adjacent pairs, so wq and wk rows and the q/k norm weights are held in pair
// order and the adapters (Hugging Face) permute them. Same numbers, same fused kernels.
#pragma once

#include "titan/models/common/decoder.h"
#include "titan/models/qwen3/args.h"

namespace titan::models::qwen3 {

using Transformer = common::FamilyDecoder<ModelArgs>;

}  // namespace titan::models::qwen3
