#include "titan/components/tokenizer/hf_tokenizer_export.h"

#include <algorithm>
#include <filesystem>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/components/tokenizer/bpe.h"
#include "titan/components/tokenizer/tokenizer.h"

namespace titan::components {

namespace {

using json = nlohmann::ordered_json;

json special_entry(const std::string& content, int64_t id) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

// BOS in front of one text (and of each of a pair), as training puts it before every document.
json bos_template(const std::string& bos, int64_t bos_id) {
  auto special = [&](int type) { return json{{"SpecialToken", {{"id", bos}, {"type_id", type}}}}; };
  auto sequence = [](const char* id, int type) { return json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  return {{"type", "TemplateProcessing"},
          {"single", json::array({special(0), sequence("A", 0)})},
          {"pair", json::array({special(0), sequence("A", 0), special(1), sequence("B", 1)})},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", json::array({bos_id})}, {"tokens", json::array({bos})}}}}}};
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json bpe_model(json vocab, json merges, bool ignore_merges) {
  return {{"type", "BPE"},          {"dropout", nullptr},          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
          {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

json parse_file(const std::string& path, const std::string& what) {
  try {
    return json::parse(read_file(path, what));
  } catch (const json::exception& e) {
    throw Error(path + " is not valid JSON (" + e.what() + ")", "export with a readable tokenizer");
  }
}

// A tiktoken rank file as the byte-level BPE that encodes alike: the ranks as the vocabulary,
// ignore_merges (a piece that is a token is that token, as tiktoken does), and for each token
// every split into two tokens as a merge, ordered by the token's rank: the lowest-ranked merge
// applies first, which is tiktoken's rule.
json tiktoken_as_hf(const Tokenizer& tok) {
  const int64_t n = tok.vocab_size() - 256;
  std::vector<std::string> bytes(static_cast<size_t>(n));
  std::unordered_map<std::string_view, int64_t> rank;
  rank.reserve(static_cast<size_t>(n));
  for (int64_t id = 0; id < n; ++id) bytes[static_cast<size_t>(id)] = tok.decode({id});
  for (int64_t id = 0; id < n; ++id) rank.emplace(bytes[static_cast<size_t>(id)], id);
  json vocab = json::object();
  for (int64_t id = 0; id < n; ++id) vocab[byte_level_encode(bytes[static_cast<size_t>(id)])] = id;
  std::vector<std::tuple<int64_t, int64_t, int64_t>> merges;  // (merged, left, right)
  for (int64_t id = 0; id < n; ++id) {
    const std::string_view b = bytes[static_cast<size_t>(id)];
    for (size_t k = 1; k < b.size(); ++k) {
      auto l = rank.find(b.substr(0, k)), r = rank.find(b.substr(k));
      if (l != rank.end() && r != rank.end()) merges.emplace_back(id, l->second, r->second);
    }
  }
  std::sort(merges.begin(), merges.end());
  json merge_list = json::array();
  for (const auto& [merged, l, r] : merges)
    merge_list.push_back(json::array({byte_level_encode(bytes[static_cast<size_t>(l)]),
                                      byte_level_encode(bytes[static_cast<size_t>(r)])}));
  json added = json::array();
  for (int64_t id = n; id < tok.vocab_size(); ++id) added.push_back(special_entry(tok.decode({id}), id));
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", std::move(added)},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Split"},
                                            {"pattern", {{"Regex", kLlama3Pattern}}},
                                            {"behavior", "Isolated"},
                                            {"invert", false}},
                                           byte_level(false)})}}},
          {"post_processor", nullptr},
          {"decoder", byte_level(true)},
          {"model", bpe_model(std::move(vocab), std::move(merge_list), true)}};
}

// The built-in byte tokenizer: each byte its own id, BOS 256, EOS 257.
json bytes_as_hf(const Tokenizer& tok) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_encode(std::string(1, static_cast<char>(b)))] = b;
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", json::array({special_entry(tok.decode({tok.bos_id()}), tok.bos_id()),
                                        special_entry(tok.decode({tok.eos_id()}), tok.eos_id())})},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level(false)},
          {"post_processor", nullptr},
          {"decoder", byte_level(true)},
          {"model", bpe_model(std::move(vocab), json::array(), false)}};
}

}  // namespace

HfTokenizerFiles write_hf_tokenizer(const std::string& path, const std::string& out_dir, int64_t max_ids) {
  const TokenizerFiles files = find_tokenizer_files(path, "the tokenizer");
  const std::unique_ptr<Tokenizer> tok = build_tokenizer(path, "the tokenizer");
  if (tok->vocab_size() > max_ids)
    throw Error("the tokenizer " + path + " has " + std::to_string(tok->vocab_size()) +
                    " ids but the model has a vocabulary of " + std::to_string(max_ids),
                "give the tokenizer the model was trained with (--tokenizer)");
  HfTokenizerFiles result;
  result.bos_id = tok->bos_id();
  result.eos_id = tok->eos_id();
  const std::string bos = result.bos_id >= 0 ? tok->decode({result.bos_id}) : "";
  const std::string eos = result.eos_id >= 0 ? tok->decode({result.eos_id}) : "";

  json tokenizer = files.builtin        ? bytes_as_hf(*tok)
                   : !files.json.empty() ? parse_file(files.json, "tokenizer.json")
                                         : tiktoken_as_hf(*tok);
  if (result.bos_id >= 0) {
    json& post = tokenizer["post_processor"];
    if (post.is_null()) post = bos_template(bos, result.bos_id);
    else if (post.dump().find(json(bos).dump()) == std::string::npos)  // it does not add BOS yet
      post = {{"type", "Sequence"}, {"processors", json::array({post, bos_template(bos, result.bos_id)})}};
  }
  json config = files.config.empty() ? json::object() : parse_file(files.config, "tokenizer_config.json");
  if (!config.is_object()) throw Error(files.config + " is not a JSON object", "export with a readable tokenizer");
  if (result.bos_id >= 0 && !config.contains("bos_token")) config["bos_token"] = bos;
  if (result.eos_id >= 0 && !config.contains("eos_token")) config["eos_token"] = eos;
  if (!config.contains("tokenizer_class")) config["tokenizer_class"] = "PreTrainedTokenizerFast";
  if (!config.contains("clean_up_tokenization_spaces")) config["clean_up_tokenization_spaces"] = false;
  json generation = json::object();
  if (result.bos_id >= 0) generation["bos_token_id"] = result.bos_id;
  if (result.eos_id >= 0) generation["eos_token_id"] = result.eos_id;

  const std::filesystem::path out(out_dir);
  write_file_atomically((out / "tokenizer.json").string(), tokenizer.dump(1) + "\n");
  write_file_atomically((out / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_file_atomically((out / "generation_config.json").string(), generation.dump(2) + "\n");
  result.written = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
  return result;
}

}  // namespace titan::components
