// Text in, training batches out: document sources (the built-in synthetic English corpus,
// JSON-lines and plain-text files, optionally gzip'd), each data-parallel rank reading its own
// documents, packed into fixed windows as torchtitan packs them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/components/tokenizer.h"

namespace titan::components {

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual std::optional<std::string> next() = 0;  // nullopt at the end of one pass
  virtual void reset() = 0;                       // start the next pass from the beginning
  virtual std::string describe() const = 0;
};

// Deterministic generated English-like text: document i depends only on i (see docs/datasets).
class SyntheticEnglish final : public DocumentSource {
 public:
  // Reads documents rank, rank + world, ...; `num_documents` per pass (the corpus is finite so
  // that passes/epochs mean something).
  SyntheticEnglish(int64_t rank, int64_t world, int64_t num_documents = 20000);
  std::optional<std::string> next() override;
  void reset() override { index_ = rank_; }
  std::string describe() const override;
  static std::string document(int64_t index);

 private:
  int64_t rank_, world_, num_documents_, index_;
};

// Files given by training.dataset_path: one file or a folder of *.jsonl, *.json, *.txt, each
// optionally .gz. JSON lines: one object per line with a string field `text_field`. Plain
// text: each non-empty line is one document.
class TextFiles final : public DocumentSource {
 public:
  TextFiles(const std::string& path, std::string text_field, int64_t rank, int64_t world);
  ~TextFiles() override;
  std::optional<std::string> next() override;
  void reset() override;
  std::string describe() const override;

 private:
  bool read_line(std::string& line);  // from the current file; false at its end
  void open(size_t file_index);
  std::string path_, text_field_;
  int64_t rank_, world_;
  std::vector<std::string> files_;
  size_t file_index_ = 0;
  int64_t line_no_ = 0, doc_index_ = 0;
  void* gz_ = nullptr;  // gzFile (zlib reads plain files too)
};

struct Batch {
  at::Tensor inputs;  // (B, T) int64
  at::Tensor labels;  // (B, T) int64
};

// Packs [BOS] + tokens + [EOS] of each document into one running buffer and cuts windows of
// seq_len + 1 tokens (no overlap; documents run across window edges).
// Data parallelism: with slice_count = D > 1 every rank reads the same stream and batch b of
// it holds windows [b*D*B, (b+1)*D*B); rank slice_index takes its B rows of those. So the
// global batch is the same for any data-parallel degree (docs/datasets.md).
class DataLoader {
 public:
  DataLoader(std::unique_ptr<DocumentSource> source, std::shared_ptr<const Tokenizer> tokenizer,
             int64_t batch_size, int64_t seq_len, bool infinite, int64_t slice_index = 0,
             int64_t slice_count = 1);
  // Next batch; nullopt when a finite source is exhausted.
  std::optional<Batch> next();
  int64_t epoch() const { return epoch_; }

 private:
  bool fill(size_t need);
  std::unique_ptr<DocumentSource> source_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int64_t batch_size_, seq_len_;
  bool infinite_;
  int64_t slice_index_, slice_count_;
  int64_t epoch_ = 0;
  std::vector<int64_t> buffer_;
  size_t pos_ = 0;
};

// The document source named by training.dataset / training.dataset_path.
std::unique_ptr<DocumentSource> build_source(const std::string& dataset,
                                             const std::optional<std::string>& dataset_path,
                                             int64_t rank, int64_t world);

}  // namespace titan::components
