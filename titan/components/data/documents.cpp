#include "titan/components/data/documents.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "titan/common/crc32c.h"
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

}  // namespace

SyntheticEnglish::SyntheticEnglish(int64_t rank, int64_t world, int64_t num_documents, int64_t first)
    : rank_(rank), world_(world), num_documents_(num_documents), first_(first), index_(first + rank) {}

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

int64_t state_integer(const nlohmann::json& state, const char* key) {
  const auto it = state.is_object() ? state.find(key) : state.end();
  if (it == state.end() || !it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX) ||
      it->get<int64_t>() < 0)
    throw Error(std::string("the saved data position is malformed: \"") + key + "\" is " +
                    (it == state.end() ? std::string("missing") : it->dump()) + ", not a non-negative integer",
                "resume from a checkpoint or --save-state file titan.cpp wrote");
  return it->get<int64_t>();
}

std::optional<std::string> SyntheticEnglish::next() {
  if (index_ >= first_ + num_documents_) return std::nullopt;
  std::string doc = document(index_);
  index_ += world_;
  return doc;
}

std::string SyntheticEnglish::describe() const {
  return "synthetic English (built-in, " + std::to_string(num_documents_) + (first_ > 0 ? " held-out" : "") + " documents)";
}

void SyntheticEnglish::load_state(const nlohmann::json& s) {
  const int64_t i = state_integer(s, "index");
  if (i < first_ || (i - first_ - rank_) % world_ != 0)
    throw Error("the saved data position (synthetic document " + std::to_string(i) +
                    ") does not belong to this rank", "resume with the layout the state was saved with");
  if (i >= first_ + num_documents_ + world_)  // one past this rank's last document is the end of a pass
    throw Error("the saved data position's source.index is " + std::to_string(i) + ", past the " +
                    std::to_string(num_documents_) + " documents of " + describe(),
                "the position was edited or saved with other data; resume with the data it was saved with");
  index_ = i;
}

// ---- files -------------------------------------------------------------------------------------

