#include "titan/components/data/data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/common/log.h"

namespace titan::components {

struct DataLoader::Position {
  nlohmann::json source;        // text: the document source's position (before doc_offset's document)
  uint64_t doc_offset = 0;      // text: bytes of a long document already tokenized (0: none)
  std::vector<int64_t> buffer;  // text: tokens read but not yet in a window
  uint64_t token_pos = 0;       // shards: the next window's first token
  int64_t epoch = 0;
  bool exhausted = false;
};

DataLoader::DataLoader(std::unique_ptr<DocumentSource> source, std::shared_ptr<const Tokenizer> tokenizer,
                       LoaderOptions opt)
    : opt_(std::move(opt)), source_(std::move(source)), tokenizer_(std::move(tokenizer)) {
  consumed_ = position();
}

DataLoader::DataLoader(std::shared_ptr<const TokenShards> shards, LoaderOptions opt)
    : opt_(std::move(opt)), shards_(std::move(shards)) {
  if (shards_->size() == 0)
    throw Error("the token shards " + shards_->describe() + " hold no tokens", "tokenize some text with `titan data tokenize`");
  consumed_ = position();
}

DataLoader::~DataLoader() { stop(); }

std::string DataLoader::describe() const { return shards_ ? shards_->describe() : source_->describe(); }

int64_t DataLoader::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return consumed_->epoch;
}

SkipCounts DataLoader::skipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  SkipCounts s;
  if (!consumed_->source.is_null()) {
    s.empty = consumed_->source.value("skipped_empty", int64_t{0});
    s.malformed = consumed_->source.value("skipped_malformed", int64_t{0});
  }
  return s;
}

std::shared_ptr<const DataLoader::Position> DataLoader::position() const {
  auto p = std::make_shared<Position>();
  p->epoch = epoch_;
  p->exhausted = exhausted_;
  if (shards_) {
    p->token_pos = token_pos_;
  } else {
    p->source = in_doc_ ? doc_source_ : source_->state();
    p->doc_offset = in_doc_ ? doc_pos_ : 0;
    p->buffer.assign(buffer_.begin() + static_cast<std::ptrdiff_t>(pos_), buffer_.end());
  }
  return p;
}

void DataLoader::restore(const Position& p) {
  epoch_ = p.epoch;
  exhausted_ = p.exhausted;
  if (shards_) {
    token_pos_ = p.token_pos;
  } else {
    source_->load_state(p.source);
    buffer_ = p.buffer;
    pos_ = 0;
    end_document();
    if (p.doc_offset > 0) {  // resume inside a long document: read it again
      auto doc = source_->next();
      if (!doc || doc->size() <= p.doc_offset)
        throw Error("the saved data position is " + std::to_string(p.doc_offset) + " bytes into a document of " +
                        source_->describe() + ", but the document there is " +
                        (doc ? std::to_string(doc->size()) + " bytes long" : std::string("missing")),
                    "resume with the data the position was saved with");
      doc_ = std::move(*doc);
      doc_pos_ = p.doc_offset;
      doc_source_ = p.source;
      in_doc_ = true;
    }
  }
}

void DataLoader::end_document() {
  if (doc_.capacity() > 2 * Tokenizer::kPieceBytes) std::string().swap(doc_);  // give a long document's memory back
  doc_.clear();
  doc_pos_ = 0;
  doc_source_ = nullptr;
  in_doc_ = false;
}

void DataLoader::encode_more() {
  // A long document is tokenized a piece at a time: the tokens held stay near one batch.
  doc_pos_ = tokenizer_->encode_piece(doc_, doc_pos_, buffer_);
  if (doc_pos_ < doc_.size()) return;
  if (tokenizer_->eos_id() >= 0) buffer_.push_back(tokenizer_->eos_id());
  end_document();
}

bool DataLoader::fill_text(size_t need) {
  bool just_reset = false;  // a whole pass that yields nothing would loop forever
  while (buffer_.size() - pos_ < need) {
    if (pos_ > 0 && pos_ > buffer_.size() / 2) {  // drop what was consumed
      buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
      pos_ = 0;
    }
    if (in_doc_) {
      encode_more();
      continue;
    }
    nlohmann::json before = source_->state();
    auto doc = source_->next();
    if (!doc) {
      if (!opt_.infinite || just_reset) return false;
      ++epoch_;
      log::warning("Dataset " + opt_.name + " is being re-looped (epoch " + std::to_string(epoch_) + ")");
      source_->reset();
      just_reset = true;
      continue;
    }
    just_reset = false;
    if (tokenizer_->bos_id() >= 0) buffer_.push_back(tokenizer_->bos_id());
    doc_ = std::move(*doc);
    doc_source_ = std::move(before);
    in_doc_ = true;
    encode_more();
  }
  return true;
}

