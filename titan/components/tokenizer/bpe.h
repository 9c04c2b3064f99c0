// Byte-level BPE, loaded from a tiktoken rank file (Llama 3's tokenizer.model) or a Hugging
// Face tokenizer.json (+ tokenizer_config.json). One engine serves both: text is split at
// added/special tokens, normalized (NFC/NFKC/NFD/NFKD/lowercase), pre-tokenized by regexes
// (PCRE2, JIT) and each piece is merged pair by pair, lowest merge rank first, leftmost first
// on ties. tiktoken's rule (merge the pair whose joined bytes have the lowest rank) is the same
// engine with each token's rank as its merge rank.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "titan/components/tokenizer/tokenizer.h"

namespace titan::components {

namespace bpe_detail {
struct Model;
}

class BpeTokenizer final : public Tokenizer {
 public:
  // A tiktoken rank file: one "base64(token bytes) rank" per line, ranks 0..n-1. Llama 3's
  // pre-tokenization regex and its 256 special tokens (ids n..n+255) are added.
  static std::unique_ptr<BpeTokenizer> from_tiktoken(const std::string& path);
  // A Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer or decoder;
  // `config_path` (tokenizer_config.json, may be empty) names BOS/EOS as torchtitan reads it.
  static std::unique_ptr<BpeTokenizer> from_hf(const std::string& tokenizer_json,
                                               const std::string& config_path);
  ~BpeTokenizer() override;

  void encode_append(std::string_view text, std::vector<int64_t>& out, bool allow_special) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  int64_t vocab_size() const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;
  std::string describe() const override;
  std::string fingerprint() const override;
  // Before " word" (an ASCII letter) that follows a printable ASCII character, where every
  // pre-tokenizer is one this engine knows cuts there (Llama 3's, Qwen2's and GPT-2's regexes,
  // Digits, prefix spaces), away from added tokens; npos for other pre-tokenizers.
  size_t cut_point(std::string_view text, size_t from) const override;

  // The id of a token given by its text (an added/special token or a vocabulary entry in
  // its bytes); -1 if absent.
  int64_t token_id(std::string_view text) const;

 private:
  explicit BpeTokenizer(std::unique_ptr<bpe_detail::Model> m);
  std::unique_ptr<bpe_detail::Model> m_;
};

// Llama 3's pre-tokenization regex (also the default of `titan tokenizer train`).
extern const char* const kLlama3Pattern;
// GPT-2's, used by HF's ByteLevel pre-tokenizer with use_regex = true.
extern const char* const kGpt2Pattern;

// Calls f(piece) for each piece of `text` under Llama 3's pre-tokenization regex (runs of bytes
// no alternative matches, e.g. invalid UTF-8, are pieces too): the split the tiktoken loader
// and `titan tokenizer train` use.
void split_llama3(std::string_view text, const std::function<void(std::string_view)>& f);

// HF's ByteLevel alphabet: the printable character each byte is written as in tokenizer.json.
std::string byte_level_encode(std::string_view bytes);

}  // namespace titan::components
