#include "titan/components/tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/components/tokenizer/unicode_classes.h"

namespace titan::components {

const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace bpe_detail {
namespace {

// ---- small open-addressing hash tables -------------------------------------------------------

uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  return k ^ (k >> 33);
}

// uint64 → uint64; the key ~0 is reserved for empty slots. Grows to stay at most half full.
class PairMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    if (cap <= keys_.size()) return;
    std::vector<uint64_t> keys(cap, kEmpty), vals(cap, 0);
    keys.swap(keys_);
    vals.swap(vals_);
    mask_ = cap - 1;
    size_ = 0;
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] != kEmpty) put(keys[i], vals[i]);
  }
  void put(uint64_t k, uint64_t v) {
    if (2 * (size_ + 1) > keys_.size()) reserve(2 * (size_ + 1));
    for (size_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty || keys_[i] == k) {
        size_ += keys_[i] == kEmpty;
        keys_[i] = k;
        vals_[i] = v;
        return;
      }
    }
  }
  bool get(uint64_t k, uint64_t& v) const {
    if (keys_.empty()) return false;
    for (size_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == k) {
        v = vals_[i];
        return true;
      }
      if (keys_[i] == kEmpty) return false;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  std::vector<uint64_t> keys_, vals_;
  size_t mask_ = 0, size_ = 0;
};

// bytes → id, over a table of strings owned elsewhere.
class StrMap {
 public:
  void build(const std::vector<std::string>* strings, const std::vector<char>& usable) {
    strings_ = strings;
    size_t cap = 16;
    while (cap < 2 * strings->size()) cap <<= 1;
    slots_.assign(cap, -1);
    mask_ = cap - 1;
    for (size_t id = 0; id < strings->size(); ++id)
      if (usable[id]) put((*strings)[id], static_cast<int32_t>(id));
  }
  int32_t get(std::string_view s) const {
    if (slots_.empty()) return -1;
    for (size_t i = std::hash<std::string_view>{}(s) & mask_;; i = (i + 1) & mask_) {
      const int32_t id = slots_[i];
      if (id < 0) return -1;
      if ((*strings_)[id] == s) return id;
    }
  }

 private:
  void put(std::string_view s, int32_t id) {
    for (size_t i = std::hash<std::string_view>{}(s) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] < 0) {
        slots_[i] = id;
        return;
      }
      if ((*strings_)[slots_[i]] == s) return;  // the first id keeps a duplicated text
    }
  }
  const std::vector<std::string>* strings_ = nullptr;
  std::vector<int32_t> slots_;
  size_t mask_ = 0;
};

// ---- regexes -----------------------------------------------------------------------------------

// The classes \s, \p{L} and \p{N} as the regex engines of tiktoken and HF tokenizers define
// them (Unicode 16): \s is Unicode White_Space (PCRE2's \s also takes U+180E), and letters and
// numbers gain the code points Unicode 15 and 16 added (unicode_classes.h), which PCRE2 10.42
// (Unicode 14) lacks. So the three engines split text the same way.
constexpr const char* kWhiteSpaceItems =
    "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";

std::string rewrite_classes(const std::string& p) {
  std::string out;
  bool in_class = false;
  auto item = [&](const std::string& items) { out += in_class ? items : "[" + items + "]"; };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[++i];
      if (n == 's') {
        item(kWhiteSpaceItems);
      } else if (n == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceItems) + "]";
      } else if (n == 'p' && p.compare(i + 1, 3, "{L}") == 0) {
        item(std::string("\\p{L}") + unicode::kExtraLetters);
        i += 3;
      } else if (n == 'p' && p.compare(i + 1, 3, "{N}") == 0) {
        item(std::string("\\p{N}") + unicode::kExtraNumbers);
        i += 3;
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a literal ] first in a class
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(64, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(ctx);
    pcre2_match_data_free(md);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    const std::string p = rewrite_classes(pattern);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw Error(where + ": the regex " + pattern + " does not compile (" +
                      reinterpret_cast<const char*>(msg) + " at offset " + std::to_string(off) + ")",
                  "fix the pattern in the tokenizer file");
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  const std::string& pattern() const { return pattern_; }

  // Calls emit(begin, end, is_match) for consecutive spans that cover `s`: the matches and
  // the text between them (bytes no alternative matches, e.g. invalid UTF-8).
  template <class F>
  void split(std::string_view s, F&& emit) const {
    MatchScratch& m = scratch();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    const size_t n = s.size();
    size_t gap = 0, from = 0;
    while (from < n) {
      const int rc = jit_ ? pcre2_jit_match(code_, subject, n, from, 0, m.md, m.ctx)
                          : pcre2_match(code_, subject, n, from, 0, m.md, m.ctx);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT)
        break;  // pathological input (millions of spaces): the rest becomes one piece, every byte kept
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw Error(std::string("tokenizer regex failed: ") + reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match: step over one character
        from = b + 1;
        while (from < n && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) ++from;
        continue;
      }
      if (b > gap) emit(gap, b, false);
      emit(b, e, true);
      gap = from = e;
    }
    if (gap < n) emit(gap, n, false);
  }

 private:
  std::string pattern_;  // as written in the tokenizer file
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// ---- normalizers -------------------------------------------------------------------------------

