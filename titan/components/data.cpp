#include "titan/components/data.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "titan/common/error.h"

namespace titan::components {

namespace {

// splitmix64: a small, well-mixed generator, so each document is a pure function of its index.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  template <size_t N>
  const char* pick(const std::array<const char*, N>& words) { return words[next() % N]; }
};

constexpr std::array<const char*, 24> kNouns = {
    "river", "city", "garden", "teacher", "child", "machine", "forest", "letter",
    "king", "window", "market", "song", "horse", "winter", "story", "engineer",
    "mountain", "ship", "library", "friend", "storm", "village", "lamp", "road"};
constexpr std::array<const char*, 16> kAdjectives = {
    "old", "quiet", "bright", "small", "green", "strange", "cold", "gentle",
    "busy", "distant", "golden", "heavy", "young", "careful", "empty", "warm"};
constexpr std::array<const char*, 16> kVerbs = {
    "sees", "follows", "builds", "remembers", "carries", "watches", "finds", "opens",
    "crosses", "answers", "paints", "keeps", "leaves", "visits", "repairs", "reads"};
constexpr std::array<const char*, 8> kAdverbs = {
    "slowly", "again", "at dawn", "without a word", "every morning", "by the fire", "in silence",
    "once more"};
constexpr std::array<const char*, 6> kJoins = {"and", "but", "so", "while", "because", "until"};
constexpr std::array<const char*, 4> kArticles = {"the", "a", "the", "this"};

// Every draw is its own statement: the order of operands in one expression is unspecified in
// C++, and the text must not depend on the compiler.
std::string noun_phrase(Rng& r) {
  std::string article = r.pick(kArticles);
  std::string rest;
  if (r.next() % 2) {
    rest += r.pick(kAdjectives);
    rest += " ";
  }
  rest += r.pick(kNouns);
  if (article == "a" && std::string_view("aeiou").find(rest[0]) != std::string_view::npos) article = "an";
  return article + " " + rest;
}

std::string clause(Rng& r) {
  std::string s = noun_phrase(r);
  s += " ";
  s += r.pick(kVerbs);
  s += " ";
  s += noun_phrase(r);
  return s;
}

std::string sentence(Rng& r) {
  std::string s = clause(r);
  if (r.next() % 3 == 0) {
    s += " ";
    s += r.pick(kAdverbs);
  }
  if (r.next() % 4 == 0) {
    s += " ";
    s += r.pick(kJoins);
    s += " ";
    s += clause(r);
  }
  s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s + (r.next() % 8 == 0 ? "?" : ".");
}

bool has_suffix(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string strip_gz(const std::string& s) { return has_suffix(s, ".gz") ? s.substr(0, s.size() - 3) : s; }
bool is_jsonl(const std::string& s) {
  auto b = strip_gz(s);
  return has_suffix(b, ".jsonl") || has_suffix(b, ".json");
}
bool is_text(const std::string& s) { return has_suffix(strip_gz(s), ".txt"); }

}  // namespace

SyntheticEnglish::SyntheticEnglish(int64_t rank, int64_t world, int64_t num_documents)
    : rank_(rank), world_(world), num_documents_(num_documents), index_(rank) {}

std::string SyntheticEnglish::document(int64_t index) {
  Rng r{static_cast<uint64_t>(index) * 0x2545F4914F6CDD1Dull + 12345};
  std::string title = noun_phrase(r);
  title[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(title[0])));
  std::string doc = title + "\n\n";
  const int sentences = 4 + static_cast<int>(r.next() % 12);
  for (int i = 0; i < sentences; ++i) {
    if (i) doc += " ";
    doc += sentence(r);
  }
  return doc + "\n";
}

std::optional<std::string> SyntheticEnglish::next() {
  if (index_ >= num_documents_) return std::nullopt;
  std::string doc = document(index_);
  index_ += world_;
  return doc;
}

std::string SyntheticEnglish::describe() const {
  return "synthetic English (built-in, " + std::to_string(num_documents_) + " documents)";
}

TextFiles::TextFiles(const std::string& path, std::string text_field, int64_t rank, int64_t world)
    : path_(path), text_field_(std::move(text_field)), rank_(rank), world_(world) {
  namespace fs = std::filesystem;
  if (!fs::exists(path))
    throw Error("training.dataset_path = \"" + path + "\": no such file or folder",
                "point it at a .jsonl/.json/.txt file (optionally .gz) or a folder of them");
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      const std::string p = e.path().string();
      if (e.is_regular_file() && (is_jsonl(p) || is_text(p))) files_.push_back(p);
    }
    std::sort(files_.begin(), files_.end());
    if (files_.empty())
      throw Error("training.dataset_path = \"" + path + "\": the folder holds no .jsonl, .json or .txt files (plain or .gz)",
                  "put the data files there or point at a file");
  } else {
    if (!is_jsonl(path) && !is_text(path))
      throw Error("training.dataset_path = \"" + path + "\": unknown file type",
                  "use .jsonl/.json (JSON lines with a \"text\" field) or .txt, optionally .gz");
    files_.push_back(path);
  }
  open(0);
}

TextFiles::~TextFiles() {
  if (gz_) gzclose(static_cast<gzFile>(gz_));
}