namespace {

bool has_suffix(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string strip_compression(const std::string& s) {
  if (has_suffix(s, ".gz")) return s.substr(0, s.size() - 3);
  if (has_suffix(s, ".zst")) return s.substr(0, s.size() - 4);
  return s;
}

bool is_jsonl(const std::string& s) {
  const auto b = strip_compression(s);
  return has_suffix(b, ".jsonl") || has_suffix(b, ".json");
}

}  // namespace

bool is_text_file(const std::string& s) { return is_jsonl(s) || has_suffix(strip_compression(s), ".txt"); }
bool is_token_shard(const std::string& s) { return has_suffix(s, ".bin"); }

LineReader::LineReader(std::string path) : path_(std::move(path)) {
  file_ = std::fopen(path_.c_str(), "rb");
  if (!file_) throw Error("cannot open data file " + path_ + ": " + std::strerror(errno), "check that it exists and is readable");
  if (has_suffix(path_, ".zst")) {
    zstd_ = ZSTD_createDStream();
    ZSTD_initDStream(static_cast<ZSTD_DStream*>(zstd_));
    in_.resize(ZSTD_DStreamInSize());
  } else if (has_suffix(path_, ".gz")) {
    auto* z = new z_stream{};
    if (inflateInit2(z, 15 + 16) != Z_OK) {  // 15 + 16: a gzip wrapper, not zlib's
      delete z;
      throw Error("cannot start a gzip decoder for " + path_);
    }
    gz_ = z;
    in_.resize(1 << 20);
  }
  buf_.resize(1 << 20);
}

LineReader::~LineReader() {
  if (gz_) {
    inflateEnd(static_cast<z_stream*>(gz_));
    delete static_cast<z_stream*>(gz_);
  }
  if (file_) std::fclose(static_cast<FILE*>(file_));
  if (zstd_) ZSTD_freeDStream(static_cast<ZSTD_DStream*>(zstd_));
}

bool LineReader::fill_input() {
  in_len_ = std::fread(in_.data(), 1, in_.size(), static_cast<FILE*>(file_));
  in_pos_ = 0;
  if (in_len_ == 0 && std::ferror(static_cast<FILE*>(file_)))
    throw Error("cannot read data file " + path_ + ": " + std::strerror(errno), "check the disk and the file");
  return in_len_ > 0;
}

// gzip: every member is read (a file may be several gzip streams one after another, as `cat a.gz
// b.gz` makes) and each is checked whole (its CRC and length); anything after the last member
// that is not another gzip member is damage, as `gzip -t` says.
size_t LineReader::read_gzip(char* dst, size_t n) {
  auto* z = static_cast<z_stream*>(gz_);
  const std::string fix = "re-create or re-download the file (gzip -t " + path_ + " checks it)";
  z->next_out = reinterpret_cast<Bytef*>(dst);
  z->avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
  while (z->next_out == reinterpret_cast<Bytef*>(dst)) {  // until something is decoded, or the end
    if (in_pos_ == in_len_ && !fill_input()) {
      if (gz_in_member_)
        throw Error("data file " + path_ + " is truncated (its gzip stream ends early)", fix);
      return 0;
    }
    if (!gz_in_member_) {
      // Between members: the next bytes must start another gzip member.
      if (static_cast<unsigned char>(in_[in_pos_]) != 0x1f ||
          (in_pos_ + 1 < in_len_ && static_cast<unsigned char>(in_[in_pos_ + 1]) != 0x8b))
        throw Error("data file " + path_ + " has " + (gz_members_ ? "bytes after its last gzip member that are not gzip"
                                                                  : "no gzip header (is it really .gz?)"),
                    fix);
      inflateReset(z);
      gz_in_member_ = true;
    }
    z->next_in = reinterpret_cast<Bytef*>(in_.data() + in_pos_);
    z->avail_in = static_cast<uInt>(in_len_ - in_pos_);
    const int rc = inflate(z, Z_NO_FLUSH);
    in_pos_ = in_len_ - z->avail_in;
    if (rc == Z_STREAM_END) {
      gz_in_member_ = false;
      ++gz_members_;
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      throw Error("data file " + path_ + " is corrupt in gzip member " + std::to_string(gz_members_ + 1) + " (" +
                      (z->msg ? z->msg : "zlib error " + std::to_string(rc)) + ")",
                  fix);
    }
  }
  return static_cast<size_t>(z->next_out - reinterpret_cast<Bytef*>(dst));
}

size_t LineReader::read_some(char* dst, size_t n) {
  if (gz_) return read_gzip(dst, n);
  if (!zstd_) {
    const size_t got = std::fread(dst, 1, n, static_cast<FILE*>(file_));
    if (got == 0 && std::ferror(static_cast<FILE*>(file_)))
      throw Error("cannot read data file " + path_ + ": " + std::strerror(errno), "check the disk and the file");
    return got;
  }
  auto* z = static_cast<ZSTD_DStream*>(zstd_);
  ZSTD_outBuffer out{dst, n, 0};
  while (out.pos == 0) {
    if (in_pos_ == in_len_ && !fill_input()) {
      if (zstd_hint_ != 0)
        throw Error("data file " + path_ + " is truncated (the zstd frame ends early)",
                    "re-create or re-download the file");
      return 0;
    }
    ZSTD_inBuffer in{in_.data(), in_len_, in_pos_};
    const size_t rc = ZSTD_decompressStream(z, &out, &in);
    in_pos_ = in.pos;
    if (ZSTD_isError(rc))
      throw Error("data file " + path_ + " is corrupt (zstd: " + ZSTD_getErrorName(rc) + ")",
                  "re-create or re-download the file");
    zstd_hint_ = rc;
  }
  return out.pos;
}

bool LineReader::refill() {
  if (eof_) return false;
  buf_pos_ = 0;
  buf_len_ = read_some(buf_.data(), buf_.size());
  if (buf_len_ == 0) eof_ = true;
  return buf_len_ > 0;
}

bool LineReader::getline(std::string& line) {
  line.clear();
  bool any = false;
  for (;;) {
    if (buf_pos_ == buf_len_ && !refill()) return any;
    any = true;
    const char* start = buf_.data() + buf_pos_;
    const auto* nl = static_cast<const char*>(std::memchr(start, '\n', buf_len_ - buf_pos_));
    const size_t take = nl ? static_cast<size_t>(nl - start) : buf_len_ - buf_pos_;
    line.append(start, take);
    buf_pos_ += take + (nl ? 1 : 0);
    offset_ += take + (nl ? 1 : 0);
    if (nl) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return true;
    }
  }
}