enum class Norm { NFC, NFD, NFKC, NFKD, Lowercase };

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Applies `f` to each maximal valid UTF-8 run, copying invalid bytes through unchanged.
template <class F>
std::string per_valid_run(std::string_view s, F&& f) {
  std::string out;
  size_t i = 0, run = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp;
    const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                      static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (len > 0) {
      i += static_cast<size_t>(len);
      continue;
    }
    if (i > run) out += f(s.substr(run, i - run));
    out += s[i];
    run = ++i;
  }
  if (i > run) out += f(s.substr(run, i - run));
  return out;
}

std::string normalize_valid(std::string_view s, Norm n) {
  if (n == Norm::Lowercase) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      utf8proc_int32_t cp;
      const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                        static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
      i += static_cast<size_t>(len);
      utf8proc_uint8_t buf[4];
      const auto w = utf8proc_encode_char(utf8proc_tolower(cp), buf);
      out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(w));
    }
    return out;
  }
  int opt = UTF8PROC_STABLE;
  if (n == Norm::NFC || n == Norm::NFKC) opt |= UTF8PROC_COMPOSE;
  else opt |= UTF8PROC_DECOMPOSE;
  if (n == Norm::NFKC || n == Norm::NFKD) opt |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* dst = nullptr;
  const auto len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                static_cast<utf8proc_option_t>(opt));
  if (len < 0) return std::string(s);
  std::string out(reinterpret_cast<char*>(dst), static_cast<size_t>(len));
  std::free(dst);
  return out;
}

std::string normalize(std::string_view s, Norm n) {
  if (is_ascii(s)) {
    if (n != Norm::Lowercase) return std::string(s);
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  }
  return per_valid_run(s, [&](std::string_view run) { return normalize_valid(run, n); });
}

// ---- byte-level alphabet -----------------------------------------------------------------------

struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::vector<int> from_cp = std::vector<int>(512, -1);
  ByteAlphabet() {
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cp[b] = printable ? b : extra++;
      from_cp[to_cp[b]] = static_cast<int>(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// The bytes a byte-level token string stands for; false if it holds other characters.
bool byte_level_decode(std::string_view s, std::string& out) {
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp;
    const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                      static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (len <= 0 || cp < 0 || cp >= 512 || alphabet().from_cp[cp] < 0) return false;
    out.push_back(static_cast<char>(alphabet().from_cp[cp]));
    i += static_cast<size_t>(len);
  }
  return true;
}

}  // namespace

// ---- the model ---------------------------------------------------------------------------------

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Step {
  enum Kind { Split, PrefixSpace } kind;
  std::shared_ptr<Regex> re;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word;
};

struct Model {
  std::vector<std::string> bytes;    // id → the bytes it stands for (decoding)
  std::vector<char> special;         // id → special token
  // id → a vocabulary key that is not byte-level text (a raw " " or "\n" beside a ByteLevel
  // pre-tokenizer): no pre-tokenized text can spell it, so encoding never gives it (as HF).
  std::vector<char> unreachable;
  StrMap vocab;                      // bytes → id, for the BPE vocabulary
  std::array<int32_t, 256> byte_id;  // the initial symbol of each byte (-1: none)
  PairMap merges;                    // (left << 32 | right) → (rank << 32 | merged)
  bool whole_piece = false;          // a piece found whole in the vocabulary is one token
  int32_t unk = -1;
  std::vector<AddedToken> added;     // longest first
  std::array<char, 256> added_first{};  // first bytes of added tokens
  bool any_plain_added = false;      // added tokens that are not special (always matched)
  std::vector<Norm> normalizers;
  std::vector<Step> steps;
  int64_t bos = -1, eos = -1;
  std::string description;
  uint64_t file_hash = 1469598103934665603ull;  // FNV-1a over the files read
  void hash_file(const std::string& bytes) {
    for (unsigned char c : bytes) {
      file_hash ^= c;
      file_hash *= 1099511628211ull;
    }
  }