DataLoader::Item DataLoader::produce() {
  Item item;
  try {
    const size_t window = static_cast<size_t>(opt_.seq_len + 1);
    const size_t mine = window * static_cast<size_t>(opt_.batch_size);
    const size_t all_ranks = mine * static_cast<size_t>(opt_.slice_count);
    at::Tensor rows = at::empty({opt_.batch_size, opt_.seq_len + 1}, at::kLong);
    int64_t* out = rows.data_ptr<int64_t>();
    if (exhausted_) return item;
    if (shards_) {
      const uint64_t total = shards_->size();
      if (!opt_.infinite && token_pos_ + all_ranks > total) {
        exhausted_ = true;
        log::warning("Dataset " + opt_.name + " has run out of data");
        item.after = position();
        return item;
      }
      // This rank's rows only; the stream repeats with period `total` (one epoch).
      uint64_t at = token_pos_ + mine * static_cast<uint64_t>(opt_.slice_index);
      for (size_t left = mine; left > 0;) {
        const uint64_t in_epoch = at % total;
        const size_t take = static_cast<size_t>(std::min<uint64_t>(left, total - in_epoch));
        shards_->read(in_epoch, take, out);
        out += take;
        left -= take;
        at += take;
      }
      // A damaged shard can hold ids the model has no row for; say so instead of crashing the model.
      const int64_t* row = rows.data_ptr<int64_t>();
      const int64_t vocab = static_cast<int64_t>(shards_->vocab_size());
      for (size_t k = 0; k < mine; ++k)
        if (row[k] < 0 || row[k] >= vocab)
          throw Error("the token shards " + shards_->describe() + " hold the id " + std::to_string(row[k]) +
                          " at token " + std::to_string(token_pos_ + mine * static_cast<uint64_t>(opt_.slice_index) + k) +
                          " (mod " + std::to_string(total) + "), outside their vocabulary of " + std::to_string(vocab),
                      "re-create the shards with `titan data tokenize`");
      token_pos_ += all_ranks;
      const auto e = static_cast<int64_t>(token_pos_ / total);
      if (e > epoch_) {
        epoch_ = e;
        log::warning("Dataset " + opt_.name + " is being re-looped (epoch " + std::to_string(epoch_) + ")");
      }
    } else {
      if (!fill_text(all_ranks)) {
        if (opt_.infinite)
          throw Error("the dataset " + source_->describe() + " yields no text",
                      "check training.dataset / training.dataset_path");
        exhausted_ = true;
        log::warning("Dataset " + opt_.name + " has run out of data");
        item.after = position();
        return item;
      }
      std::copy_n(buffer_.data() + pos_ + mine * static_cast<size_t>(opt_.slice_index), mine, out);
      pos_ += all_ranks;
    }
    item.batch = Batch{rows.narrow(1, 0, opt_.seq_len).contiguous(), rows.narrow(1, 1, opt_.seq_len).contiguous()};
    item.after = position();
  } catch (...) {
    item.error = std::current_exception();
  }
  return item;
}

void DataLoader::start() {
  running_ = true;
  stop_ = false;
  thread_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < opt_.prefetch; });
        if (stop_) return;
      }
      Item item = produce();
      const bool last = !item.batch;
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(item));
      }
      cv_.notify_all();
      if (last) return;
    }
  });
}

