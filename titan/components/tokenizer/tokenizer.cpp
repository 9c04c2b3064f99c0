#include "titan/components/tokenizer/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <thread>

#include "titan/common/error.h"
#include "titan/components/tokenizer/bpe.h"

namespace titan::components {

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos,
                                       bool allow_special) const {
  std::vector<int64_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  encode_append(text, out, allow_special);
  if (add_eos && eos_id() >= 0) out.push_back(eos_id());
  return out;
}

size_t Tokenizer::encode_piece(std::string_view text, size_t from, std::vector<int64_t>& out,
                               size_t piece_bytes) const {
  size_t end = text.size();
  if (end - from > piece_bytes) end = std::min(end, cut_point(text, from + std::max<size_t>(piece_bytes, 1)));
  encode_append(text.substr(from, end - from), out, false);
  return end;
}

void ByteTokenizer::encode_append(std::string_view text, std::vector<int64_t>& out, bool) const {
  out.reserve(out.size() + text.size());
  for (unsigned char c : text) out.push_back(c);
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string out;
  for (int64_t id : ids) {
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
    else if (id == 256 || id == 257) {
      if (!skip_special) out += id == 256 ? "<|begin_of_text|>" : "<|end_of_text|>";
    } else {
      throw Error("cannot decode id " + std::to_string(id) + ": the byte tokenizer has ids 0..257",
                  "decode ids made by the same tokenizer");
    }
  }
  return out;
}

TokenizerFiles find_tokenizer_files(const std::string& path, const std::string& key) {
  TokenizerFiles files;
  if (path == "builtin:bytes") {
    files.builtin = true;
    return files;
  }
  namespace fs = std::filesystem;
  const std::string setting = key.empty() ? "the tokenizer" : key + " = \"" + path + "\"";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    std::string fix = "point it at a folder with tokenizer.json or tokenizer.model, or use \"builtin:bytes\"";
    if (path.find("tests/assets/tokenizer") != std::string::npos)
      fix = "torchtitan's test tokenizer is not part of titan.cpp: use \"./assets/tokenizer\" (a BPE trained on "
            "the built-in data), \"builtin:bytes\", or your model's tokenizer folder";
    else if (path.find("assets/tokenizer") != std::string::npos && path[0] != '/')
      fix = "the path is relative to the current directory: run from the titan.cpp checkout or give an absolute path";
    throw Error(setting + ": no such file or folder", fix);
  }
  fs::path json_file, config_file, model_file;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "tokenizer.json", ec)) json_file = dir / "tokenizer.json";
    else if (fs::exists(dir / "tokenizer.model", ec)) model_file = dir / "tokenizer.model";
    else if (fs::exists(dir / "original" / "tokenizer.model", ec)) model_file = dir / "original" / "tokenizer.model";
    if (fs::exists(dir / "tokenizer_config.json", ec)) config_file = dir / "tokenizer_config.json";
    if (json_file.empty() && model_file.empty()) {
      std::string listing;
      for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.is_regular_file(ec)) listing += (listing.empty() ? "" : ", ") + e.path().filename().string();
      throw Error(setting + ": the folder holds no tokenizer.json or tokenizer.model (it has: " +
                      (listing.empty() ? "nothing" : listing) + ")",
                  "download the model's tokenizer files into it");
    }
  } else {
    const fs::path p(path);
    if (p.extension() == ".json") {
      json_file = p;
      if (fs::exists(p.parent_path() / "tokenizer_config.json", ec)) config_file = p.parent_path() / "tokenizer_config.json";
    } else {
      model_file = p;  // tiktoken rank files have no fixed extension
    }
  }
  files.json = json_file.string();
  files.config = config_file.string();
  files.model = model_file.string();
  return files;
}

std::unique_ptr<Tokenizer> build_tokenizer(const std::string& path, const std::string& key) {
  const TokenizerFiles files = find_tokenizer_files(path, key);
  if (files.builtin) return std::make_unique<ByteTokenizer>();
  if (!files.json.empty()) return BpeTokenizer::from_hf(files.json, files.config);
  return BpeTokenizer::from_tiktoken(files.model);
}

std::vector<std::vector<int64_t>> encode_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                               bool add_bos, bool add_eos, int threads) {
  std::vector<std::vector<int64_t>> out(texts.size());
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads <= 0 || threads > 4 * cores) threads = threads <= 0 ? cores : 4 * cores;
  threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(texts.size(), 1)));
  if (threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = tok.encode(texts[i], add_bos, add_eos, false);
    return out;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mu;
  auto work = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < texts.size();) out[i] = tok.encode(texts[i], add_bos, add_eos, false);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mu);
      if (!failure) failure = std::current_exception();
      next = texts.size();
    }
  };
  std::vector<std::thread> pool;
  try {
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  } catch (const std::system_error&) {
    // Fewer threads than asked (the system refused more): the ones started and this one finish.
  }
  work();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace titan::components