  void set_size(size_t n) {
    if (bytes.size() < n) {
      bytes.resize(n);
      special.resize(n, 0);
    }
  }
  void finish() {
    std::vector<char> usable(bytes.size(), 0);
    unreachable.resize(bytes.size(), 0);
    for (size_t i = 0; i < bytes.size(); ++i) usable[i] = !special[i] && !bytes[i].empty() && !unreachable[i];
    // Added tokens are matched before the BPE runs; they are not vocabulary for merging.
    for (const auto& a : added) usable[static_cast<size_t>(a.id)] = usable[static_cast<size_t>(a.id)] && !a.special;
    vocab.build(&bytes, usable);
    std::stable_sort(added.begin(), added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    added_first.fill(0);
    any_plain_added = false;
    for (const auto& a : added) {
      if (!a.content.empty()) added_first[static_cast<unsigned char>(a.content[0])] = 1;
      any_plain_added |= !a.special;
    }
  }

  void bpe(std::string_view piece, std::vector<int64_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int64_t>& out) const;
  // Whether cut_point() may cut (plan_cuts), and what it must keep away from.
  bool cuttable = false;
  std::array<char, 256> plain_first{};  // first bytes of added tokens matched in plain text
  size_t longest_plain = 0;
  void plan_cuts();
  void encode(std::string_view text, std::vector<int64_t>& out, bool allow_special) const;
};

namespace {

constexpr uint64_t kNoMerge = ~0ull;

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

void Model::bpe(std::string_view piece, std::vector<int64_t>& out) const {
  if (piece.empty()) return;
  if (whole_piece || piece.size() == 1) {
    const int32_t id = vocab.get(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  thread_local std::vector<int32_t> sym;
  thread_local std::vector<uint64_t> rank;  // (rank << 32 | merged) of pair (i, i+1)
  sym.clear();
  for (unsigned char c : piece) {
    const int32_t id = byte_id[c];
    if (id >= 0) sym.push_back(id);
    else if (unk >= 0) sym.push_back(unk);
  }
  auto pair_rank = [&](int32_t a, int32_t b) {
    uint64_t v;
    return merges.get(pair_key(a, b), v) ? v : kNoMerge;
  };
  if (sym.size() <= 256) {
    // Short pieces: scan for the lowest-ranked pair, leftmost on ties.
    rank.resize(sym.size());
    for (size_t i = 0; i + 1 < sym.size(); ++i) rank[i] = pair_rank(sym[i], sym[i + 1]);
    while (sym.size() > 1) {
      size_t best = 0;
      uint64_t best_rank = kNoMerge;
      for (size_t i = 0; i + 1 < sym.size(); ++i)
        if ((rank[i] >> 32) < (best_rank >> 32)) {
          best_rank = rank[i];
          best = i;
        }
      if (best_rank == kNoMerge) break;
      sym[best] = static_cast<int32_t>(best_rank & 0xffffffffu);
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      rank.erase(rank.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      if (best + 1 < sym.size()) rank[best] = pair_rank(sym[best], sym[best + 1]);
      if (best > 0) rank[best - 1] = pair_rank(sym[best - 1], sym[best]);
    }
    out.insert(out.end(), sym.begin(), sym.end());
    return;
  }
  // Long pieces: a heap of (rank, position) over a linked list; stale entries are skipped.
  const size_t n = sym.size();
  std::vector<int32_t> next(n), prev(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    next[i] = static_cast<int32_t>(i + 1);
    prev[i] = static_cast<int32_t>(i) - 1;
  }
  using Entry = std::pair<uint64_t, uint64_t>;  // (rank << 32 | position, merged)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto push = [&](size_t i) {
    const int32_t j = next[i];
    if (j >= static_cast<int32_t>(n)) return;
    const uint64_t r = pair_rank(sym[i], sym[static_cast<size_t>(j)]);
    if (r != kNoMerge) heap.push({(r & ~0xffffffffull) | i, r & 0xffffffffu});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const auto [key, merged] = heap.top();
    heap.pop();
    const size_t i = key & 0xffffffffu;
    if (!alive[i] || next[i] >= static_cast<int32_t>(n)) continue;
    const size_t j = static_cast<size_t>(next[i]);
    const uint64_t r = pair_rank(sym[i], sym[j]);
    if (r == kNoMerge || (r >> 32) != (key >> 32) || (r & 0xffffffffu) != merged) continue;
    sym[i] = static_cast<int32_t>(merged);
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] < static_cast<int32_t>(n)) prev[static_cast<size_t>(next[j])] = static_cast<int32_t>(i);
    push(i);
    if (prev[i] >= 0) push(static_cast<size_t>(prev[i]));
  }
  for (size_t i = 0; i < n; i = static_cast<size_t>(next[i])) out.push_back(sym[i]);
}

// Pre-tokenizer regexes with a match boundary before " x" (x an ASCII letter) wherever a
// printable ASCII character precedes the space: no alternative matches a non-space followed by
// a space, a space only opens a match, nothing looks behind, and a match that ends at the
// printable character ends there whether the text goes on or not. The CutPoint unit tests
// compare cut and whole encodings on every one of them.
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

void Model::plan_cuts() {
  // Every step either cuts there itself (a known regex) or only splits pieces at digits or adds
  // a leading space, and a known regex comes after the last digit split. Normalizers leave
  // "printable ASCII, space, ASCII letter" as it is and never join across a space.
  bool boundary_after_local = true, any_boundary = false;
  for (const Step& step : steps) {
    if (step.kind == Step::PrefixSpace) continue;
    const std::string& pat = step.re->pattern();
    const bool known = pat == kLlama3Pattern || pat == kGpt2Pattern || pat == kQwen2Pattern;
    if (known && step.behavior == Behavior::Isolated && !step.invert) {
      any_boundary = true;
      boundary_after_local = true;
    } else if (pat == R"(\p{N})" && !step.invert &&
               (step.behavior == Behavior::Isolated || step.behavior == Behavior::Contiguous)) {
      boundary_after_local = false;
    } else {
      return;
    }
  }
  cuttable = any_boundary && boundary_after_local;
  plain_first.fill(0);
  longest_plain = 0;
  for (const AddedToken& a : added) {
    if (a.special || a.content.empty()) continue;
    plain_first[static_cast<unsigned char>(a.content[0])] = 1;
    longest_plain = std::max(longest_plain, a.content.size());
  }
}

// Normalize, pre-tokenize and merge one stretch of text without added tokens in it.
void Model::encode_plain(std::string_view text, std::vector<int64_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  if (!normalizers.empty()) {
    normalized = std::string(text);
    for (Norm n : normalizers) normalized = normalize(normalized, n);
    text = normalized;
  }
  if (steps.size() == 1 && steps[0].kind == Step::Split && steps[0].behavior == Behavior::Isolated &&
      !steps[0].invert) {
    steps[0].re->split(text, [&](size_t b, size_t e, bool) { bpe(text.substr(b, e - b), out); });
    return;
  }
  std::deque<std::string> owned;
  std::vector<std::string_view> pieces{text}, next;
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans, merged;
  for (const Step& step : steps) {
    next.clear();
    for (std::string_view p : pieces) {
      if (step.kind == Step::PrefixSpace) {
        if (!p.empty() && p[0] != ' ') {
          std::string& prefixed = owned.emplace_back(1, ' ');
          prefixed.append(p);
          p = prefixed;
        }
        next.push_back(p);
        continue;
      }
      spans.clear();
      step.re->split(p, [&](size_t b, size_t e, bool m) { spans.push_back({b, e, m != step.invert}); });
      merged.clear();
      switch (step.behavior) {
        case Behavior::Removed:
          for (const Span& s : spans)
            if (!s.match) merged.push_back(s);
          break;
        case Behavior::Isolated:
          merged = spans;
          break;
        case Behavior::MergedWithPrevious: {
          bool prev_match = false;
          for (const Span& s : spans) {
            if (s.match && !prev_match && !merged.empty()) merged.back().e = s.e;
            else merged.push_back(s);
            prev_match = s.match;
          }
          break;
        }
        case Behavior::MergedWithNext: {
          bool prev_match = false;
          for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->match && !prev_match && !merged.empty()) merged.back().b = it->b;
            else merged.push_back(*it);
            prev_match = it->match;
          }
          std::reverse(merged.begin(), merged.end());
          break;
        }
        case Behavior::Contiguous:  // neighbours of the same kind join (as HF does)
          for (const Span& s : spans) {
            if (!merged.empty() && merged.back().match == s.match) merged.back().e = s.e;
            else merged.push_back(s);
          }
          break;
      }
      for (const Span& s : merged)
        if (s.e > s.b) next.push_back(p.substr(s.b, s.e - s.b));
    }
    pieces.swap(next);
  }
  for (std::string_view p : pieces) bpe(p, out);
}