void DataLoader::stop() {
  if (!running_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  queue_.clear();
  running_ = false;
  stop_ = false;
}

std::optional<Batch> DataLoader::next() {
  Item item;
  if (opt_.prefetch <= 0) {
    item = produce();
  } else {
    if (!running_) {
      if (consumed_->exhausted) return std::nullopt;
      start();
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    item = std::move(queue_.front());
    queue_.pop_front();
    if (!item.batch && !item.error) queue_.push_front(Item{std::nullopt, item.after, nullptr});  // stays at the end
    lock.unlock();
    cv_.notify_all();
  }
  if (item.error) {
    stop();
    std::rethrow_exception(item.error);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (item.after) consumed_ = item.after;
  return std::move(item.batch);
}

void DataLoader::reset() {
  stop();
  epoch_ = 0;
  exhausted_ = false;
  token_pos_ = 0;
  if (source_) {
    source_->reset();
    buffer_.clear();
    pos_ = 0;
    end_document();
  }
  consumed_ = position();
}

nlohmann::json DataLoader::state() const {
  std::shared_ptr<const Position> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    p = consumed_;
  }
  // Version 2 marks a position inside a long document, which builds that read only version 1
  // would resume wrongly.
  nlohmann::json s = {{"version", p->doc_offset > 0 ? 2 : 1},
                      {"kind", shards_ ? "tokens" : "text"},
                      {"dataset", describe()},
                      {"epoch", p->epoch},
                      {"exhausted", p->exhausted}};
  if (shards_) {
    s["token_position"] = p->token_pos;
  } else {
    s["tokenizer"] = tokenizer_->fingerprint();
    s["source"] = p->source;
    if (p->doc_offset > 0) s["document_offset"] = p->doc_offset;
    s["buffer"] = p->buffer;
  }
  return s;
}

void DataLoader::load_state(const nlohmann::json& s) {
  const std::string fix = "resume with the dataset and tokenizer the state was saved with";
  try {
    const int64_t version = state_integer(s, "version");
    if (version != 1 && version != 2)
      throw Error("the saved data position has version " + s.at("version").dump() + "; this build reads versions 1 and 2", fix);
    const std::string kind = s.at("kind").get<std::string>();
    if (kind != (shards_ ? "tokens" : "text"))
      throw Error("the saved data position is for " + kind + " data but this run reads " +
                      (shards_ ? "token shards" : "text"), fix);
    if (s.at("dataset").get<std::string>() != describe())
      throw Error("the saved data position is for the dataset " + s.at("dataset").get<std::string>() +
                      ", not " + describe(), fix);
    if (!shards_ && s.at("tokenizer").get<std::string>() != tokenizer_->fingerprint())
      throw Error("the saved data position was made with another tokenizer (" + s.at("tokenizer").get<std::string>() +
                      "); this run uses " + tokenizer_->describe() + " (" + tokenizer_->fingerprint() + ")", fix);
    Position p;
    p.epoch = state_integer(s, "epoch");
    p.exhausted = s.at("exhausted").get<bool>();
    if (shards_) {
      p.token_pos = static_cast<uint64_t>(state_integer(s, "token_position"));
      const uint64_t total = shards_->size();
      if (p.epoch < 0 || p.token_pos / total != static_cast<uint64_t>(p.epoch))  // the pass it is in is its epoch
        throw Error("the saved data position's token_position " + std::to_string(p.token_pos) + " is in pass " +
                        std::to_string(p.token_pos / total) + " over the " + std::to_string(total) + " tokens of " +
                        describe() + ", but its epoch is " + std::to_string(p.epoch),
                    "the position was edited or saved with other data; resume with the data it was saved with");
    } else {
      p.source = s.at("source");
      if (version == 2) p.doc_offset = static_cast<uint64_t>(state_integer(s, "document_offset"));
      for (const auto& id : s.at("buffer")) {
        if (!id.is_number_integer()) throw Error("the saved data position's buffer holds " + id.dump() + ", not a token id", fix);
        p.buffer.push_back(id.get<int64_t>());
      }
    }
    stop();
    restore(p);
    consumed_ = position();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("the saved data position is malformed (") + e.what() + ")", fix);
  }
}

// ---- the dataset registry ------------------------------------------------------------------------

namespace {

struct Registered {
  const char* name;
  const char* folder_pattern;  // shards a folder given as the path holds ("" = any data file)
  const char* what;
};

// Names as torchtitan spells them; titan.cpp downloads nothing, so all but "synthetic" need a
// local path.
constexpr Registered kDatasets[] = {
    {"synthetic", "", "built-in generated English (no files)"},
    {"c4", "c4-train.*.json*", "allenai/c4 \"en\" training shards"},
    {"c4_validation", "c4-validation.*.json*", "allenai/c4 \"en\" validation shards"},
    {"c4_test", "", "a small local c4 sample (JSON lines)"},
    {"text", "", "your JSON-lines or text files"},
    {"tokens", "*.bin", "pre-tokenized shards from `titan data tokenize`"},
};

const Registered* find_dataset(const std::string& name) {
  for (const auto& d : kDatasets)
    if (name == d.name) return &d;
  return nullptr;
}

std::string known_names() {
  std::string s;
  for (const auto& d : kDatasets) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

struct Resolved {
  std::unique_ptr<DocumentSource> text;
  std::shared_ptr<const TokenShards> shards;
};

Resolved resolve(const std::string& section, const std::string& dataset, const std::optional<std::string>& path,
                 const TextOptions& topt) {
  const std::string key = section + ".dataset";
  const Registered* d = find_dataset(dataset);
  if (!d)
    throw Error(key + " = \"" + dataset + "\" is not a known dataset",
                "use one of " + known_names() + " (docs/datasets.md), with " + key + "_path for local files");
  Resolved r;
  if (!path || path->empty()) {
    if (std::string(d->name) == "synthetic") {
      // Validation reads documents training never reads.
      r.text = std::make_unique<SyntheticEnglish>(0, 1, 20000, section == "validation" ? SyntheticEnglish::kHeldOut : 0);
      return r;
    }
    throw Error(key + " = \"" + dataset + "\" (" + d->what + ") has no local copy: titan.cpp downloads nothing",
                "set " + key + "_path to the local files, or use " + key + " = \"synthetic\"");
  }
  const auto files = resolve_files(*path, key + "_path", d->folder_pattern);
  if (is_token_shard(files.front())) {
    r.shards = std::make_shared<TokenShards>(files, *path + " (" + std::to_string(files.size()) + " token shard" +
                                                        (files.size() == 1 ? "" : "s") + ")");
  } else {
    if (std::string(d->name) == "tokens")
      throw Error(key + "_path = \"" + *path + "\" holds text, not .bin token shards",
                  "make shards with `titan data tokenize`, or set " + key + " = \"text\"");
    r.text = std::make_unique<TextFiles>(files, *path + " (" + std::to_string(files.size()) + " file" +
                                                    (files.size() == 1 ? "" : "s") + ")", topt);
  }
  return r;
}

}  // namespace

std::unique_ptr<DocumentSource> build_source(const std::string& dataset, const std::optional<std::string>& path,
                                             const TextOptions& opt) {
  auto r = resolve("training", dataset, path, opt);
  if (!r.text) throw Error("the dataset " + dataset + " is pre-tokenized, not text");
  return std::move(r.text);
}

std::unique_ptr<DataLoader> build_data_loader(const DatasetOptions& o, std::shared_ptr<const Tokenizer> tokenizer,
                                              int64_t dp_rank, int64_t dp_degree, bool infinite) {
  const std::string& section = o.section;
  TextOptions topt;
  topt.text_field = o.text_field;
  topt.skip_malformed = o.skip_malformed;
  topt.setting = section + ".dataset_path";
  const std::string& dataset = o.dataset;
  LoaderOptions opt;
  opt.batch_size = o.local_batch_size;
  opt.seq_len = o.seq_len;
  opt.infinite = infinite;
  opt.slice_index = dp_rank;
  opt.slice_count = dp_degree;
  opt.prefetch = o.prefetch_factor;
  opt.name = dataset;
  auto r = resolve(section, dataset, o.dataset_path, topt);
  if (r.shards) {
    // The manifest `titan data tokenize` writes names the tokenizer; shards alone carry only
    // the vocabulary size.
    const auto manifest = std::filesystem::path(r.shards->first_file()).parent_path() / "manifest.json";
    if (std::filesystem::exists(manifest)) {
      const auto m = parse_tokenize_manifest(read_file(manifest.string(), "manifest"), manifest.string());
      if (m["tokenizer"].get<std::string>() != tokenizer->fingerprint())
        throw Error(section + ".dataset_path: the shards in " + manifest.parent_path().string() +
                        " were made with another tokenizer (" + m["tokenizer"].get<std::string>() + ") than " +
                        tokenizer->describe() + " (" + tokenizer->fingerprint() + ")",
                    "tokenize the data with the model's tokenizer (titan data tokenize --tokenizer ...)");
    }
    if (r.shards->vocab_size() != static_cast<uint64_t>(tokenizer->vocab_size()))
      throw Error(section + ".dataset_path: the shards " + r.shards->describe() + " were tokenized with a vocabulary of " +
                      std::to_string(r.shards->vocab_size()) + " ids, but the tokenizer (" + tokenizer->describe() +
                      ") has " + std::to_string(tokenizer->vocab_size()),
                  "tokenize the data with the model's tokenizer (titan data tokenize --tokenizer ...)");
    return std::make_unique<DataLoader>(std::move(r.shards), opt);
  }
  return std::make_unique<DataLoader>(std::move(r.text), std::move(tokenizer), opt);
}

}  // namespace titan::components
