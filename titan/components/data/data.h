// Documents or pre-tokenized shards in, training batches out. Text documents are tokenized as
// [BOS] + tokens + [EOS] into one running stream and cut into windows of seq_len + 1 tokens as
// torchtitan packs them (no overlap; documents run across window edges). Binary shards are
// that stream already.
//
// Data parallelism: the stream is global. Batch b of a loader with D data-parallel ranks holds
// windows [b*D*B, (b+1)*D*B) and rank r takes its B rows of those, so the global batch is the
// same for any data-parallel degree and a saved position (state()) resumes on any degree
// (docs/datasets.md). With binary shards each rank reads only its own rows.
//
// Loading runs ahead on a background thread (`prefetch` batches); state() describes the
// position after the last batch next() returned, not what the thread has read ahead.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "titan/components/data/documents.h"
#include "titan/components/tokenizer/tokenizer.h"

namespace titan::components {

struct Batch {
  at::Tensor inputs;  // (B, T) int64
  at::Tensor labels;  // (B, T) int64
};

struct LoaderOptions {
  int64_t batch_size = 1;  // rows per rank
  int64_t seq_len = 1;
  bool infinite = true;    // loop over the data forever (training) or stop at its end (validation)
  int64_t slice_index = 0;  // this rank's place among the data-parallel ranks
  int64_t slice_count = 1;  // the data-parallel degree
  int prefetch = 2;         // batches loaded ahead on a background thread (0: none)
  std::string name = "dataset";  // for log lines
};

class DataLoader {
 public:
  DataLoader(std::unique_ptr<DocumentSource> source, std::shared_ptr<const Tokenizer> tokenizer,
             LoaderOptions opt);
  DataLoader(std::shared_ptr<const TokenShards> shards, LoaderOptions opt);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Next batch; nullopt when a finite source is exhausted (a last partial batch is dropped).
  std::optional<Batch> next();
  // Back to the start of the data (each validation pass reads the same batches).
  void reset();
  int64_t epoch() const;
  SkipCounts skipped() const;
  std::string describe() const;

  // The position after the last batch next() returned, as JSON (checkpointed per rank).
  nlohmann::json state() const;
  // Resumes there. The data and tokenizer must be the ones the state was saved with; the
  // data-parallel degree, local batch size and seq_len may differ (the stream is global).
  void load_state(const nlohmann::json& s);

 private:
  struct Position;  // what state() is made from
  struct Item {
    std::optional<Batch> batch;
    std::shared_ptr<const Position> after;
    std::exception_ptr error;
  };
  Item produce();  // one batch and the position after it (the background thread's work)
  std::shared_ptr<const Position> position() const;
  void restore(const Position& p);
  bool fill_text(size_t need);
  void encode_more();   // the next piece of doc_ into buffer_ (EOS after its last)
  void end_document();
  void start();
  void stop();

  LoaderOptions opt_;
  std::unique_ptr<DocumentSource> source_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::shared_ptr<const TokenShards> shards_;
  // Producer state (touched only by the background thread while it runs).
  int64_t epoch_ = 0;
  std::vector<int64_t> buffer_;
  size_t pos_ = 0;
  std::string doc_;            // the document being tokenized, while in_doc_
  size_t doc_pos_ = 0;         // its bytes tokenized so far
  nlohmann::json doc_source_;  // the source's position before it
  bool in_doc_ = false;
  uint64_t token_pos_ = 0;  // binary shards: global token index of the next window
  bool exhausted_ = false;
  // Consumer side.
  std::shared_ptr<const Position> consumed_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false, running_ = false;
};

// One section's data settings ("training" or "validation"; train/options.h builds them).
struct DatasetOptions {
  std::string section = "training";  // names the keys in messages
  std::string dataset = "synthetic";
  std::optional<std::string> dataset_path;
  std::string text_field = "text";
  bool skip_malformed = false;
  int64_t local_batch_size = 8;
  int64_t seq_len = 2048;
  int prefetch_factor = 2;
};

// The loader for a section: the dataset registry (training.dataset names, training.dataset_path
// overrides; docs/datasets.md).
std::unique_ptr<DataLoader> build_data_loader(const DatasetOptions& options, std::shared_ptr<const Tokenizer> tokenizer,
                                              int64_t dp_rank, int64_t dp_degree, bool infinite);

// For tests and tools: the document source a dataset name/path pair names (text only).
std::unique_ptr<DocumentSource> build_source(const std::string& dataset,
                                             const std::optional<std::string>& dataset_path,
                                             const TextOptions& opt);

}  // namespace titan::components