void TextFiles::open(size_t i) {
  if (gz_) gzclose(static_cast<gzFile>(gz_));
  gz_ = nullptr;
  file_index_ = i;
  line_no_ = 0;
  if (i >= files_.size()) return;
  gz_ = gzopen(files_[i].c_str(), "rb");
  if (!gz_) throw Error("cannot open data file " + files_[i], "check that it exists and is readable");
  gzbuffer(static_cast<gzFile>(gz_), 1 << 20);
}

void TextFiles::reset() {
  doc_index_ = 0;
  open(0);
}

bool TextFiles::read_line(std::string& line) {
  line.clear();
  char buf[1 << 16];
  auto* f = static_cast<gzFile>(gz_);
  while (gzgets(f, buf, sizeof(buf))) {
    line += buf;
    if (!line.empty() && line.back() == '\n') break;
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  if (err != Z_OK && err != Z_BUF_ERROR)
    throw Error("data file " + files_[file_index_] + " is corrupt or truncated: " + msg,
                "re-create or re-download the file");
  if (line.empty()) return false;
  ++line_no_;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return true;
}

std::optional<std::string> TextFiles::next() {
  std::string line;
  while (file_index_ < files_.size()) {
    if (!read_line(line)) {
      open(file_index_ + 1);
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines are not documents
    const int64_t mine = doc_index_++ % world_ == rank_;
    if (!mine) continue;
    if (!is_jsonl(files_[file_index_])) return line;
    const std::string where = files_[file_index_] + ":" + std::to_string(line_no_);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(where + ": malformed JSON line (" + std::string(e.what()) + ")",
                  "each line must be one JSON object, e.g. {\"text\": \"...\"}");
    }
    if (!j.is_object() || !j.contains(text_field_) || !j[text_field_].is_string())
      throw Error(where + ": no string field \"" + text_field_ + "\"",
                  "each line must be a JSON object with a \"" + text_field_ + "\" string");
    return j[text_field_].get<std::string>();
  }
  return std::nullopt;
}

std::string TextFiles::describe() const {
  return path_ + " (" + std::to_string(files_.size()) + " file" + (files_.size() == 1 ? "" : "s") + ")";
}

DataLoader::DataLoader(std::unique_ptr<DocumentSource> source,
                       std::shared_ptr<const Tokenizer> tokenizer, int64_t batch_size,
                       int64_t seq_len, bool infinite, int64_t slice_index, int64_t slice_count)
    : source_(std::move(source)), tokenizer_(std::move(tokenizer)), batch_size_(batch_size),
      seq_len_(seq_len), infinite_(infinite), slice_index_(slice_index), slice_count_(slice_count) {}

bool DataLoader::fill(size_t need) {
  bool empty_pass = true;
  while (buffer_.size() - pos_ < need) {
    auto doc = source_->next();
    if (!doc) {
      if (!infinite_ || empty_pass) return false;  // a pass that yields nothing would loop forever
      ++epoch_;
      source_->reset();
      empty_pass = true;
      continue;
    }
    empty_pass = false;
    if (pos_ > 0 && pos_ > buffer_.size() / 2) {  // drop what was consumed
      buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
      pos_ = 0;
    }
    buffer_.push_back(tokenizer_->bos_id());
    auto ids = tokenizer_->encode(*doc);
    buffer_.insert(buffer_.end(), ids.begin(), ids.end());
    buffer_.push_back(tokenizer_->eos_id());
  }
  return true;
}

std::optional<Batch> DataLoader::next() {
  const size_t window = static_cast<size_t>(seq_len_ + 1);
  const size_t mine = window * static_cast<size_t>(batch_size_);
  if (!fill(mine * static_cast<size_t>(slice_count_))) {
    if (infinite_)
      throw Error("the dataset " + source_->describe() + " yields no text",
                  "check training.dataset / training.dataset_path");
    return std::nullopt;
  }
  at::Tensor all = at::empty({batch_size_, seq_len_ + 1}, at::kLong);
  std::copy_n(buffer_.data() + pos_ + mine * static_cast<size_t>(slice_index_), mine, all.data_ptr<int64_t>());
  pos_ += mine * static_cast<size_t>(slice_count_);
  return Batch{all.narrow(1, 0, seq_len_).contiguous(), all.narrow(1, 1, seq_len_).contiguous()};
}

std::unique_ptr<DocumentSource> build_source(const std::string& dataset,
                                             const std::optional<std::string>& dataset_path,
                                             int64_t rank, int64_t world) {
  if (dataset_path && !dataset_path->empty())
    return std::make_unique<TextFiles>(*dataset_path, "text", rank, world);
  if (dataset == "synthetic") return std::make_unique<SyntheticEnglish>(rank, world);
  if (dataset == "c4" || dataset == "c4_test" || dataset == "c4_validation")
    throw Error("training.dataset = \"" + dataset + "\" has no local copy (titan.cpp downloads nothing)",
                "set training.dataset_path to a folder of c4 .json.gz shards, or use dataset = \"synthetic\"");
  throw Error("training.dataset = \"" + dataset + "\" is unknown",
              "use \"synthetic\" (built-in) or set training.dataset_path to your files");
}

}  // namespace titan::components