void LineReader::skip_to(uint64_t target) {
  while (offset_ < target) {
    if (buf_pos_ == buf_len_ && !refill())
      throw Error("data file " + path_ + " is shorter than the saved data position (" + std::to_string(target) + " bytes)",
                  "resume with the same data files the state was saved with");
    const size_t take = static_cast<size_t>(std::min<uint64_t>(target - offset_, buf_len_ - buf_pos_));
    buf_pos_ += take;
    offset_ += take;
  }
}

std::vector<std::string> resolve_files(const std::string& path, const std::string& setting,
                                       const std::string& folder_pattern) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  const std::string where = setting + " = \"" + path + "\"";
  auto keep = [](const std::string& p) { return is_text_file(p) || is_token_shard(p); };
  if (path.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    const int rc = glob(path.c_str(), 0, nullptr, &g);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i)
      if (std::error_code ec; fs::is_regular_file(g.gl_pathv[i], ec)) files.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    if (files.empty()) throw Error(where + ": the pattern matches no files", "check the path and the pattern");
  } else if (std::error_code ec; !fs::exists(path, ec)) {
    throw Error(where + ": no such file or folder",
                "point it at a data file, a folder of them or a glob such as \"c4/en/c4-train.*.json.gz\"");
  } else if (std::error_code ec; fs::is_directory(path, ec)) {
    if (!folder_pattern.empty()) {
      for (const std::string& dir : {path, path + "/en"}) {
        if (!fs::is_directory(dir)) continue;
        glob_t g{};
        const std::string pat = dir + "/" + folder_pattern;
        if (glob(pat.c_str(), 0, nullptr, &g) == 0)
          for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
        globfree(&g);
        if (!files.empty()) break;
      }
      if (files.empty())
        throw Error(where + ": the folder holds no " + folder_pattern + " files (also looked in en/)",
                    "point it at the folder holding the shards");
    } else {
      // manifest.json is what `titan data tokenize` writes beside its shards, not data.
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(path, ec)) {
        if (!keep(e.path().string()) || e.path().filename() == "manifest.json") continue;
        // A data file that is a link to nothing is a mistake to report, not a file to skip.
        if (std::error_code lec; e.is_symlink(lec) && !fs::exists(e.path(), lec))
          throw Error(where + ": " + e.path().string() + " is a link to " + fs::read_symlink(e.path(), lec).string() +
                          ", which does not exist",
                      "restore the file it points at, or remove the link");
        if (e.is_regular_file(ec)) files.push_back(e.path().string());
      }
      if (files.empty())
        throw Error(where + ": the folder holds no data files (.jsonl, .json, .txt, plain/.gz/.zst, or .bin shards)",
                    "put the data files there or point at a file or a glob");
    }
  } else {
    files.push_back(path);
  }
  std::sort(files.begin(), files.end());
  bool text = false, tokens = false;
  for (const auto& f : files) {
    if (is_text_file(f)) text = true;
    else if (is_token_shard(f)) tokens = true;
    else
      throw Error(where + ": " + f + " is of an unknown type",
                  "use .jsonl/.json (JSON lines), .txt (optionally .gz or .zst) or .bin shards from `titan data tokenize`");
  }
  if (text && tokens) throw Error(where + ": mixes text files and .bin token shards", "point at one kind");
  return files;
}

TextFiles::TextFiles(std::vector<std::string> files, std::string describe, TextOptions opt, int64_t rank,
                     int64_t world)
    : files_(std::move(files)), describe_(std::move(describe)), opt_(std::move(opt)), rank_(rank), world_(world) {
  open(0);
}

TextFiles::~TextFiles() = default;

void TextFiles::open(size_t i) {
  reader_.reset();
  file_index_ = i;
  line_no_ = 0;
  if (i < files_.size()) reader_ = std::make_unique<LineReader>(files_[i]);
}

void TextFiles::reset() {
  doc_index_ = 0;
  open(0);
}

nlohmann::json TextFiles::state() const {
  return {{"file", file_index_},
          {"file_name", file_index_ < files_.size() ? files_[file_index_] : ""},
          {"offset", reader_ ? reader_->offset() : 0},
          {"line", line_no_},
          {"document", doc_index_},
          {"skipped_empty", skipped_.empty},
          {"skipped_malformed", skipped_.malformed}};
}