namespace {

// The character that ends at / starts at byte i (invalid UTF-8: none).
utf8proc_int32_t char_before(std::string_view t, size_t i) {
  size_t b = i;
  while (b > 0 && i - b < 4) {
    --b;
    if ((static_cast<unsigned char>(t[b]) & 0xC0) != 0x80) break;
  }
  utf8proc_int32_t cp = -1;
  if (b < i && utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(t.data() + b),
                                static_cast<utf8proc_ssize_t>(i - b), &cp) != static_cast<utf8proc_ssize_t>(i - b))
    cp = -1;
  return cp;
}

utf8proc_int32_t char_at(std::string_view t, size_t i) {
  utf8proc_int32_t cp = -1;
  if (i < t.size() && utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(t.data() + i),
                                       static_cast<utf8proc_ssize_t>(t.size() - i), &cp) <= 0)
    cp = -1;
  return cp;
}

size_t utf8_length(utf8proc_int32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

// Unicode White_Space, and letters/numbers: what HF's added-token options test.
bool is_space_cp(utf8proc_int32_t c) {
  if (c < 0) return false;
  if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85) return true;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

bool is_word_cp(utf8proc_int32_t c) {
  if (c < 0) return false;
  const auto cat = utf8proc_category(c);
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) || c == '_';
}

}  // namespace

void Model::encode(std::string_view text, std::vector<int64_t>& out, bool allow_special) const {
  if (added.empty() || (!allow_special && !any_plain_added)) {
    encode_plain(text, out);
    return;
  }
  size_t done = 0, i = 0;
  while (i < text.size()) {
    if (!added_first[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const AddedToken* hit = nullptr;  // the longest added token at i (the list is longest first)
    for (const AddedToken& a : added) {
      if ((a.special && !allow_special) || a.content.empty()) continue;
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      hit = &a;
      break;
    }
    if (!hit) {
      ++i;
      continue;
    }
    const size_t end = i + hit->content.size();
    // single_word: a match inside a word is dropped, and the search goes on after it (as HF).
    if (hit->single_word && (is_word_cp(char_before(text, i)) || is_word_cp(char_at(text, end)))) {
      i = end;
      continue;
    }
    size_t b = i, e = end;
    if (hit->lstrip)
      for (auto c = char_before(text, b); b > done && is_space_cp(c); c = char_before(text, b)) b -= utf8_length(c);
    if (hit->rstrip)
      for (auto c = char_at(text, e); e < text.size() && is_space_cp(c); c = char_at(text, e)) e += utf8_length(c);
    encode_plain(text.substr(done, b - done), out);
    out.push_back(hit->id);
    done = i = e;
  }
  encode_plain(text.substr(done), out);
}

}  // namespace bpe_detail

using bpe_detail::Model;

namespace {

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const unsigned char c = static_cast<unsigned char>(in[i + k]);
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad) return false;
        v[k] = base64_value(c);
        if (v[k] < 0) return false;
      }
    }
    const uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<char>(n >> 16));
    if (pad < 2) out.push_back(static_cast<char>((n >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(n & 0xff));
  }
  return true;
}

