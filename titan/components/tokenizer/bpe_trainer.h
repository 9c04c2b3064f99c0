// A byte-level BPE trainer (`titan tokenizer train`): counts the pieces of Llama 3's
// pre-tokenization regex over the given documents, then repeatedly merges the most frequent
// adjacent pair. It writes a Hugging Face tokenizer.json (Split + ByteLevel pre-tokenizer,
// ByteLevel decoder, BPE model) and a tokenizer_config.json naming BOS and EOS, which both
// titan.cpp and HF `tokenizers` load and encode identically.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace titan::components {

struct BpeTrainOptions {
  int64_t vocab_size = 2048;  // bytes + merges + special tokens
  int64_t min_frequency = 2;  // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens = {"<|begin_of_text|>", "<|end_of_text|>"};
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainOptions opt);
  ~BpeTrainer();
  void add(std::string_view document);  // counts its pieces
  // Learns the merges and writes dir/tokenizer.json and dir/tokenizer_config.json; returns the
  // vocabulary size reached (smaller than asked when no pair is frequent enough). `progress`
  // hears (merges done, merges wanted).
  int64_t train_and_write(const std::string& dir, const std::function<void(uint64_t, uint64_t)>& progress = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace titan::components
