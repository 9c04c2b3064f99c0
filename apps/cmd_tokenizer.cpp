// `titan tokenizer encode|decode|train|info`.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/common/progress.h"
#include "titan/components/tokenizer/bpe_trainer.h"
#include "titan/components/data/documents.h"
#include "titan/components/tokenizer/tokenizer.h"

namespace titan::apps {

void check_help(const std::vector<std::string>& args, const std::string& usage) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") throw UsageRequested(usage);
}

Options::Options(const std::vector<std::string>& args, const std::vector<std::string>& flags,
                 const std::vector<std::string>& valued, const std::string& usage)
    : usage_(usage) {
  check_help(args, usage);
  auto known = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (known(flags, name) && !inline_value) {
      flags_.push_back(name);
    } else if (known(valued, name)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) throw Error("--" + name + " needs a value", usage_);
        value = args[++i];
      }
      values_.emplace_back(name, value);
    } else {
      throw Error("unknown option " + a, usage_);
    }
  }
}

bool Options::flag(const std::string& name) const {
  return std::find(flags_.begin(), flags_.end(), name) != flags_.end();
}

std::string Options::get(const std::string& name, const std::string& fallback) const {
  for (auto it = values_.rbegin(); it != values_.rend(); ++it)
    if (it->first == name) return it->second;
  return fallback;
}

std::vector<std::string> Options::get_all(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& [key, value] : values_)
    if (key == name) out.push_back(value);
  return out;
}

std::string Options::need(const std::string& name) const {
  const std::string v = get(name, "\x01");
  if (v == "\x01") throw Error("--" + name + " is required", usage_);
  return v;
}

int64_t Options::get_int(const std::string& name, int64_t fallback) const {
  const std::string v = get(name);
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    const int64_t n = std::stoll(v, &used);
    if (used == v.size()) return n;
  } catch (const std::out_of_range&) {
    throw Error("--" + name + " = " + v + " is out of range (at most 9223372036854775807)", usage_);
  } catch (const std::exception&) {
  }
  throw Error("--" + name + " = \"" + v + "\" is not an integer", usage_);
}

namespace {

const char* kTokenizerUsage =
    "usage: titan tokenizer encode --tokenizer PATH [--bos] [--eos] [--allow-special] [--jsonl] < text\n"
    "       titan tokenizer decode --tokenizer PATH [--skip-special] [--jsonl] < ids\n"
    "       titan tokenizer train --vocab-size N --output DIR [--min-frequency K] [--text-field F] [--force]\n"
    "                             (--synthetic DOCS | FILE/FOLDER/GLOB ...)\n"
    "       titan tokenizer info --tokenizer PATH\n"
    "PATH: a folder with tokenizer.json (+ tokenizer_config.json) or tokenizer.model, one of those\n"
    "files, or builtin:bytes. See docs/tokenizers.md.";

std::string read_stdin() {
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) s.append(buf, n);
  return s;
}

void write_ids(const std::vector<int64_t>& ids, std::string& out) {
  char num[24];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    const int n = std::snprintf(num, sizeof(num), "%lld", static_cast<long long>(ids[i]));
    out.append(num, static_cast<size_t>(n));
  }
  out += '\n';
}

void flush(std::string& out) {
  std::fwrite(out.data(), 1, out.size(), stdout);
  out.clear();
}

std::vector<int64_t> parse_ids(std::string_view s, const std::string& where) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    if (std::isspace(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    const std::string tok(s.substr(i, j - i));
    if (tok.find_first_not_of("0123456789") != std::string::npos || tok.size() > 12)
      throw Error(where + ": \"" + tok + "\" is not a token id", "give whitespace-separated non-negative integers");
    ids.push_back(std::stoll(tok));
    i = j;
  }
  return ids;
}

// Calls f(line, line_no) for each line of `input` (without the line break).
template <class F>
void for_each_line(const std::string& input, F&& f) {
  size_t pos = 0, line_no = 0;
  while (pos < input.size()) {
    size_t end = input.find('\n', pos);
    if (end == std::string::npos) end = input.size();
    f(std::string_view(input).substr(pos, end - pos), ++line_no);
    pos = end + 1;
  }
}

int encode(const Options& o) {
  const auto tok = components::build_tokenizer(o.need("tokenizer"), "--tokenizer");
  const bool bos = o.flag("bos"), eos = o.flag("eos"), special = o.flag("allow-special");
  const std::string input = read_stdin();
  std::string out;
  if (!o.flag("jsonl")) {
    write_ids(tok->encode(input, bos, eos, special), out);
    flush(out);
    return 0;
  }
  for_each_line(input, [&](std::string_view line, size_t line_no) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("stdin line " + std::to_string(line_no) + " is not JSON (" + e.what() + ")",
                  "with --jsonl each line is one JSON string");
    }
    if (!j.is_string()) throw Error("stdin line " + std::to_string(line_no) + " is not a JSON string", "with --jsonl each line is one JSON string");
    write_ids(tok->encode(j.get<std::string>(), bos, eos, special), out);
    if (out.size() > (1 << 20)) flush(out);
  });
  flush(out);
  return 0;
}

