// `titan data tokenize` (text → binary token shards, multi-threaded, resumable) and
// `titan data batches` (print the batches a config yields, with save/restore of the loader
// position: what the resume test and users checking their data use).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "titan/common/crc32c.h"
#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/common/log.h"
#include "titan/components/data/data.h"
#include "titan/train/options.h"
#include "titan/components/data/documents.h"
#include "titan/components/tokenizer/tokenizer.h"
#include "titan/config/job_config.h"

namespace titan::apps {

namespace {

namespace fs = std::filesystem;
using components::ShardHeader;

const char* kDataUsage =
    "usage: titan data tokenize --tokenizer PATH --output DIR [--threads N] [--text-field F]\n"
    "                           [--skip-malformed] INPUT ...\n"
    "         INPUT: JSON-lines or text files (plain/.gz/.zst), folders or globs; one .bin shard per\n"
    "         input file; run it again after an interruption to resume\n"
    "       titan data batches [--job.config_file F] [--section.key VALUE ...] [--batches N]\n"
    "                          [--validation] [--dp-rank R --dp-degree D] [--load-state FILE]\n"
    "                          [--save-state FILE] [--json]\n"
    "         prints a hash and the first tokens of each batch the config's data yields; with\n"
    "         --json, one JSON object per batch with every id: {\"batch\", \"epoch\", \"inputs\", \"labels\"}\n"
    "See docs/datasets.md.";

// JSON text of `j`; bytes that are not UTF-8 (e.g. in file names) become U+FFFD.
std::string dump(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string human(double v) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u ? "%.1f%s" : "%.0f%s", v, units[u]);
  return buf;
}

class Progress {
 public:
  explicit Progress(size_t files) : files_(files), tty_(isatty(2)), start_(Clock::now()), last_(start_) {}
  void update(size_t file, int64_t docs, int64_t tokens, bool force = false) {
    const auto now = Clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!force && since < (tty_ ? 0.25 : 10.0)) return;
    last_ = now;
    const double secs = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
    const int width = 30;
    const int filled = static_cast<int>(width * static_cast<double>(file) / std::max<size_t>(files_, 1));
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "%s[%s] file %zu/%zu  %s documents  %s tokens  %s tokens/s%s", tty_ ? "\r" : "", bar.c_str(),
                 file, files_, human(static_cast<double>(docs)).c_str(), human(static_cast<double>(tokens)).c_str(),
                 human(static_cast<double>(tokens) / secs).c_str(), tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
  }
  void done() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  using Clock = std::chrono::steady_clock;
  size_t files_;
  bool tty_;
  Clock::time_point start_, last_;
};

// What identifies an input's content: its size, modification time and CRC-32C. A shard is kept on
// a rerun only if all three still match (a changed file with the same size and time has another
// checksum; a touched but unchanged file is tokenized again, which is only slower).
nlohmann::json input_fingerprint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("cannot stat input " + path + ": " + std::strerror(errno), "check that it exists and is readable");
  const auto size = static_cast<uint64_t>(st.st_size);
  // Nanoseconds since the Unix epoch (std::filesystem's clock has another epoch).
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot read input " + path, "check that it exists and is readable");
  std::vector<char> buf(8 << 20);
  uint32_t crc = 0;
  while (const size_t n = std::fread(buf.data(), 1, buf.size(), f)) crc = crc32c(crc, buf.data(), n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw Error("cannot read input " + path, "check the disk and the file");
  char hex[16];
  std::snprintf(hex, sizeof(hex), "%08x", crc);
  return {{"input", path}, {"input_bytes", size}, {"input_mtime_ns", mtime_ns}, {"input_crc32c", hex}};
}