// Every way to cut a token into two tokens is a merge ranked by the token's own rank.
void tiktoken_merges(Model& m) {
  m.merges.reserve(m.bytes.size() * 4);
  for (size_t id = 0; id < m.bytes.size(); ++id) {
    const std::string& t = m.bytes[id];
    if (m.special[id] || t.size() < 2) continue;
    for (size_t k = 1; k < t.size(); ++k) {
      const int32_t a = m.vocab.get(std::string_view(t).substr(0, k));
      if (a < 0) continue;
      const int32_t b = m.vocab.get(std::string_view(t).substr(k));
      if (b < 0) continue;
      m.merges.put(bpe_detail::pair_key(a, b), (static_cast<uint64_t>(id) << 32) | id);
    }
  }
}

std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> s = {"<|begin_of_text|>", "<|end_of_text|>",
                                "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                                "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                                "<|start_header_id|>", "<|end_header_id|>",
                                "<|reserved_special_token_4|>", "<|eot_id|>"};
  for (int i = 5; s.size() < 256; ++i) s.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
  return s;
}

}  // namespace

// How far past the tokens a file lists an id may go (ids index dense tables of ~50 bytes an id).
constexpr int64_t kMaxIdGap = 65536;

BpeTokenizer::BpeTokenizer(std::unique_ptr<Model> m) : m_(std::move(m)) { m_->plan_cuts(); }
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tiktoken(const std::string& path) {
  const std::string text = read_file(path, "tiktoken rank file");
  auto m = std::make_unique<Model>();
  m->hash_file(text);
  std::string tok;
  size_t pos = 0, line_no = 0;
  std::vector<char> seen;
  int64_t lines = 0;  // lines that are not empty: the most ranks the file can hold
  for (size_t p = 0; p < text.size();) {
    size_t end = text.find('\n', p);
    if (end == std::string::npos) end = text.size();
    lines += end > p && !(end == p + 1 && text[p] == '\r');
    p = end + 1;
  }
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || !base64_decode(line.substr(0, sp), tok))
      throw Error(where + ": not a tiktoken rank line (\"base64 rank\")",
                  "use an unmodified tiktoken file such as Llama 3's tokenizer.model");
    const std::string_view num = line.substr(sp + 1);
    int64_t rank = 0;
    if (num.empty() || num.size() > 9 || num.find_first_not_of("0123456789") != std::string_view::npos)
      throw Error(where + ": the rank \"" + std::string(num) + "\" is not a number",
                  "use an unmodified tiktoken file such as Llama 3's tokenizer.model");
    for (char c : num) rank = rank * 10 + (c - '0');
    // Ranks run 0..lines-1. One far past that is a typo that would size dense tables by it;
    // a small gap is reported below as the rank that is missing.
    if (rank >= lines + kMaxIdGap)
      throw Error(where + ": rank " + std::to_string(rank) + " is beyond the " + std::to_string(lines) +
                      " ranks the file lists (ranks must run 0.." + std::to_string(lines - 1) + ")",
                  "use an unmodified tiktoken file");
    if (static_cast<size_t>(rank) >= seen.size()) seen.resize(static_cast<size_t>(rank) + 1, 0);
    if (seen[static_cast<size_t>(rank)])
      throw Error(where + ": rank " + std::to_string(rank) + " appears twice", "use an unmodified tiktoken file");
    seen[static_cast<size_t>(rank)] = 1;
    m->set_size(static_cast<size_t>(rank) + 1);
    m->bytes[static_cast<size_t>(rank)] = tok;
  }
  if (m->bytes.empty()) throw Error(path + " holds no tokens", "use a tiktoken rank file such as Llama 3's tokenizer.model");
  for (size_t r = 0; r < seen.size(); ++r)
    if (!seen[r])
      throw Error(path + ": rank " + std::to_string(r) + " is missing (ranks must run 0.." +
                      std::to_string(seen.size() - 1) + ")",
                  "use an unmodified tiktoken file");
  const size_t base = m->bytes.size();
  const auto specials = llama3_special_tokens();
  m->set_size(base + specials.size());
  for (size_t i = 0; i < specials.size(); ++i) {
    const auto id = static_cast<int32_t>(base + i);
    m->bytes[static_cast<size_t>(id)] = specials[i];
    m->special[static_cast<size_t>(id)] = 1;
    m->added.push_back({specials[i], id, true, false, false, false});
  }
  m->bos = static_cast<int64_t>(base);
  m->eos = static_cast<int64_t>(base + 1);
  m->whole_piece = true;
  m->finish();
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    m->byte_id[static_cast<size_t>(b)] = m->vocab.get(std::string_view(&c, 1));
    if (m->byte_id[static_cast<size_t>(b)] < 0)
      throw Error(path + " has no token for the byte 0x" + std::to_string(b) + " (decimal)",
                  "a byte-level rank file holds all 256 single bytes");
  }
  tiktoken_merges(*m);
  m->steps.push_back({bpe_detail::Step::Split, std::make_shared<bpe_detail::Regex>(kLlama3Pattern, path),
                      bpe_detail::Behavior::Isolated, false});
  m->description = "tiktoken BPE from " + path + " (" + std::to_string(base) + " ranks + 256 special tokens)";
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(m)));
}

namespace {

using json = nlohmann::json;

json parse_json(const std::string& path, const std::string& what, Model* hash_into = nullptr) {
  const std::string text = read_file(path, what);
  if (hash_into) hash_into->hash_file(text);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(path + " is not valid JSON (" + std::string(e.what()) + ")",
                "re-download or re-create " + what);
  }
}

