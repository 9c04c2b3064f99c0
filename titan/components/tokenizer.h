// Tokenizers turn text into ids. This file holds the interface and the built-in byte-level
// tokenizer (ids 0-255 are bytes, then BOS and EOS), which needs no files; it keeps every
// byte of any input, valid UTF-8 or not.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace titan::components {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual std::string describe() const = 0;
};

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return 258; }
  int64_t bos_id() const override { return 256; }
  int64_t eos_id() const override { return 257; }
  std::string describe() const override { return "built-in byte-level tokenizer (vocab 258)"; }
};

// The tokenizer named by model.hf_assets_path (or the deprecated model.tokenizer_path):
// "builtin:bytes" is the byte-level tokenizer. Throws titan::Error for anything else.
std::unique_ptr<Tokenizer> build_tokenizer(const std::string& hf_assets_path,
                                           const std::string& key_name);

}  // namespace titan::components
