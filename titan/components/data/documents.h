// Where text comes from: the built-in synthetic English corpus; JSON-lines and plain-text
// files, plain, gzip or zstd, given as a file, a folder or a glob (C4's layout); and
// pre-tokenized binary shards written by `titan data tokenize` (format in docs/datasets.md).
// Every source can say where it is (state()) and resume there (load_state()).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace titan::components {

// What a source skipped, for the log.
struct SkipCounts {
  int64_t empty = 0;      // blank lines in JSON lines (no document)
  int64_t malformed = 0;  // malformed lines, with skip_malformed
};

// An integer field of a saved data position; throws titan::Error if it is absent, not an
// integer (1.5, 1e300) or negative. Converting such values with nlohmann's get<> is undefined.
int64_t state_integer(const nlohmann::json& state, const char* key);

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual std::optional<std::string> next() = 0;  // nullopt at the end of one pass
  virtual void reset() = 0;                       // start the next pass from the beginning
  virtual std::string describe() const = 0;
  virtual nlohmann::json state() const = 0;
  virtual void load_state(const nlohmann::json& s) = 0;
  virtual SkipCounts skipped() const { return {}; }
};

// Deterministic generated English-like text: document i depends only on i (docs/datasets.md).
class SyntheticEnglish final : public DocumentSource {
 public:
  // Reads documents first + rank, first + rank + world, ...; `num_documents` per pass. The
  // validation set starts at kHeldOut: documents training never reads.
  SyntheticEnglish(int64_t rank, int64_t world, int64_t num_documents = 20000, int64_t first = 0);
  std::optional<std::string> next() override;
  void reset() override { index_ = first_ + rank_; }
  static constexpr int64_t kHeldOut = 1000000000;
  std::string describe() const override;
  nlohmann::json state() const override { return {{"index", index_}}; }
  void load_state(const nlohmann::json& s) override;
  static std::string document(int64_t index);

 private:
  int64_t rank_, world_, num_documents_, first_, index_;
};

struct TextOptions {
  std::string text_field = "text";  // the JSON field holding a document
  bool skip_malformed = false;      // count and skip malformed JSON lines instead of stopping
  std::string setting = "training.dataset_path";  // named in messages
};

// One reader of a plain, .gz or .zst file, line by line; offset() counts uncompressed bytes.
class LineReader {
 public:
  explicit LineReader(std::string path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  bool getline(std::string& line);  // without the line break; false at the end
  uint64_t offset() const { return offset_; }
  void skip_to(uint64_t offset);    // from the start of the file (re-reads up to there)

 private:
  size_t read_some(char* dst, size_t n);  // 0 at the end
  size_t read_gzip(char* dst, size_t n);
  bool fill_input();                      // false at the end of the file
  bool refill();
  std::string path_;
  void* file_ = nullptr;   // FILE*
  void* gz_ = nullptr;     // z_stream* for .gz
  void* zstd_ = nullptr;   // ZSTD_DStream* for .zst
  bool gz_in_member_ = false;
  int64_t gz_members_ = 0;
  std::vector<char> in_, buf_;
  size_t in_pos_ = 0, in_len_ = 0, buf_pos_ = 0, buf_len_ = 0;
  size_t zstd_hint_ = 0;
  bool eof_ = false;
  uint64_t offset_ = 0;
};

// Files of JSON lines (.jsonl/.json; one object per line) or plain text (.txt; a document is a
// paragraph: lines up to a blank line), each
// optionally .gz or .zst. `files` is the sorted list the path/folder/glob resolved to.
class TextFiles final : public DocumentSource {
 public:
  TextFiles(std::vector<std::string> files, std::string describe, TextOptions opt, int64_t rank = 0,
            int64_t world = 1);
  ~TextFiles() override;
  std::optional<std::string> next() override;
  void reset() override;
  std::string describe() const override { return describe_; }
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& s) override;
  SkipCounts skipped() const override { return skipped_; }

 private:
  void open(size_t file_index);
  std::string section() const { return opt_.setting.substr(0, opt_.setting.find('.')); }
  std::vector<std::string> files_;
  std::string describe_;
  TextOptions opt_;
  int64_t rank_, world_;
  std::unique_ptr<LineReader> reader_;
  size_t file_index_ = 0;
  int64_t line_no_ = 0, doc_index_ = 0;
  SkipCounts skipped_;
};