// j[key] as T, `fallback` when absent or null; a value of another type is a titan::Error.
template <class T>
T get_or(const json& j, const char* key, T fallback, const std::string& path) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw Error(path + ": \"" + key + "\" has the wrong type (" + j[key].dump() + ")", "fix the tokenizer file");
  }
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

void add_normalizer(const json& j, std::vector<bpe_detail::Norm>& out, const std::string& path) {
  using bpe_detail::Norm;
  if (j.is_null()) return;
  const std::string t = type_of(j);
  if (t == "NFC") out.push_back(Norm::NFC);
  else if (t == "NFD") out.push_back(Norm::NFD);
  else if (t == "NFKC") out.push_back(Norm::NFKC);
  else if (t == "NFKD") out.push_back(Norm::NFKD);
  else if (t == "Lowercase") out.push_back(Norm::Lowercase);
  else if (t == "Sequence" && j.contains("normalizers") && j["normalizers"].is_array())
    for (const auto& n : j["normalizers"]) add_normalizer(n, out, path);
  else
    throw Error(path + ": the normalizer \"" + t + "\" is not supported yet",
                "titan.cpp reads the normalizers NFC, NFD, NFKC, NFKD, Lowercase and Sequence");
}

bpe_detail::Behavior parse_behavior(const std::string& b, const std::string& path) {
  using bpe_detail::Behavior;
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  throw Error(path + ": unknown Split behavior \"" + b + "\"",
              "use Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::strchr("\\^$.|?*+()[]{}-", c)) out += '\\';
    out += c;
  }
  return out;
}

// Returns whether a ByteLevel step was seen.
bool add_pretokenizer(const json& j, std::vector<bpe_detail::Step>& out, const std::string& path) {
  using bpe_detail::Behavior;
  using bpe_detail::Regex;
  using bpe_detail::Step;
  if (j.is_null()) return false;
  const std::string t = type_of(j);
  if (t == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array()) {
    bool byte_level = false;
    for (const auto& p : j["pretokenizers"]) byte_level |= add_pretokenizer(p, out, path);
    return byte_level;
  }
  if (t == "ByteLevel") {
    if (get_or(j, "add_prefix_space", false, path)) out.push_back({Step::PrefixSpace, nullptr, Behavior::Isolated, false});
    if (get_or(j, "use_regex", true, path))
      out.push_back({Step::Split, std::make_shared<Regex>(kGpt2Pattern, path), Behavior::Isolated, false});
    return true;
  }
  if (t == "Split") {
    const json pat = get_or(j, "pattern", json::object(), path);
    std::string re;
    if (pat.contains("Regex") && pat["Regex"].is_string()) re = pat["Regex"].get<std::string>();
    else if (pat.contains("String") && pat["String"].is_string()) re = regex_escape(pat["String"].get<std::string>());
    else throw Error(path + ": a Split pre-tokenizer without a Regex or String pattern", "fix the tokenizer file");
    out.push_back({Step::Split, std::make_shared<Regex>(re, path),
                   parse_behavior(get_or(j, "behavior", std::string("Isolated"), path), path), get_or(j, "invert", false, path)});
    return false;
  }
  if (t == "Digits") {
    out.push_back({Step::Split, std::make_shared<Regex>(R"(\p{N})", path),
                   get_or(j, "individual_digits", false, path) ? Behavior::Isolated : Behavior::Contiguous, false});
    return false;
  }
  throw Error(path + ": the pre-tokenizer \"" + t + "\" is not supported yet",
              "titan.cpp reads byte-level BPE tokenizers: ByteLevel, Split, Digits and Sequence pre-tokenizers");
}