int decode(const Options& o) {
  const auto tok = components::build_tokenizer(o.need("tokenizer"), "--tokenizer");
  const bool skip = o.flag("skip-special");
  const std::string input = read_stdin();
  std::string out;
  if (!o.flag("jsonl")) {
    out = tok->decode(parse_ids(input, "stdin"), skip);
    flush(out);
    return 0;
  }
  for_each_line(input, [&](std::string_view line, size_t line_no) {
    const std::string text = tok->decode(parse_ids(line, "stdin line " + std::to_string(line_no)), skip);
    out += nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    if (out.size() > (1 << 20)) flush(out);
  });
  flush(out);
  return 0;
}

int train(const Options& o) {
  components::BpeTrainOptions opt;
  opt.vocab_size = o.get_int("vocab-size", -1);
  if (opt.vocab_size < 0) throw Error("--vocab-size is required", kTokenizerUsage);
  opt.min_frequency = o.get_int("min-frequency", 2);
  if (opt.vocab_size < 258 || opt.vocab_size > (int64_t{1} << 24))
    throw Error("--vocab-size " + std::to_string(opt.vocab_size) + " is out of range: a byte-level BPE has from 258 "
                "(256 bytes and BOS, EOS) to 16777216 ids", kTokenizerUsage);
  const std::string dir = o.need("output");
  // The tokenizer files of a folder are not replaced unless asked (the repository's own tokenizer,
  // a run's): --force.
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (std::filesystem::exists(std::filesystem::path(dir) / f) && !o.flag("force"))
      throw Error(dir + " already holds " + f + "; titan tokenizer train does not replace a tokenizer unless told to",
                  "give --output a new folder, or --force to replace it");
  constexpr int64_t kMaxSynthetic = 10'000'000;
  const int64_t synthetic = o.get_int("synthetic", 0);
  if (synthetic < 0 || synthetic > kMaxSynthetic)
    throw Error("--synthetic " + std::to_string(synthetic) + " is out of range: from 0 to 10000000 documents",
                kTokenizerUsage);
  components::BpeTrainer trainer(opt);
  int64_t docs = 0;
  ProgressBar reading("tokenizer train: reading", "documents");
  for (int64_t i = 0; i < synthetic; ++i, ++docs) {
    trainer.add(components::SyntheticEnglish::document(i));
    reading.update(static_cast<uint64_t>(i + 1), static_cast<uint64_t>(synthetic + (o.positional.empty() ? 0 : 1)));
  }
  components::TextOptions topt;
  topt.text_field = o.get("text-field", "text");
  topt.setting = "input";
  for (const auto& input : o.positional) {
    components::TextFiles files(components::resolve_files(input, "input"), input, topt);
    while (auto d = files.next()) {
      trainer.add(*d);
      reading.update(static_cast<uint64_t>(++docs), 0);
    }
  }
  if (docs == 0) throw Error("no training text", "give --synthetic N or text files (jsonl/txt, plain/.gz/.zst)");
  if (!o.positional.empty()) reading.update(static_cast<uint64_t>(docs), static_cast<uint64_t>(docs));
  ProgressBar merging("tokenizer train: merging", "merges");
  const int64_t n = trainer.train_and_write(dir, [&](uint64_t done, uint64_t total) { merging.update(done, total); });
  std::printf("trained on %lld documents: vocabulary of %lld ids written to %s/tokenizer.json\n",
              static_cast<long long>(docs), static_cast<long long>(n), dir.c_str());
  if (n < opt.vocab_size)
    std::printf("(fewer than --vocab-size %lld: no remaining pair occurs --min-frequency %lld times)\n",
                static_cast<long long>(opt.vocab_size), static_cast<long long>(opt.min_frequency));
  return 0;
}

int info(const Options& o) {
  const auto tok = components::build_tokenizer(o.need("tokenizer"), "--tokenizer");
  std::printf("%s\nvocab_size: %lld\nbos_id: %lld\neos_id: %lld\n", tok->describe().c_str(),
              static_cast<long long>(tok->vocab_size()), static_cast<long long>(tok->bos_id()),
              static_cast<long long>(tok->eos_id()));
  return 0;
}

}  // namespace

int tokenizer_command(const std::vector<std::string>& args) {
  check_help(args, kTokenizerUsage);
  if (args.empty()) throw Error("titan tokenizer needs a command", kTokenizerUsage);
  const std::string sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "encode") return encode(Options(rest, {"bos", "eos", "allow-special", "jsonl"}, {"tokenizer"}, kTokenizerUsage));
  if (sub == "decode") return decode(Options(rest, {"skip-special", "jsonl"}, {"tokenizer"}, kTokenizerUsage));
  if (sub == "train")
    return train(Options(rest, {"force"}, {"vocab-size", "output", "min-frequency", "text-field", "synthetic"}, kTokenizerUsage));
  if (sub == "info") return info(Options(rest, {}, {"tokenizer"}, kTokenizerUsage));
  throw Error("unknown tokenizer command \"" + sub + "\"", kTokenizerUsage);
}

}  // namespace titan::apps
