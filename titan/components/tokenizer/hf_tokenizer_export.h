// The tokenizer files of a Hugging Face model folder, written from the tokenizer a run trained
// with, so that transformers' AutoTokenizer and AutoModelForCausalLM load the folder as it is
// (docs/checkpoint.md, "Hugging Face").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace titan::components {

struct HfTokenizerFiles {
  std::vector<std::string> written;  // file names, in `out_dir`
  int64_t bos_id = -1, eos_id = -1;  // -1: the tokenizer has none
};

// Writes tokenizer.json, tokenizer_config.json and generation_config.json into `out_dir` for the
// tokenizer at `path` (what model.hf_assets_path names: an HF tokenizer.json, a tiktoken rank
// file such as Llama 3's tokenizer.model, or "builtin:bytes"). tokenizer.json's post-processor
// puts BOS in front of a text, as training starts every document with it (a template that does
// so already is kept); a tiktoken file becomes the equivalent byte-level BPE (its ranks as the
// vocabulary, the merges that rebuild each token, Llama 3's pre-tokenization regex and special
// tokens). A tokenizer with more than `max_ids` ids (the model's vocabulary) is refused before
// anything is written. Throws titan::Error naming the file for anything unreadable or unwritable.
HfTokenizerFiles write_hf_tokenizer(const std::string& path, const std::string& out_dir, int64_t max_ids);

}  // namespace titan::components