std::optional<std::string> config_token(const json& cfg, const char* key, const std::string& path) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(path + ": " + key + " is neither a string nor an object with \"content\"",
              "write e.g. \"" + std::string(key) + "\": \"<|begin_of_text|>\"");
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_hf(const std::string& path, const std::string& config_path) {
  auto m = std::make_unique<Model>();
  const json j = parse_json(path, "tokenizer.json", m.get());
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw Error(path + " has no \"model\" object", "use a tokenizer.json written by Hugging Face tokenizers");
  const json& model = j["model"];
  const std::string mtype = get_or(model, "type", std::string("BPE"), path);
  if (mtype != "BPE")
    throw Error(path + ": the model type \"" + mtype + "\" is not supported yet",
                "titan.cpp reads byte-level BPE tokenizers (model type \"BPE\")");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
      throw Error(path + ": model." + k + " is not supported yet", "titan.cpp reads byte-level BPE tokenizers");
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
    throw Error(path + ": BPE dropout is not supported", "set model.dropout to null for pre-training");
  if (get_or(model, "byte_fallback", false, path))
    throw Error(path + ": model.byte_fallback = true is not supported yet",
                "titan.cpp reads byte-level BPE tokenizers (ByteLevel pre-tokenizer, no byte fallback)");
  m->whole_piece = get_or(model, "ignore_merges", false, path);

  add_normalizer(get_or(j, "normalizer", json(), path), m->normalizers, path);
  const bool byte_level_input = add_pretokenizer(get_or(j, "pre_tokenizer", json(), path), m->steps, path);
  bool byte_level = byte_level_input;
  byte_level |= type_of(get_or(j, "decoder", json(), path)) == "ByteLevel";
  if (!byte_level)
    throw Error(path + ": not a byte-level BPE (no ByteLevel pre-tokenizer or decoder)",
                "titan.cpp reads byte-level BPE tokenizers such as Llama 3's; others are not supported yet");

  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw Error(path + ": model.vocab is missing", "use a tokenizer.json written by Hugging Face tokenizers");
  std::unordered_map<std::string, int32_t> by_text;
  std::unordered_map<int64_t, std::string> owner;  // id -> the token text that holds it
  // Ids index dense tables: a gap far past the tokens listed is a typo, not a vocabulary.
  const int64_t listed = static_cast<int64_t>(model["vocab"].size()) +
                         (j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0);
  const int64_t max_id = listed + kMaxIdGap;
  std::string bytes;
  for (const auto& [text, idj] : model["vocab"].items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > max_id)
      throw Error(path + ": model.vocab[\"" + text + "\"] = " + idj.dump() + " is not a valid id (ids run from 0, at most " +
                      std::to_string(kMaxIdGap) + " past the " + std::to_string(listed) + " tokens listed)",
                  "fix the tokenizer file");
    const auto id = idj.get<int32_t>();
    if (auto [it, fresh] = owner.emplace(id, text); !fresh)
      throw Error(path + ": model.vocab gives the id " + std::to_string(id) + " to both \"" + it->second + "\" and \"" +
                      text + "\" (decoding that id could not give back both)",
                  "fix the tokenizer file: every token needs its own id");
    m->set_size(static_cast<size_t>(id) + 1);
    const bool spelled = bpe_detail::byte_level_decode(text, bytes);
    m->bytes[static_cast<size_t>(id)] = spelled ? bytes : text;  // decoded as HF does: raw text if not byte-level
    if (!spelled && byte_level_input) {
      m->unreachable.resize(m->bytes.size(), 0);
      m->unreachable[static_cast<size_t>(id)] = 1;
    }
    by_text.emplace(text, id);
  }
  std::vector<std::pair<std::string, std::string>> merge_list;
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const auto& mj : model["merges"]) {
      if (mj.is_string()) {
        const std::string s = mj.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) throw Error(path + ": the merge \"" + s + "\" is not two tokens", "fix the tokenizer file");
        merge_list.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
        merge_list.emplace_back(mj[0].get<std::string>(), mj[1].get<std::string>());
      } else {
        throw Error(path + ": a merge is neither \"a b\" nor [\"a\", \"b\"]", "fix the tokenizer file");
      }
    }
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = by_text.find(model["unk_token"].get<std::string>());
    if (it != by_text.end()) m->unk = it->second;
  }
  // Added tokens (the file's, then tokenizer_config.json's) are matched before the BPE runs.
  auto add_token = [&](const std::string& content, int64_t want_id, bool special, const json& opts,
                       const std::string& where) -> int32_t {
    for (auto& a : m->added)
      if (a.content == content) {
        // Listed again: the same id. tokenizer_config.json's entry replaces the options, as
        // torchtitan's add_special_tokens does (a plain string: special, no stripping).
        if (where == config_path) {
          a.special = special;
          a.lstrip = get_or(opts, "lstrip", false, where);
          a.rstrip = get_or(opts, "rstrip", false, where);
          a.single_word = get_or(opts, "single_word", false, where);
        } else {
          a.special |= special;
        }
        m->special[static_cast<size_t>(a.id)] = a.special;
        return a.id;
      }
    if (want_id > max_id)
      throw Error(where + ": the added token \"" + content + "\" has id " + std::to_string(want_id) +
                      ", out of range (ids run from 0, at most " + std::to_string(kMaxIdGap) + " past the " +
                      std::to_string(listed) + " tokens listed)",
                  "fix the file (ids run from 0 to the vocabulary size)");
    int32_t id;
    if (want_id >= 0) {
      id = static_cast<int32_t>(want_id);
      // An added token may repeat a vocabulary entry (same text, same id), never take another's id.
      auto [it, fresh] = owner.emplace(id, content);
      if (!fresh && it->second != content && m->bytes[static_cast<size_t>(id)] != content)
        throw Error(where + ": the added token \"" + content + "\" has the id " + std::to_string(id) + " of \"" +
                        it->second + "\" (decoding that id could not give back both)",
                    "fix the file: every token needs its own id");
    } else if (auto it = by_text.find(content); it != by_text.end()) id = it->second;
    else id = static_cast<int32_t>(m->bytes.size());
    m->set_size(static_cast<size_t>(id) + 1);
    m->bytes[static_cast<size_t>(id)] = content;
    m->special[static_cast<size_t>(id)] = special;
    m->added.push_back({content, id, special, get_or(opts, "lstrip", false, where), get_or(opts, "rstrip", false, where),
                        get_or(opts, "single_word", false, where)});
    return id;
  };
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id") ||
          !a["id"].is_number_integer())
        throw Error(path + ": an entry of added_tokens lacks \"id\" or \"content\"", "fix the tokenizer file");
      if (a["id"].get<int64_t>() < 0)
        throw Error(path + ": the added token \"" + a["content"].get<std::string>() + "\" has a negative id", "fix the tokenizer file");
      add_token(a["content"].get<std::string>(), a["id"].get<int64_t>(), get_or(a, "special", false, path), a, path);
    }
  }
  if (!config_path.empty()) {
    const json cfg = parse_json(config_path, "tokenizer_config.json", m.get());
    if (!cfg.is_object()) throw Error(config_path + " is not a JSON object", "fix or remove tokenizer_config.json");
    const auto bos = config_token(cfg, "bos_token", config_path);
    const auto eos = config_token(cfg, "eos_token", config_path);
    for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}) {
      const auto t = config_token(cfg, key, config_path);
      if (!t) continue;
      const json opts = cfg[key].is_object() ? cfg[key] : json::object();
      add_token(*t, -1, get_or(opts, "special", true, config_path), opts, config_path);
    }
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
      for (const auto& [ids, a] : cfg["added_tokens_decoder"].items()) {
        if (!a.is_object() || !a.contains("content") || !a["content"].is_string())
          throw Error(config_path + ": added_tokens_decoder[\"" + ids + "\"] lacks \"content\"", "fix tokenizer_config.json");
        // A token the vocabulary lacks takes the id it is listed under (as HF's added_tokens_decoder).
        int64_t id = -1;
        if (!ids.empty() && ids.size() < 10 && ids.find_first_not_of("0123456789") == std::string::npos)
          id = std::stoll(ids);
        if (by_text.count(a["content"].get<std::string>())) id = -1;
        add_token(a["content"].get<std::string>(), id, get_or(a, "special", true, config_path), a, config_path);
      }
    }
    for (const auto& a : m->added) {
      if (bos && a.content == *bos) m->bos = a.id;
      if (eos && a.content == *eos) m->eos = a.id;
    }
  }
  m->finish();
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    m->byte_id[static_cast<size_t>(b)] = m->vocab.get(std::string_view(&c, 1));
  }
  m->merges.reserve(merge_list.size());
  for (size_t r = 0; r < merge_list.size(); ++r) {
    const auto& [a, b] = merge_list[r];
    auto ia = by_text.find(a), ib = by_text.find(b), ic = by_text.find(a + b);
    if (ia == by_text.end() || ib == by_text.end() || ic == by_text.end())
      throw Error(path + ": merge " + std::to_string(r) + " (\"" + a + "\" \"" + b +
                      "\") uses a token that is not in model.vocab",
                  "fix the tokenizer file");
    m->merges.put(bpe_detail::pair_key(ia->second, ib->second), (static_cast<uint64_t>(r) << 32) |
                                                                    static_cast<uint32_t>(ic->second));
  }
  m->description = "byte-level BPE from " + path + " (vocab " + std::to_string(m->bytes.size()) + ")";
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(m)));
}

