#include "titan/components/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/components/tokenizer/bpe.h"

namespace titan::components {

struct BpeTrainer::Impl {
  BpeTrainOptions opt;
  std::unordered_map<std::string, int64_t> counts;
};

BpeTrainer::BpeTrainer(BpeTrainOptions opt) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(opt);
  const int64_t min_vocab = 256 + static_cast<int64_t>(impl_->opt.special_tokens.size());
  if (impl_->opt.vocab_size < min_vocab)
    throw Error("--vocab-size " + std::to_string(impl_->opt.vocab_size) + " is too small",
                "a byte-level BPE needs at least " + std::to_string(min_vocab) + " ids (256 bytes + special tokens)");
  if (impl_->opt.min_frequency < 1) throw Error("--min-frequency must be >= 1");
}

BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add(std::string_view document) {
  split_llama3(document, [&](std::string_view piece) { ++impl_->counts[std::string(piece)]; });
}

int64_t BpeTrainer::train_and_write(const std::string& dir, const std::function<void(uint64_t, uint64_t)>& progress) {
  const BpeTrainOptions& opt = impl_->opt;
  // Words in a fixed order, so the result does not depend on hash-table order.
  std::vector<std::pair<std::string, int64_t>> sorted(impl_->counts.begin(), impl_->counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> freq(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (unsigned char c : sorted[w].first) words[w].push_back(c);
    freq[w] = sorted[w].second;
  }
  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b) tokens[static_cast<size_t>(b)] = std::string(1, static_cast<char>(b));

  using Pair = std::pair<int32_t, int32_t>;
  std::map<Pair, int64_t> pair_count;
  std::map<Pair, std::set<size_t>> where;
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const Pair p{words[w][i], words[w][i + 1]};
      pair_count[p] += freq[w];
      where[p].insert(w);
    }
  // Most frequent first; ties go to the pair whose merged bytes sort first, then the lower ids.
  struct Entry {
    int64_t count;
    std::string merged;
    Pair pair;
    bool operator<(const Entry& o) const {
      if (count != o.count) return count < o.count;
      if (merged != o.merged) return merged > o.merged;
      return pair > o.pair;
    }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [p, c] : pair_count) heap.push({c, tokens[static_cast<size_t>(p.first)] + tokens[static_cast<size_t>(p.second)], p});
  const int64_t merges_wanted = opt.vocab_size - 256 - static_cast<int64_t>(opt.special_tokens.size());
  std::vector<Pair> merges;
  while (static_cast<int64_t>(merges.size()) < merges_wanted && !heap.empty()) {
    Entry e = heap.top();
    heap.pop();
    auto it = pair_count.find(e.pair);
    if (it == pair_count.end() || it->second != e.count) continue;  // stale
    if (e.count < opt.min_frequency) break;
    const auto id = static_cast<int32_t>(tokens.size());
    tokens.push_back(e.merged);
    merges.push_back(e.pair);
    if (progress) progress(merges.size(), static_cast<uint64_t>(merges_wanted));
    std::set<Pair> touched;
    const std::set<size_t> affected = where[e.pair];
    for (size_t w : affected) {
      auto& s = words[w];
      const int64_t f = freq[w];
      auto dec = [&](const Pair& p) {
        pair_count[p] -= f;
        touched.insert(p);
      };
      for (size_t i = 0; i + 1 < s.size();) {
        if (s[i] != e.pair.first || s[i + 1] != e.pair.second) {
          ++i;
          continue;
        }
        if (i > 0) dec({s[i - 1], s[i]});
        if (i + 2 < s.size()) dec({s[i + 1], s[i + 2]});
        dec(e.pair);
        s[i] = id;
        s.erase(s.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        if (i > 0) {
          pair_count[{s[i - 1], s[i]}] += f;
          touched.insert({s[i - 1], s[i]});
        }
        if (i + 1 < s.size()) {
          pair_count[{s[i], s[i + 1]}] += f;
          touched.insert({s[i], s[i + 1]});
        }
        ++i;
      }
      for (size_t i = 0; i + 1 < s.size(); ++i) where[{s[i], s[i + 1]}].insert(w);
    }
    where.erase(e.pair);
    pair_count.erase(e.pair);
    for (const Pair& p : touched) {
      auto pc = pair_count.find(p);
      if (pc == pair_count.end()) continue;
      if (pc->second <= 0) {
        pair_count.erase(pc);
        continue;
      }
      heap.push({pc->second, tokens[static_cast<size_t>(p.first)] + tokens[static_cast<size_t>(p.second)], p});
    }
  }

  using ojson = nlohmann::ordered_json;
  ojson vocab = ojson::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[byte_level_encode(tokens[id])] = id;
  ojson merge_list = ojson::array();
  for (const Pair& p : merges)
    merge_list.push_back({byte_level_encode(tokens[static_cast<size_t>(p.first)]),
                          byte_level_encode(tokens[static_cast<size_t>(p.second)])});
  ojson added = ojson::array();
  int64_t next_id = static_cast<int64_t>(tokens.size());
  for (const auto& s : opt.special_tokens)
    added.push_back({{"id", next_id++}, {"content", s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  ojson tj = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", merge_list}}}};
  ojson cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}};
  if (!opt.special_tokens.empty()) cfg["bos_token"] = opt.special_tokens[0];
  if (opt.special_tokens.size() > 1) cfg["eos_token"] = opt.special_tokens[1];
  cfg["add_bos_token"] = false;
  cfg["add_eos_token"] = false;

  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create the folder " + dir + ": " + ec.message(), "choose a writable --output folder");
  write_file_atomically(dir + "/tokenizer.json", tj.dump(1) + "\n");
  write_file_atomically(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
  return next_id;
}

}  // namespace titan::components
