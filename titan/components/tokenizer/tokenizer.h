// Tokenizers turn text into ids. The interface, the built-in byte-level tokenizer (ids 0-255
// are bytes, then BOS and EOS; no files needed), and build_tokenizer(), which reads the
// tokenizer files torchtitan reads (bpe.h: tiktoken rank files and HF tokenizer.json).
//
// Every tokenizer here keeps every byte of any input, valid UTF-8 or not: decode(encode(x)) == x
// (docs/tokenizers.md). Special-token strings inside text are encoded as ordinary text unless
// the caller passes allow_special.
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
  // Appends the ids of `text` to `out` (no BOS/EOS). With allow_special, special-token strings
  // in the text become their ids; otherwise they are encoded as text.
  virtual void encode_append(std::string_view text, std::vector<int64_t>& out,
                             bool allow_special = false) const = 0;
  // The bytes of the ids; special tokens are written as their text unless skip_special.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;  // -1: the tokenizer has none
  virtual int64_t eos_id() const = 0;  // -1: the tokenizer has none
  virtual std::string describe() const = 0;
  // Identifies the vocabulary and rules (a hash of the tokenizer files), wherever they lie:
  // saved data positions and token shards record it.
  virtual std::string fingerprint() const = 0;

  std::vector<int64_t> encode(std::string_view text, bool allow_special = false) const {
    std::vector<int64_t> out;
    encode_append(text, out, allow_special);
    return out;
  }
  // [BOS] + ids + [EOS] as asked, where the tokenizer has them; never twice (torchtitan's rule).
  std::vector<int64_t> encode(std::string_view text, bool add_bos, bool add_eos,
                              bool allow_special) const;

  // Where a long text may be cut so it can be encoded piece by piece: the first place p >= from
  // such that, for any start s < p that was itself such a place (or 0), the ids of text[s, p)
  // followed by those of text[p, ...) are the ids of text[s, ...) (allow_special false).
  // std::string_view::npos where the tokenizer can vouch for none after `from`: the caller then
  // encodes the rest whole. The data loader streams long documents this way (docs/datasets.md).
  virtual size_t cut_point(std::string_view text, size_t from) const {
    (void)text;
    (void)from;
    return std::string_view::npos;
  }
  // Appends the ids of text[from, end) to `out` and returns `end`: the first cut point at least
  // `piece_bytes` past `from`, or the end of the text. Called until it returns text.size(), it
  // gives encode(text) while holding the ids of about one piece at a time.
  size_t encode_piece(std::string_view text, size_t from, std::vector<int64_t>& out,
                      size_t piece_bytes = kPieceBytes) const;
  static constexpr size_t kPieceBytes = size_t{1} << 18;
};

class ByteTokenizer final : public Tokenizer {
 public:
  void encode_append(std::string_view text, std::vector<int64_t>& out, bool allow_special) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  int64_t vocab_size() const override { return 258; }
  int64_t bos_id() const override { return 256; }
  int64_t eos_id() const override { return 257; }
  std::string describe() const override { return "built-in byte-level tokenizer (vocab 258)"; }
  std::string fingerprint() const override { return "builtin:bytes"; }
  size_t cut_point(std::string_view text, size_t from) const override {  // every byte is a token
    return from < text.size() ? from : std::string_view::npos;
  }
};

// The tokenizer at `path` (model.hf_assets_path or the deprecated model.tokenizer_path; `key`
// names the setting in messages): "builtin:bytes"; a folder holding tokenizer.json (with an
// optional tokenizer_config.json) or tokenizer.model (tiktoken ranks, Llama 3 special tokens);
// or one of those files. Throws titan::Error naming the file for anything unreadable.
std::unique_ptr<Tokenizer> build_tokenizer(const std::string& path, const std::string& key);

// The files build_tokenizer reads for `path`: tokenizer.json (with tokenizer_config.json where
// there is one) or a tiktoken rank file; `builtin` for "builtin:bytes". Throws as build_tokenizer.
struct TokenizerFiles {
  bool builtin = false;
  std::string json, config, model;
};
TokenizerFiles find_tokenizer_files(const std::string& path, const std::string& key);

// Encodes many texts on `threads` threads (0: all cores); result i holds the ids of texts[i]
// with BOS/EOS as asked.
std::vector<std::vector<int64_t>> encode_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                               bool add_bos, bool add_eos, int threads);

}  // namespace titan::components