void BpeTokenizer::encode_append(std::string_view text, std::vector<int64_t>& out, bool allow_special) const {
  m_->encode(text, out, allow_special);
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string out;
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(m_->bytes.size()))
      throw Error("cannot decode id " + std::to_string(id) + ": the tokenizer has ids 0.." +
                      std::to_string(m_->bytes.size() - 1),
                  "decode ids made by the same tokenizer");
    if (skip_special && m_->special[static_cast<size_t>(id)]) continue;
    out += m_->bytes[static_cast<size_t>(id)];
  }
  return out;
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(m_->bytes.size()); }
int64_t BpeTokenizer::bos_id() const { return m_->bos; }
int64_t BpeTokenizer::eos_id() const { return m_->eos; }
std::string BpeTokenizer::describe() const { return m_->description; }

std::string BpeTokenizer::fingerprint() const {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "bpe-%zu-%016llx", m_->bytes.size(), static_cast<unsigned long long>(m_->file_hash));
  return buf;
}

size_t BpeTokenizer::cut_point(std::string_view t, size_t from) const {
  constexpr size_t npos = std::string_view::npos;
  if (!m_->cuttable) return npos;
  for (size_t p = std::max<size_t>(from, 1); p + 1 < t.size(); ++p) {
    const void* space = std::memchr(t.data() + p, ' ', t.size() - 1 - p);
    if (!space) return npos;
    p = static_cast<size_t>(static_cast<const char*>(space) - t.data());
    const auto before = static_cast<unsigned char>(t[p - 1]);
    const auto after = static_cast<unsigned char>(t[p + 1] | 0x20);
    if (before < 0x21 || before > 0x7e || after < 'a' || after > 'z') continue;
    if (m_->longest_plain > 0) {  // an added token matched in text (not special) must not span the cut
      const size_t lo = p > m_->longest_plain ? p - m_->longest_plain : 0;
      const size_t hi = std::min(t.size(), p + m_->longest_plain + 1);
      bool near = false;
      for (size_t i = lo; i < hi && !near; ++i) near = m_->plain_first[static_cast<unsigned char>(t[i])];
      if (near) continue;
    }
    return p;
  }
  return npos;
}

int64_t BpeTokenizer::token_id(std::string_view text) const {
  for (const auto& a : m_->added)
    if (a.content == text) return a.id;
  return m_->vocab.get(text);
}

void split_llama3(std::string_view text, const std::function<void(std::string_view)>& f) {
  static const bpe_detail::Regex re(kLlama3Pattern, "Llama 3's pre-tokenization regex");
  re.split(text, [&](size_t b, size_t e, bool) { f(text.substr(b, e - b)); });
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    utf8proc_uint8_t buf[4];
    const auto w = utf8proc_encode_char(static_cast<utf8proc_int32_t>(bpe_detail::alphabet().to_cp[b]), buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(w));
  }
  return out;
}

}  // namespace titan::components
