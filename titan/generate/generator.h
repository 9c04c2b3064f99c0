// Text generation from a trained model (titan generate): any registered family, loaded from a
// titan.cpp checkpoint step folder (saved on any layout) or a Hugging Face folder; prompts
// batched with left padding; a key/value cache; greedy, temperature, top-k and top-p sampling
// from a seeded generator; stop at EOS or after max_new_tokens (docs/generate.md).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/components/tokenizer/tokenizer.h"
#include "titan/models/model.h"

namespace titan::generate {

struct LoadedModel {
  std::unique_ptr<models::ModelConfig> config;
  std::unique_ptr<models::Model> model;
  std::string tokenizer_path;  // the one the source records or holds ("" when none is known)
  int64_t context = 0;         // the positions the model was trained for (its max_seq_len)
  std::string describe;        // "llama3 from /runs/x/checkpoint/step-100"
};

// A titan.cpp step folder (checkpoint.folder/step-N, any layout, model-only or full) or a
// Hugging Face folder (config.json + safetensors), by what the folder holds; the model on
// `device` in `dtype`. Throws titan::Error naming the folder when it is neither or damaged.
LoadedModel load_model(const std::string& path, at::Device device, at::ScalarType dtype);

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  bool stop_at_eos = true;
  bool use_cache = true;     // false: every step runs the whole sequence again (for checking)
};

struct Generation {
  std::vector<std::vector<int64_t>> prompt_ids;  // BOS + the prompt's ids, per prompt
  std::vector<std::vector<int64_t>> new_ids;     // generated ids per prompt (EOS included when hit)
  double time_to_first_token_s = 0;              // prefill and the first token's sampling
  double decode_s = 0;                           // the steps after the first token
  int64_t decode_tokens = 0;                     // tokens generated in those steps, all prompts
  int64_t kv_cache_bytes = 0;
};

// Greedy or sampled continuations of `prompts` (each encoded with BOS in front, as training
// reads documents). `on_token(prompt, id)` is called for each token as it is chosen. Throws
// titan::Error (exit 2) for an empty prompt list, a tokenizer with more ids than the model's
// vocabulary, or a prompt plus max_new_tokens past the model's context.
Generation generate(const LoadedModel& model, const components::Tokenizer& tokenizer,
                    const std::vector<std::string>& prompts, const SamplingOptions& options,
                    const std::function<void(size_t prompt, int64_t id)>& on_token = {});

// One row of logits (B, V) float32 -> the chosen ids (B,) int64 on the CPU.
at::Tensor sample(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

}  // namespace titan::generate