int tokenize(const Options& o) {
  const auto tok = components::build_tokenizer(o.need("tokenizer"), "--tokenizer");
  const fs::path out_dir = o.need("output");
  const int threads = static_cast<int>(o.get_int("threads", 0));
  components::TextOptions topt;
  topt.text_field = o.get("text-field", "text");
  topt.skip_malformed = o.flag("skip-malformed");
  topt.setting = "input";
  if (o.positional.empty()) throw Error("no input files", kDataUsage);
  std::vector<std::string> inputs;
  for (const auto& in : o.positional)
    for (auto& f : components::resolve_files(in, "input")) {
      if (!components::is_text_file(f)) throw Error("input " + f + " is not a text file", "give JSON-lines or text files");
      inputs.push_back(std::move(f));
    }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create --output " + out_dir.string() + ": " + ec.message(), "choose a writable folder");
  const uint32_t token_bytes = tok->vocab_size() <= 65536 ? 2 : 4;

  // The manifest records finished shards; a rerun keeps those whose input and file are intact
  // and redoes the rest (an interrupted or damaged one).
  const fs::path manifest_path = out_dir / "manifest.json";
  nlohmann::json previous = nlohmann::json::object();
  if (std::error_code ec; fs::exists(manifest_path, ec)) {
    previous = components::parse_tokenize_manifest(read_file(manifest_path.string(), "manifest"), manifest_path.string());
    if (previous["tokenizer"] != tok->fingerprint())
      throw Error(out_dir.string() + " holds shards made with another tokenizer (" + dump(previous["tokenizer"]) + ")",
                  "use another --output folder, or the same --tokenizer to resume");
  }
  const nlohmann::json done_before = previous.contains("shards") ? previous["shards"] : nlohmann::json::object();
  nlohmann::json manifest = {{"tokenizer", tok->fingerprint()}, {"vocab_size", tok->vocab_size()},
                             {"shards", nlohmann::json::object()}};
  // Shards of inputs no longer given would be read as data: remove them.
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string n = e.path().filename().string();
    const bool shard_file = n.rfind("shard-", 0) == 0 && n.find_first_not_of("0123456789", 6) == 11 &&
                            (n.substr(11) == ".bin" || n.substr(11) == ".bin.tmp");
    if (shard_file) {
      const size_t index = static_cast<size_t>(std::strtoull(n.substr(6, 5).c_str(), nullptr, 10));
      if (index >= inputs.size()) fs::remove(e.path(), ec);
    }
  }
  Progress progress(inputs.size());
  int64_t all_docs = 0, all_tokens = 0, resumed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "shard-%05zu.bin", i);
    const fs::path shard = out_dir / name;
    const nlohmann::json before = done_before.contains(name) ? done_before[name] : nlohmann::json();
    const nlohmann::json fingerprint = input_fingerprint(inputs[i]);
    bool same_input = before.is_object();
    for (const auto& [key, value] : fingerprint.items()) same_input = same_input && before.value(key, nlohmann::json()) == value;
    if (same_input && fs::exists(shard, ec)) {
      try {
        const ShardHeader h = components::read_and_verify_shard(shard.string());  // whole, and its checksum holds
        all_docs += static_cast<int64_t>(h.documents);
        all_tokens += static_cast<int64_t>(h.tokens);
        manifest["shards"][name] = before;
        ++resumed;
        continue;
      } catch (const Error& e) {
        log::warning("making " + shard.string() + " again: " + e.what());
      }
    } else if (before.is_object()) {
      log::info("making " + shard.string() + " again: its input " + inputs[i] + " changed since it was made");
    }
    components::ShardWriter writer(shard.string(), token_bytes, static_cast<uint64_t>(tok->vocab_size()));
    components::TextFiles docs({inputs[i]}, inputs[i], topt);
    std::vector<std::string> chunk;
    auto flush_chunk = [&] {
      for (const auto& ids : components::encode_batch(*tok, chunk, true, true, threads)) writer.append(ids);
      chunk.clear();
      progress.update(i, all_docs + static_cast<int64_t>(writer.documents()),
                      all_tokens + static_cast<int64_t>(writer.tokens()));
    };
    while (auto d = docs.next()) {
      if (d->size() > components::Tokenizer::kPieceBytes) {  // a long document: a piece at a time
        flush_chunk();
        std::vector<int64_t> ids;
        if (tok->bos_id() >= 0) ids.push_back(tok->bos_id());
        for (size_t at = 0; at < d->size();) {
          at = tok->encode_piece(*d, at, ids);
          if (at == d->size() && tok->eos_id() >= 0) ids.push_back(tok->eos_id());
          writer.append_part(ids, at == d->size());
          ids.clear();
        }
        continue;
      }
      chunk.push_back(std::move(*d));
      if (chunk.size() >= 4096) flush_chunk();
    }
    if (!chunk.empty()) flush_chunk();
    writer.finish();
    const uint64_t tokens = writer.tokens(), documents = writer.documents();
    const auto skipped = docs.skipped();
    nlohmann::json entry = fingerprint;
    entry.update({{"tokens", tokens}, {"documents", documents}, {"skipped_empty", skipped.empty},
                  {"skipped_malformed", skipped.malformed}});
    manifest["shards"][name] = entry;
    write_file_atomically(manifest_path.string(), dump(manifest, 2) + "\n");
    all_docs += static_cast<int64_t>(documents);
    all_tokens += static_cast<int64_t>(tokens);
    progress.update(i + 1, all_docs, all_tokens, true);
  }
  progress.done();
  write_file_atomically(manifest_path.string(), dump(manifest, 2) + "\n");  // also when every shard was kept
  std::printf("%zu shards in %s (%lld already done): %lld documents, %lld tokens, %u bytes per token\n", inputs.size(),
              out_dir.c_str(), static_cast<long long>(resumed), static_cast<long long>(all_docs),
              static_cast<long long>(all_tokens), token_bytes);
  return 0;
}