// Files that `path` names: a file, a folder (its data files, sorted) or a glob. `setting` is
// named in messages. Throws titan::Error when nothing matches.
std::vector<std::string> resolve_files(const std::string& path, const std::string& setting,
                                       const std::string& folder_pattern = "");

bool is_text_file(const std::string& path);    // .jsonl .json .txt, optionally .gz/.zst
bool is_token_shard(const std::string& path);  // .bin

// ---- pre-tokenized binary shards ----------------------------------------------------------------

// Header (64 bytes, little-endian): magic "TITANTOK", uint32 version (2), uint32 bytes per token
// (2 or 4), uint64 token count, uint64 document count, uint64 vocabulary size, uint32 CRC-32C
// of the token bytes, then 20 zero bytes; the tokens follow. Version 1 (no checksum) is read too.
struct ShardHeader {
  static constexpr char kMagic[8] = {'T', 'I', 'T', 'A', 'N', 'T', 'O', 'K'};
  static constexpr uint32_t kVersion = 2;
  static constexpr size_t kSize = 64;
  uint32_t version = kVersion;
  uint32_t token_bytes = 4;
  uint64_t tokens = 0, documents = 0, vocab_size = 0;
  uint32_t crc32c = 0;  // of the token bytes (version 2)
};

// Writes one shard: tokens go to `path`.tmp, finish() writes the header and renames it to
// `path`, so an interrupted write never leaves a shard that looks whole.
class ShardWriter {
 public:
  ShardWriter(std::string path, uint32_t token_bytes, uint64_t vocab_size);
  ~ShardWriter();  // an unfinished shard's .tmp file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  void append(const std::vector<int64_t>& ids) { append_part(ids, true); }  // one document's tokens
  // Part of a document's tokens; the document is counted with its last part.
  void append_part(const std::vector<int64_t>& ids, bool document_ends);
  void finish();
  uint64_t tokens() const { return tokens_; }
  uint64_t documents() const { return documents_; }

 private:
  std::string path_, tmp_;
  void* file_ = nullptr;
  uint32_t token_bytes_;
  uint64_t vocab_size_, tokens_ = 0, documents_ = 0;
  uint32_t crc_ = 0;
  std::vector<unsigned char> bytes_;
};

// The manifest.json `titan data tokenize` writes beside its shards: {"tokenizer": fingerprint,
// "vocab_size": N, "shards": {"shard-00000.bin": {"input": path, "input_bytes", "input_mtime_ns",
// "input_crc32c", "tokens", "documents", ...}}}. Parses and checks its shape; throws titan::Error
// naming `path` when it is malformed.
nlohmann::json parse_tokenize_manifest(std::string_view text, const std::string& path);

// Reads and checks a shard's header against its size; throws titan::Error naming the file.
ShardHeader read_shard_header(const std::string& path);

// Checks a shard's tokens against the header's checksum (version 2); throws titan::Error.
void verify_shard(const std::string& path, const ShardHeader& header, const unsigned char* tokens);

// read_shard_header, then the checksum of the tokens read from the file.
ShardHeader read_and_verify_shard(const std::string& path);

// A read-only view of shards as one token stream (memory-mapped).
class TokenShards {
 public:
  explicit TokenShards(std::vector<std::string> files, std::string describe);
  ~TokenShards();
  TokenShards(const TokenShards&) = delete;
  TokenShards& operator=(const TokenShards&) = delete;
  uint64_t size() const { return total_; }
  uint64_t vocab_size() const { return vocab_size_; }
  // Copies tokens [begin, begin + n) of the stream (begin + n <= size()).
  void read(uint64_t begin, size_t n, int64_t* out) const;
  const std::string& describe() const { return describe_; }
  const std::string& first_file() const { return first_file_; }

 private:
  void map_all(const std::vector<std::string>& files);
  struct Shard {
    std::string path;
    const unsigned char* data = nullptr;
    size_t map_size = 0;
    uint64_t first = 0, tokens = 0;
    uint32_t token_bytes = 4;
  };
  std::vector<Shard> shards_;
  uint64_t total_ = 0, vocab_size_ = 0;
  std::string describe_, first_file_;
};

}  // namespace titan::components