void TextFiles::load_state(const nlohmann::json& s) {
  const size_t file = static_cast<size_t>(state_integer(s, "file"));
  if (file > files_.size() || (file < files_.size() && s.at("file_name").get<std::string>() != files_[file]))
    throw Error("the saved data position is in file " + s.at("file_name").get<std::string>() +
                    ", which is not file " + std::to_string(file) + " of " + describe_,
                "resume with the same data files the state was saved with");
  open(file);
  const auto offset = static_cast<uint64_t>(state_integer(s, "offset"));
  line_no_ = state_integer(s, "line");
  doc_index_ = state_integer(s, "document");
  if (reader_) reader_->skip_to(offset);
  skipped_.empty = s.contains("skipped_empty") ? state_integer(s, "skipped_empty") : 0;
  skipped_.malformed = s.contains("skipped_malformed") ? state_integer(s, "skipped_malformed") : 0;
}

std::optional<std::string> TextFiles::next() {
  std::string line, paragraph;
  while (file_index_ < files_.size()) {
    const bool more = reader_->getline(line);
    const std::string& file = files_[file_index_];
    const bool json_lines = is_jsonl(file);
    const bool blank = !more || line.find_first_not_of(" \t\r") == std::string::npos;
    if (more) ++line_no_;
    if (!json_lines) {
      // Plain text: a document is a paragraph, lines up to a blank line or the end of the file.
      if (!blank) {
        if (!paragraph.empty()) paragraph += '\n';
        paragraph += line;
        continue;
      }
      if (!more) open(file_index_ + 1);
      if (paragraph.empty()) continue;
      if (doc_index_++ % world_ != rank_) {
        paragraph.clear();
        continue;
      }
      return paragraph;
    }
    if (!more) {
      open(file_index_ + 1);
      continue;
    }
    if (blank) {
      ++skipped_.empty;  // a blank line in JSON lines holds no document
      continue;
    }
    if (doc_index_++ % world_ != rank_) continue;
    const std::string where = file + ":" + std::to_string(line_no_);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers out of range
      if (opt_.skip_malformed) {
        ++skipped_.malformed;
        continue;
      }
      throw Error(where + ": malformed JSON line (" + std::string(e.what()) + ")",
                  "fix the line, or set " + section() + ".dataset_skip_malformed = true to skip and count such lines");
    }
    if (!j.is_object() || !j.contains(opt_.text_field) || !j[opt_.text_field].is_string()) {
      if (opt_.skip_malformed) {
        ++skipped_.malformed;
        continue;
      }
      throw Error(where + ": no string field \"" + opt_.text_field + "\"",
                  "each line must be a JSON object with a \"" + opt_.text_field +
                      "\" string; set " + section() + ".dataset_text_field for another field name");
    }
    std::string().swap(line);  // a long line's memory back before the text is returned
    // An empty text is a document (BOS and EOS alone), as torchtitan reads it.
    return std::move(j[opt_.text_field].get_ref<std::string&>());
  }
  return std::nullopt;
}

nlohmann::json parse_tokenize_manifest(std::string_view text, const std::string& path) {
  const std::string fix = "delete " + path + " and run `titan data tokenize` again (it remakes every shard)";
  auto m = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!m.is_object() || !m.contains("tokenizer") || !m["tokenizer"].is_string() || !m.contains("shards") ||
      !m["shards"].is_object())
    throw Error(path + " is malformed (not the JSON object `titan data tokenize` writes)", fix);
  for (const auto& [name, entry] : m["shards"].items())
    if (!entry.is_object() || !entry.contains("input") || !entry["input"].is_string())
      throw Error(path + " is malformed: the entry of " + name + " names no input", fix);
  return m;
}

// ---- binary shards -------------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, uint32_t token_bytes, uint64_t vocab_size)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), token_bytes_(token_bytes), vocab_size_(vocab_size) {
  if (token_bytes != 2 && token_bytes != 4) throw Error("token shards hold 2 or 4 bytes per token");
  file_ = std::fopen(tmp_.c_str(), "wb");
  if (!file_) throw Error("cannot write " + tmp_ + ": " + std::strerror(errno), "check free space and permissions");
  const std::vector<unsigned char> header(ShardHeader::kSize, 0);  // written for real by finish()
  std::fwrite(header.data(), 1, header.size(), static_cast<std::FILE*>(file_));
}