std::string hash_batch(const components::Batch& b) {
  uint64_t h = 1469598103934665603ull;
  for (const at::Tensor* t : {&b.inputs, &b.labels}) {
    const int64_t* p = t->data_ptr<int64_t>();
    for (int64_t i = 0; i < t->numel(); ++i) {
      h ^= static_cast<uint64_t>(p[i]);
      h *= 1099511628211ull;
    }
  }
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

int batches(const std::vector<std::string>& args) {
  std::vector<std::string> cfg_args, mine;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool ours = a == "--batches" || a == "--dp-rank" || a == "--dp-degree" || a == "--load-state" || a == "--save-state";
    if (ours && i + 1 < args.size()) {
      mine.push_back(a);
      mine.push_back(args[++i]);
    } else if (a == "--validation" || a == "--json") {
      mine.push_back(a);
    } else {
      cfg_args.push_back(a);
    }
  }
  const Options o(mine, {"validation", "json"}, {"batches", "dp-rank", "dp-degree", "load-state", "save-state"}, kDataUsage);
  const config::JobConfig cfg = config::load_config(cfg_args);
  std::shared_ptr<const components::Tokenizer> tok = train::tokenizer_from_config(cfg);
  const int64_t degree = o.get_int("dp-degree", 1), rank = o.get_int("dp-rank", 0);
  if (degree < 1 || degree > (1 << 20) || rank < 0 || rank >= degree)
    throw Error("--dp-degree must be in [1, 1048576] and --dp-rank in [0, --dp-degree)", kDataUsage);
  const bool validation = o.flag("validation");
  auto loader = components::build_data_loader(train::dataset_options(cfg, validation ? "validation" : "training"), tok, rank, degree, !validation);
  if (const std::string in = o.get("load-state"); !in.empty()) {
    std::ifstream f(in);
    if (!f) throw Error("cannot read --load-state " + in, "give a file written by --save-state");
    nlohmann::json s;
    try {
      s = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw Error(in + " is not valid JSON (" + e.what() + ")", "give a file written by --save-state");
    }
    loader->load_state(s);
  }
  const int64_t n = o.get_int("batches", 4);
  if (n < 0) throw Error("--batches " + std::to_string(n) + " must be 0 or more", kDataUsage);
  for (int64_t i = 0; i < n; ++i) {
    auto b = loader->next();
    if (!b) {
      std::printf("end of data after %lld batches\n", static_cast<long long>(i));
      break;
    }
    if (o.flag("json")) {
      auto rows = [](const at::Tensor& t) {
        nlohmann::json out = nlohmann::json::array();
        for (int64_t r = 0; r < t.size(0); ++r) {
          const int64_t* q = t[r].contiguous().data_ptr<int64_t>();
          out.push_back(std::vector<int64_t>(q, q + t.size(1)));
        }
        return out;
      };
      const nlohmann::json line = {{"batch", i}, {"epoch", loader->epoch()}, {"inputs", rows(b->inputs)},
                                   {"labels", rows(b->labels)}};
      std::printf("%s\n", dump(line).c_str());
      continue;
    }
    std::string first;
    const int64_t* p = b->inputs.data_ptr<int64_t>();
    for (int64_t k = 0; k < std::min<int64_t>(8, b->inputs.numel()); ++k) {
      first += ' ';
      first += std::to_string(p[k]);
    }
    std::printf("batch %lld: %s epoch %lld first%s\n", static_cast<long long>(i), hash_batch(*b).c_str(),
                static_cast<long long>(loader->epoch()), first.c_str());
  }
  if (const std::string out = o.get("save-state"); !out.empty()) write_file_atomically(out, dump(loader->state()) + "\n");
  return 0;
}

}  // namespace

int data_command(const std::vector<std::string>& args) {
  check_help(args, kDataUsage);
  if (args.empty()) throw Error("titan data needs a command", kDataUsage);
  const std::string sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "tokenize")
    return tokenize(Options(rest, {"skip-malformed"}, {"tokenizer", "output", "threads", "text-field"}, kDataUsage));
  if (sub == "batches") return batches(rest);
  throw Error("unknown data command \"" + sub + "\"", kDataUsage);
}

}  // namespace titan::apps