ShardWriter::~ShardWriter() {
  if (!file_) return;
  std::fclose(static_cast<std::FILE*>(file_));
  std::remove(tmp_.c_str());
}

void ShardWriter::append_part(const std::vector<int64_t>& ids, bool document_ends) {
  bytes_.resize(ids.size() * token_bytes_);
  const uint64_t limit = token_bytes_ == 2 ? 0xffffull : 0xffffffffull;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (ids[k] < 0 || static_cast<uint64_t>(ids[k]) > limit)
      throw Error("token id " + std::to_string(ids[k]) + " does not fit a " + std::to_string(token_bytes_) + "-byte shard");
    const auto t = static_cast<uint32_t>(ids[k]);
    for (uint32_t b = 0; b < token_bytes_; ++b) bytes_[k * token_bytes_ + b] = static_cast<unsigned char>(t >> (8 * b));
  }
  if (std::fwrite(bytes_.data(), 1, bytes_.size(), static_cast<std::FILE*>(file_)) != bytes_.size())
    throw Error("cannot write " + tmp_ + " (disk full?)", "free some space and run the command again");
  crc_ = crc32c(crc_, bytes_.data(), bytes_.size());
  tokens_ += ids.size();
  if (document_ends) ++documents_;
}

void ShardWriter::finish() {
  unsigned char h[ShardHeader::kSize] = {};
  std::memcpy(h, ShardHeader::kMagic, 8);
  const uint32_t version = ShardHeader::kVersion;
  std::memcpy(h + 8, &version, 4);
  std::memcpy(h + 12, &token_bytes_, 4);
  std::memcpy(h + 16, &tokens_, 8);
  std::memcpy(h + 24, &documents_, 8);
  std::memcpy(h + 32, &vocab_size_, 8);
  std::memcpy(h + 40, &crc_, 4);
  auto* f = static_cast<std::FILE*>(file_);
  // Header, flush and fsync before the rename: a shard that has its final name is whole on disk.
  bool ok = std::fseek(f, 0, SEEK_SET) == 0 && std::fwrite(h, 1, sizeof(h), f) == sizeof(h) && std::fflush(f) == 0 &&
            ::fsync(::fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_.c_str());
    throw Error("cannot write " + path_ + ": " + std::strerror(errno), "check free space and permissions");
  }
}

ShardHeader read_shard_header(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open token shard " + path + ": " + std::strerror(errno), "check that it exists and is readable");
  unsigned char h[ShardHeader::kSize];
  const size_t got = std::fread(h, 1, sizeof(h), f);
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  std::fclose(f);
  const std::string fix = "re-create it with `titan data tokenize` (it resumes where it stopped)";
  if (got < ShardHeader::kSize || std::memcmp(h, ShardHeader::kMagic, 8) != 0)
    throw Error("token shard " + path + " has no TITANTOK header (truncated, or not a titan.cpp shard)", fix);
  auto u32 = [&](size_t o) { uint32_t v; std::memcpy(&v, h + o, 4); return v; };
  auto u64 = [&](size_t o) { uint64_t v; std::memcpy(&v, h + o, 8); return v; };
  if (u32(8) != 1 && u32(8) != ShardHeader::kVersion)
    throw Error("token shard " + path + " has format version " + std::to_string(u32(8)) + "; this build reads versions 1 and 2",
                fix);
  ShardHeader s;
  s.version = u32(8);
  s.crc32c = s.version >= 2 ? u32(40) : 0;
  s.token_bytes = u32(12);
  s.tokens = u64(16);
  s.documents = u64(24);
  s.vocab_size = u64(32);
  if (s.token_bytes != 2 && s.token_bytes != 4)
    throw Error("token shard " + path + " says " + std::to_string(s.token_bytes) + " bytes per token (2 or 4 expected)", fix);
  if (s.tokens > (static_cast<uint64_t>(size) / s.token_bytes) + 1)
    throw Error("token shard " + path + " is " + std::to_string(size) + " bytes but its header promises " +
                    std::to_string(s.tokens) + " tokens: truncated or corrupt", fix);
  const uint64_t want = ShardHeader::kSize + s.tokens * s.token_bytes;
  if (static_cast<uint64_t>(size) != want)
    throw Error("token shard " + path + " is " + std::to_string(size) + " bytes but its header promises " +
                    std::to_string(want) + " (" + std::to_string(s.tokens) + " tokens): truncated or corrupt", fix);
  return s;
}

namespace {

void check_shard_crc(const std::string& path, const ShardHeader& h, uint32_t crc) {
  if (crc != h.crc32c)
    throw Error("token shard " + path + " is damaged: its tokens' CRC-32C is " + std::to_string(crc) +
                    " but its header says " + std::to_string(h.crc32c),
                "re-create it with `titan data tokenize` (delete the shard; the rerun makes it again)");
}

}  // namespace

void verify_shard(const std::string& path, const ShardHeader& h, const unsigned char* tokens) {
  if (h.version < 2) return;  // version 1 carries no checksum
  check_shard_crc(path, h, crc32c(0, tokens, h.tokens * h.token_bytes));
}

ShardHeader read_and_verify_shard(const std::string& path) {
  const ShardHeader h = read_shard_header(path);
  if (h.version < 2) return h;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open token shard " + path + ": " + std::strerror(errno));
  std::vector<unsigned char> buf(std::min<uint64_t>(h.tokens * h.token_bytes, 8u << 20) + 1);
  uint32_t crc = 0;
  uint64_t left = h.tokens * h.token_bytes;
  bool ok = std::fseek(f, ShardHeader::kSize, SEEK_SET) == 0;
  while (ok && left > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    ok = std::fread(buf.data(), 1, n, f) == n;
    crc = crc32c(crc, buf.data(), n);
    left -= n;
  }
  std::fclose(f);
  if (!ok) throw Error("cannot read token shard " + path, "check the disk and the file");
  check_shard_crc(path, h, crc);
  return h;
}

TokenShards::TokenShards(std::vector<std::string> files, std::string describe) : describe_(std::move(describe)) {
  if (!files.empty()) first_file_ = files.front();
  try {
    map_all(files);
  } catch (...) {
    for (const auto& s : shards_) munmap(const_cast<unsigned char*>(s.data - ShardHeader::kSize), s.map_size);
    throw;
  }
}

void TokenShards::map_all(const std::vector<std::string>& files) {
  for (const auto& path : files) {
    const ShardHeader h = read_shard_header(path);
    Shard s;
    s.path = path;
    s.first = total_;
    s.tokens = h.tokens;
    s.token_bytes = h.token_bytes;
    s.map_size = ShardHeader::kSize + h.tokens * h.token_bytes;
    if (h.tokens == 0) continue;
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw Error("cannot open token shard " + path, "check that it is readable");
    void* p = mmap(nullptr, s.map_size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw Error("cannot map token shard " + path + ": " + std::strerror(errno));
    s.data = static_cast<const unsigned char*>(p) + ShardHeader::kSize;
    try {
      verify_shard(path, h, s.data);
    } catch (...) {
      munmap(p, s.map_size);
      throw;
    }
    total_ += h.tokens;
    vocab_size_ = std::max(vocab_size_, h.vocab_size);
    shards_.push_back(s);
  }
}

TokenShards::~TokenShards() {
  for (const auto& s : shards_) munmap(const_cast<unsigned char*>(s.data - ShardHeader::kSize), s.map_size);
}

void TokenShards::read(uint64_t begin, size_t n, int64_t* out) const {
  auto it = std::upper_bound(shards_.begin(), shards_.end(), begin,
                             [](uint64_t b, const Shard& s) { return b < s.first; });
  size_t k = static_cast<size_t>(it - shards_.begin()) - 1;
  while (n > 0) {
    const Shard& s = shards_[k];
    const uint64_t off = begin - s.first;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(n, s.tokens - off));
    if (s.token_bytes == 2) {
      const auto* p = s.data + off * 2;
      for (size_t i = 0; i < take; ++i) out[i] = static_cast<int64_t>(p[2 * i] | (p[2 * i + 1] << 8));
    } else {
      const auto* p = s.data + off * 4;
      for (size_t i = 0; i < take; ++i) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = static_cast<int64_t>(v);
      }
    }
    out += take;
    n -= take;
    begin += take;
    ++k;
  }
}

}  // namespace titan::components
