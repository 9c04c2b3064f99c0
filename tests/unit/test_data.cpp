// Tokenizers and the data pipeline: readers (plain, gzip, zstd), document rules, token shards,
// the loader's position (exact resume, other data-parallel degrees), validation passes and
// errors raised on the background thread.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "titan/common/error.h"
#include "titan/components/tokenizer/bpe.h"
#include "titan/components/data/data.h"
#include "titan/components/data/documents.h"
#include "titan/components/tokenizer/tokenizer.h"

using namespace titan::components;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("titan_data_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string zstd(const std::string& bytes) {
  std::string out(ZSTD_compressBound(bytes.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), 3));
  return out;
}

std::vector<std::string> lines_of(const std::string& path) {
  LineReader r(path);
  std::vector<std::string> out;
  std::string line;
  while (r.getline(line)) out.push_back(line);
  return out;
}

std::string expect_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const titan::Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "no titan::Error";
  return "";
}

std::string repo_tokenizer() { return std::string(TITAN_SOURCE_DIR) + "/assets/tokenizer"; }

std::vector<at::Tensor> take(DataLoader& d, int n) {
  std::vector<at::Tensor> out;
  for (int i = 0; i < n; ++i) {
    auto b = d.next();
    if (!b) break;
    out.push_back(at::cat({b->inputs, b->labels.narrow(1, b->labels.size(1) - 1, 1)}, 1));
  }
  return out;
}

LoaderOptions options(int64_t batch, int64_t seq, bool infinite = true, int64_t rank = 0, int64_t degree = 1) {
  LoaderOptions o;
  o.batch_size = batch;
  o.seq_len = seq;
  o.infinite = infinite;
  o.slice_index = rank;
  o.slice_count = degree;
  return o;
}

}  // namespace

TEST(Readers, PlainGzipAndZstdReadTheSameLines) {
  TempDir t;
  std::string text;
  for (int i = 0; i < 5000; ++i) text += "line " + std::to_string(i) + (i % 7 ? "" : "\r") + "\n";
  text += "last line without a break";
  write(t.file("a.txt"), text);
  write_gz(t.file("a.txt.gz"), text);
  write(t.file("a.txt.zst"), zstd(text));
  const auto plain = lines_of(t.file("a.txt"));
  ASSERT_EQ(plain.size(), 5001u);
  EXPECT_EQ(plain[0], "line 0");  // \r\n ends a line like \n
  EXPECT_EQ(plain.back(), "last line without a break");
  EXPECT_EQ(lines_of(t.file("a.txt.gz")), plain);
  EXPECT_EQ(lines_of(t.file("a.txt.zst")), plain);
  // skip_to resumes mid-file at an uncompressed offset.
  LineReader r(t.file("a.txt.zst"));
  std::string line;
  for (int i = 0; i < 100; ++i) r.getline(line);
  const uint64_t at = r.offset();
  LineReader s(t.file("a.txt.zst"));
  s.skip_to(at);
  ASSERT_TRUE(s.getline(line));
  EXPECT_EQ(line, plain[100]);
}

TEST(Readers, TruncatedCompressedFilesAreErrors) {
  TempDir t;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "some text " + std::to_string(i * 7919) + "\n";
  const std::string z = zstd(text);
  write(t.file("cut.jsonl.zst"), z.substr(0, z.size() / 2));
  EXPECT_NE(expect_error([&] { lines_of(t.file("cut.jsonl.zst")); }).find("cut.jsonl.zst"), std::string::npos);
  write(t.file("bad.txt.zst"), "this is not zstd at all");
  EXPECT_NE(expect_error([&] { lines_of(t.file("bad.txt.zst")); }).find("corrupt"), std::string::npos);
  write_gz(t.file("full.txt.gz"), text);
  std::ifstream f(t.file("full.txt.gz"), std::ios::binary);
  std::string gz((std::istreambuf_iterator<char>(f)), {});
  write(t.file("cut.txt.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_NE(expect_error([&] { lines_of(t.file("cut.txt.gz")); }).find("cut.txt.gz"), std::string::npos);
}

TEST(Documents, ParagraphsJsonLinesAndTheirErrors) {
  TempDir t;
  write(t.file("a.txt"), "\n\nFirst para\nline two\n\n\n  \nSecond\n");
  TextOptions o;
  TextFiles txt({t.file("a.txt")}, "a", o);
  EXPECT_EQ(*txt.next(), "First para\nline two");
  EXPECT_EQ(*txt.next(), "Second");
  EXPECT_FALSE(txt.next());

  write(t.file("b.jsonl"), "{\"text\": \"one\"}\n\n{\"text\": \"\"}\n{\"body\": \"x\"}\n{not json\n{\"text\": \"two\"}\n");
  TextFiles strict({t.file("b.jsonl")}, "b", o);
  EXPECT_EQ(*strict.next(), "one");
  EXPECT_EQ(*strict.next(), "");
  const std::string missing = expect_error([&] { strict.next(); });
  EXPECT_NE(missing.find("b.jsonl:4"), std::string::npos) << missing;
  EXPECT_NE(missing.find("\"text\""), std::string::npos);
  o.skip_malformed = true;
  TextFiles lenient({t.file("b.jsonl")}, "b", o);
  EXPECT_EQ(*lenient.next(), "one");
  EXPECT_EQ(*lenient.next(), "");  // an empty text is a document (torchtitan: BOS + EOS)
  EXPECT_EQ(*lenient.next(), "two");
  EXPECT_FALSE(lenient.next());
  EXPECT_EQ(lenient.skipped().malformed, 2);
  EXPECT_EQ(lenient.skipped().empty, 1);  // the blank line
  o.skip_malformed = false;
  o.text_field = "body";
  write(t.file("c.jsonl"), "{\"body\": \"x\"}\n{broken\n");
  TextFiles other({t.file("c.jsonl")}, "c", o);
  EXPECT_EQ(*other.next(), "x");
  const std::string broken = expect_error([&] { other.next(); });
  EXPECT_NE(broken.find("c.jsonl:2: malformed JSON"), std::string::npos) << broken;
  EXPECT_NE(broken.find("dataset_skip_malformed"), std::string::npos);
}

TEST(Documents, PathsFoldersAndGlobs) {
  TempDir t;
  fs::create_directories(t.path / "c4" / "en");
  for (int i = 0; i < 3; ++i) write_gz(t.file("c4/en/c4-train.0000" + std::to_string(i) + "-of-01024.json.gz"), "{\"text\": \"d\"}\n");
  write_gz(t.file("c4/en/c4-validation.00000-of-00008.json.gz"), "{\"text\": \"v\"}\n");
  EXPECT_EQ(resolve_files(t.file("c4"), "k", "c4-train.*.json*").size(), 3u);
  EXPECT_EQ(resolve_files(t.file("c4"), "k", "c4-validation.*.json*").size(), 1u);
  EXPECT_EQ(resolve_files(t.file("c4/en/c4-train.*.json.gz"), "k").size(), 3u);
  EXPECT_NE(expect_error([&] { resolve_files(t.file("c4/en/nothing-*.json"), "training.dataset_path"); }).find("matches no files"),
            std::string::npos);
  EXPECT_NE(expect_error([&] { resolve_files(t.file("nope"), "training.dataset_path"); }).find("no such file"), std::string::npos);
  fs::create_directories(t.path / "empty");
  EXPECT_NE(expect_error([&] { resolve_files(t.file("empty"), "k"); }).find("no data files"), std::string::npos);
  write(t.file("x.bin"), "");
  write(t.file("x.txt"), "a\n");
  EXPECT_NE(expect_error([&] { resolve_files(t.file("x.*"), "k"); }).find("mixes"), std::string::npos);
}

TEST(Shards, WriteReadAndRejectDamage) {
  TempDir t;
  {
    ShardWriter w(t.file("s.bin"), 2, 535);
    w.append({1, 2, 3});
    w.append({65535, 7});
    w.finish();
  }
  const ShardHeader h = read_shard_header(t.file("s.bin"));
  EXPECT_EQ(h.tokens, 5u);
  EXPECT_EQ(h.documents, 2u);
  EXPECT_EQ(h.vocab_size, 535u);
  TokenShards s({t.file("s.bin")}, "s");
  std::vector<int64_t> got(5);
  s.read(0, 5, got.data());
  EXPECT_EQ(got, (std::vector<int64_t>{1, 2, 3, 65535, 7}));
  EXPECT_THROW(ShardWriter(t.file("w.bin"), 2, 10).append({70000}), titan::Error);
  { ShardWriter abandoned(t.file("never.bin"), 4, 10); abandoned.append({1}); }
  EXPECT_FALSE(fs::exists(t.file("never.bin")));
  EXPECT_FALSE(fs::exists(t.file("never.bin.tmp")));

  std::ifstream f(t.file("s.bin"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  write(t.file("cut.bin"), bytes.substr(0, bytes.size() - 1));
  EXPECT_NE(expect_error([&] { read_shard_header(t.file("cut.bin")); }).find("truncated or corrupt"), std::string::npos);
  std::string bad = bytes;
  bad[0] = 'X';
  write(t.file("magic.bin"), bad);
  EXPECT_NE(expect_error([&] { read_shard_header(t.file("magic.bin")); }).find("TITANTOK"), std::string::npos);
  write(t.file("tiny.bin"), "TITAN");
  EXPECT_THROW(read_shard_header(t.file("tiny.bin")), titan::Error);
}

TEST(Loader, ResumesExactlyFromSavedPositionWithPrefetch) {
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  auto make = [&] { return DataLoader(std::make_unique<SyntheticEnglish>(0, 1, 8), tok, options(3, 32)); };
  DataLoader whole = make();
  const auto all = take(whole, 30);  // 8 documents: crosses several epochs
  ASSERT_EQ(all.size(), 30u);
  EXPECT_GE(whole.epoch(), 2);
  for (int cut : {0, 1, 7, 19}) {
    DataLoader first = make();
    take(first, cut);
    const nlohmann::json state = nlohmann::json::parse(first.state().dump());  // as if read from disk
    DataLoader second = make();
    second.load_state(state);
    const auto rest = take(second, 30 - cut);
    ASSERT_EQ(rest.size(), static_cast<size_t>(30 - cut));
    for (int i = 0; i < 30 - cut; ++i) EXPECT_TRUE(at::equal(rest[i], all[cut + i])) << "cut " << cut << " batch " << i;
  }
}

TEST(Loader, AnyDataParallelDegreeSeesTheSameGlobalBatchAndResumes) {
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  auto make = [&](int64_t batch, int64_t rank, int64_t degree) {
    return DataLoader(std::make_unique<SyntheticEnglish>(0, 1, 500), tok, options(batch, 16, true, rank, degree));
  };
  DataLoader one = make(4, 0, 1);
  const auto global = take(one, 6);
  DataLoader r0 = make(2, 0, 2), r1 = make(2, 1, 2);
  const auto a = take(r0, 6), b = take(r1, 6);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(at::equal(at::cat({a[i], b[i]}), global[i]));
  // A position saved by one process at degree 1 resumes on two ranks at degree 2.
  DataLoader early = make(4, 0, 1);
  take(early, 2);
  const auto state = early.state();
  DataLoader s0 = make(2, 0, 2), s1 = make(2, 1, 2);
  s0.load_state(state);
  s1.load_state(state);
  const auto c = take(s0, 4), d = take(s1, 4);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(at::cat({c[i], d[i]}), global[2 + i]));
}

TEST(Loader, ShardsMatchTextAndResume) {
  TempDir t;
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  // The same documents as text and as shards (two files each) give the same batches.
  std::string f1, f2;
  for (int i = 0; i < 30; ++i) (i < 12 ? f1 : f2) += SyntheticEnglish::document(i) + "\n";
  write(t.file("a.txt"), f1);
  write(t.file("b.txt"), f2);
  for (const char* name : {"a", "b"}) {
    TextFiles docs({t.file(std::string(name) + ".txt")}, name, TextOptions{});
    ShardWriter w(t.file(std::string(name) + ".bin"), 2, static_cast<uint64_t>(tok->vocab_size()));
    while (auto d = docs.next()) w.append(tok->encode(*d, true, true, false));
    w.finish();
  }
  DataLoader text(std::make_unique<TextFiles>(std::vector<std::string>{t.file("a.txt"), t.file("b.txt")}, "t", TextOptions{}),
                  tok, options(2, 24));
  auto shards = std::make_shared<TokenShards>(std::vector<std::string>{t.file("a.bin"), t.file("b.bin")}, "s");
  DataLoader bin(shards, options(2, 24));
  const auto from_text = take(text, 40), from_bin = take(bin, 40);  // several epochs
  ASSERT_EQ(from_text.size(), 40u);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(at::equal(from_text[i], from_bin[i])) << "batch " << i;
  DataLoader part(shards, options(2, 24));
  take(part, 13);
  DataLoader rest(shards, options(2, 24));
  rest.load_state(part.state());
  const auto tail = take(rest, 27);
  for (int i = 0; i < 27; ++i) EXPECT_TRUE(at::equal(tail[i], from_bin[13 + i]));
  // A position for other data is refused.
  EXPECT_THROW(text.load_state(bin.state()), titan::Error);
}

TEST(Loader, FiniteDataEndsAndValidationPassesRepeat) {
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  DataLoader v(std::make_unique<SyntheticEnglish>(0, 1, 30), tok, options(2, 32, /*infinite=*/false));
  const auto pass1 = take(v, 1000);
  ASSERT_GT(pass1.size(), 2u);
  EXPECT_FALSE(v.next());
  EXPECT_FALSE(v.next());
  v.reset();
  const auto pass2 = take(v, 1000);
  ASSERT_EQ(pass2.size(), pass1.size());
  for (size_t i = 0; i < pass1.size(); ++i) EXPECT_TRUE(at::equal(pass1[i], pass2[i]));
}

TEST(Loader, BackgroundErrorsReachTheCaller) {
  TempDir t;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "{\"text\": \"document " + std::to_string(i) + " has some words\"}\n";
  text += "{oops\n";
  write(t.file("d.jsonl"), text);
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  DataLoader d(std::make_unique<TextFiles>(std::vector<std::string>{t.file("d.jsonl")}, "d", TextOptions{}), tok,
               options(2, 64));
  const std::string msg = expect_error([&] {
    for (int i = 0; i < 1000; ++i) d.next();
  });
  EXPECT_NE(msg.find("d.jsonl:201: malformed JSON"), std::string::npos) << msg;
}

TEST(Tokenizer, SpecialTokensBosEosAndEveryByteKept) {
  auto tok = build_tokenizer(repo_tokenizer(), "test");
  ASSERT_GE(tok->bos_id(), 0);
  const std::string s = "The old king<|end_of_text|> reads.";
  const auto as_text = tok->encode(s);
  const auto special = tok->encode(s, /*allow_special=*/true);
  EXPECT_EQ(std::count(as_text.begin(), as_text.end(), tok->eos_id()), 0);
  EXPECT_EQ(std::count(special.begin(), special.end(), tok->eos_id()), 1);
  EXPECT_EQ(tok->decode(as_text), s);
  EXPECT_EQ(tok->decode(special), s);
  EXPECT_EQ(tok->decode(special, /*skip_special=*/true), "The old king reads.");
  const auto both = tok->encode("a", true, true, false);
  EXPECT_EQ(both.front(), tok->bos_id());
  EXPECT_EQ(both.back(), tok->eos_id());
  std::mt19937 rng(7);
  for (int n : {1, 3, 50, 400, 3000}) {  // invalid UTF-8 and long runs (the long-piece merge path)
    std::string bytes(static_cast<size_t>(n), '\0');
    for (auto& c : bytes) c = static_cast<char>(rng() % 256);
    EXPECT_EQ(tok->decode(tok->encode(bytes)), bytes);
    std::string word(static_cast<size_t>(n), 'a');
    for (size_t i = 0; i < word.size(); ++i) word[i] = "theriv"[rng() % 6];
    EXPECT_EQ(tok->decode(tok->encode(word)), word);
  }
  EXPECT_THROW(tok->decode({100000}), titan::Error);
}

TEST(Tokenizer, BatchEncodingMatchesOneByOne) {
  auto tok = build_tokenizer(repo_tokenizer(), "test");
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) docs.push_back(SyntheticEnglish::document(i));
  const auto batch = encode_batch(*tok, docs, true, true, 3);
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(batch[i], tok->encode(docs[i], true, true, false));
}

TEST(Tokenizer, MalformedFilesNameTheFile) {
  TempDir t;
  write(t.file("tokenizer.model"), "IQ== 0\nnot-base64! 1\n");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("tokenizer.model"), "k"); }).find("tokenizer.model:2"), std::string::npos);
  write(t.file("gap.model"), "IQ== 0\nIg== 2\n");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("gap.model"), "k"); }).find("rank 1 is missing"), std::string::npos);
  fs::create_directories(t.path / "j");
  write(t.file("j/tokenizer.json"), "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("j"), "k"); }).find("not valid JSON"), std::string::npos);
  write(t.file("j/tokenizer.json"),
        R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}, "decoder": {"type": "ByteLevel"}})");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("j"), "k"); }).find("merge 0"), std::string::npos);
  write(t.file("j/tokenizer.json"), R"({"model": {"type": "WordPiece", "vocab": {}}})");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("j"), "k"); }).find("WordPiece"), std::string::npos);
  fs::create_directories(t.path / "none");
  EXPECT_NE(expect_error([&] { build_tokenizer(t.file("none"), "model.hf_assets_path"); }).find("no tokenizer.json"),
            std::string::npos);
}

namespace {

// The repository's tokenizer.json with another pre-tokenizer, normalizer or added tokens.
std::unique_ptr<Tokenizer> variant(const TempDir& t, const std::string& name, const nlohmann::json& pre,
                                   const nlohmann::json& normalizer, const nlohmann::json& extra_added) {
  std::ifstream in(repo_tokenizer() + "/tokenizer.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["pre_tokenizer"] = pre;
  j["normalizer"] = normalizer;
  for (const auto& a : extra_added) j["added_tokens"].push_back(a);
  fs::create_directories(t.path / name);
  write(t.file(name + "/tokenizer.json"), j.dump());
  return build_tokenizer(t.file(name), "test");
}

nlohmann::json split(const std::string& regex, const std::string& behavior = "Isolated") {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", behavior}, {"invert", false}};
}

// Text built from pieces that exercise every regex alternative, normalization, added tokens and
// invalid UTF-8 around spaces.
std::string hostile_text(std::mt19937& rng, size_t bytes) {
  static const char* const kParts[] = {
      "a", "Zq", "word", " ", "  ", "\n", "\r\n", "\t", " \n ", "'s", "'S", "'ll", "1", "2345", ".", ",", "\"", "?!",
      "\xc3\xa9", "e\xcc\x81", "\xc3\x9f", "\xc4\xb0", "\xce\xa3", "\xe4\xb8\xad\xe6\x96\x87", "\xf0\x9f\x99\x82",
      "\xff", "\xc3", " <tool_call>", "<tool_call>", "ab", "\xc2\xa0", "\xe3\x80\x80", "\xef\xac\x81", "\xe2\x85\xab",
      " x", " Y", ". The", "3 b"};
  std::uniform_int_distribution<size_t> pick(0, std::size(kParts) - 1);
  std::string s;
  while (s.size() < bytes) s += kParts[pick(rng)];
  return s;
}

// The ids of `text` encoded a piece at a time, and how many pieces it took.
std::vector<int64_t> in_pieces(const Tokenizer& tok, const std::string& text, size_t piece, size_t* count) {
  std::vector<int64_t> ids;
  *count = 0;
  for (size_t at = 0; at < text.size(); ++*count) at = tok.encode_piece(text, at, ids, piece);
  return ids;
}

}  // namespace

TEST(CutPoint, PiecesEncodeLikeTheWholeTextForEveryKnownPreTokenizer) {
  TempDir t;
  const std::string llama3 = kLlama3Pattern;
  const std::string qwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const nlohmann::json plain_added = nlohmann::json::array(
      {{{"id", 535}, {"content", "<tool_call>"}, {"special", false}, {"single_word", false}, {"lstrip", false},
        {"rstrip", false}, {"normalized", false}},
       {{"id", 536}, {"content", "ab"}, {"special", false}, {"single_word", false}, {"lstrip", true},
        {"rstrip", true}, {"normalized", false}}});
  std::vector<std::pair<std::string, std::unique_ptr<Tokenizer>>> toks;
  toks.emplace_back("repository (Llama 3 regex)", build_tokenizer(repo_tokenizer(), "test"));
  toks.emplace_back("GPT-2 ByteLevel with a prefix space",
                    variant(t, "gpt2", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}},
                            nullptr, nlohmann::json::array()));
  toks.emplace_back("digits, Qwen2 regex, NFC, plain added tokens",
                    variant(t, "qwen",
                            {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Digits"}, {"individual_digits", false}}, split(qwen2), byte_level}}},
                            {{"type", "NFC"}}, plain_added));
  toks.emplace_back("Llama 3 regex, NFKC and lowercase",
                    variant(t, "lower", {{"type", "Sequence"}, {"pretokenizers", {split(llama3), byte_level}}},
                            {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}},
                            nlohmann::json::array()));
  toks.emplace_back("bytes", std::make_unique<ByteTokenizer>());
  std::mt19937 rng(7);
  for (const auto& [name, tok] : toks) {
    for (int round = 0; round < 40; ++round) {
      const std::string text = hostile_text(rng, 3000);
      const auto whole = tok->encode(text);
      for (size_t piece : {1, 2, 5, 13, 200}) {
        size_t count = 0;
        ASSERT_EQ(in_pieces(*tok, text, piece, &count), whole) << name << ", piece " << piece << ", text " << text;
        if (piece <= 13) {
          EXPECT_GT(count, 5u) << name;  // it did cut
        }
      }
    }
  }
}

TEST(CutPoint, UnknownPreTokenizersAreEncodedWhole) {
  TempDir t;
  const nlohmann::json none = nlohmann::json::array();
  const std::vector<std::unique_ptr<Tokenizer>> toks = [&] {
    std::vector<std::unique_ptr<Tokenizer>> v;
    v.push_back(variant(t, "space", split(" ", "MergedWithPrevious"), nullptr, none));  // an unknown regex
    v.push_back(variant(t, "digits_last",  // a digit split after the known regex would join across a cut
                        {{"type", "Sequence"},
                         {"pretokenizers", {split(kLlama3Pattern), {{"type", "Digits"}, {"individual_digits", true}}}}},
                        nullptr, none));
    v.push_back(variant(t, "inverted", {{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}},
                                        {"behavior", "Isolated"}, {"invert", true}},
                        nullptr, none));
    return v;
  }();
  const std::string text(5000, 'a');
  std::string words;
  for (int i = 0; i < 500; ++i) words += "word ";
  for (const auto& tok : toks) {
    EXPECT_EQ(tok->cut_point(words, 10), std::string_view::npos) << tok->describe();
    size_t count = 0;
    EXPECT_EQ(in_pieces(*tok, words, 16, &count), tok->encode(words));
    EXPECT_EQ(count, 1u);
  }
  // The known tokenizer cuts only before " word" that follows a printable character.
  auto tok = build_tokenizer(repo_tokenizer(), "test");
  EXPECT_EQ(tok->cut_point("ab cd", 1), 2u);
  EXPECT_EQ(tok->cut_point("ab  cd", 1), std::string_view::npos);
  EXPECT_EQ(tok->cut_point("ab 1d", 1), std::string_view::npos);
  EXPECT_EQ(tok->cut_point("\xc3\xa9 cd", 1), std::string_view::npos);
  EXPECT_EQ(tok->cut_point(text, 1), std::string_view::npos);
}

TEST(Loader, LongDocumentsAreStreamedAndResumeInside) {
  TempDir t;
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  std::string longdoc;
  for (int i = 0; longdoc.size() < 5 * Tokenizer::kPieceBytes; ++i) longdoc += SyntheticEnglish::document(i) + " ";
  const std::vector<std::string> docs = {"A short first one.", longdoc, "A short last one."};
  std::string jsonl;
  std::vector<int64_t> stream;  // what the loader must yield: each document whole, with BOS and EOS
  for (const auto& d : docs) {
    jsonl += nlohmann::json{{"text", d}}.dump() + "\n";
    const auto ids = tok->encode(d, true, true, false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  write(t.file("long.jsonl"), jsonl);
  auto make = [&] {
    return DataLoader(std::make_unique<TextFiles>(std::vector<std::string>{t.file("long.jsonl")}, "long", TextOptions{}),
                      tok, options(4, 255, /*infinite=*/false));
  };
  DataLoader whole = make();
  const auto all = take(whole, 1 << 20);
  ASSERT_EQ(all.size(), stream.size() / (4 * 256));
  for (size_t b = 0; b < all.size(); ++b) {
    const std::vector<int64_t> want(stream.begin() + static_cast<std::ptrdiff_t>(b * 1024),
                                    stream.begin() + static_cast<std::ptrdiff_t>((b + 1) * 1024));
    const at::Tensor got = all[b].contiguous();
    ASSERT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + got.numel()), want) << "batch " << b;
  }
  // Inside the long document the position names a byte in it (before its last piece is read)
  // and holds about one piece of tokens.
  ASSERT_GT(all.size(), 240u);
  for (int cut : {3, 60, 120, 240}) {
    DataLoader first = make();
    take(first, cut);
    const nlohmann::json state = nlohmann::json::parse(first.state().dump());
    if (cut < 200) {
      ASSERT_EQ(state["version"], 2) << cut;
      EXPECT_GT(state["document_offset"].get<int64_t>(), 0);
    }
    EXPECT_LT(state["buffer"].size(), Tokenizer::kPieceBytes + 1024);
    DataLoader second = make();
    second.load_state(state);
    const auto rest = take(second, 1 << 20);
    ASSERT_EQ(rest.size(), all.size() - static_cast<size_t>(cut));
    for (size_t i = 0; i < rest.size(); ++i) ASSERT_TRUE(at::equal(rest[i], all[static_cast<size_t>(cut) + i])) << cut;
    if (cut >= 200) continue;
    // The same position over a document that is now shorter is refused.
    write(t.file("long.jsonl"), nlohmann::json{{"text", "A short first one."}}.dump() + "\n" +
                                    nlohmann::json{{"text", "short now"}}.dump() + "\n");
    DataLoader changed = make();
    EXPECT_NE(expect_error([&] { changed.load_state(state); }).find("bytes into a document"), std::string::npos);
    write(t.file("long.jsonl"), jsonl);
  }
}

TEST(Loader, AnEmptyTextIsBosAndEosAsInTorchtitan) {
  TempDir t;
  auto tok = std::shared_ptr<const Tokenizer>(build_tokenizer(repo_tokenizer(), "test"));
  write(t.file("e.jsonl"), "{\"text\": \"Hi.\"}\n{\"text\": \"\"}\n\n{\"text\": \"Yo.\"}\n");
  DataLoader d(std::make_unique<TextFiles>(std::vector<std::string>{t.file("e.jsonl")}, "e", TextOptions{}), tok,
               options(1, 1, /*infinite=*/false));
  std::vector<int64_t> ids;
  for (const auto& b : take(d, 100)) ids.push_back(b[0][0].item<int64_t>());  // windows of 2 tokens
  std::vector<int64_t> want;
  for (const char* text : {"Hi.", "", "Yo."}) {
    const auto e = tok->encode(text, true, true, false);
    want.insert(want.end(), e.begin(), e.end());
  }
  want.resize(want.size() / 2 * 2);
  std::vector<int64_t> firsts;
  for (size_t i = 0; i < want.size(); i += 2) firsts.push_back(want[i]);
  EXPECT_EQ(ids, firsts);
  const std::vector<int64_t> middle = {tok->eos_id(), tok->bos_id(), tok->eos_id(), tok->bos_id()};
  EXPECT_NE(std::search(want.begin(), want.end(), middle.begin(), middle.end()), want.end());
}

TEST(Documents, SyntheticValidationReadsDocumentsTrainingNeverReads) {
  SyntheticEnglish train(0, 1, 20000), held_out(0, 1, 20000, SyntheticEnglish::kHeldOut);
  const std::string first = *held_out.next();
  EXPECT_EQ(first, SyntheticEnglish::document(SyntheticEnglish::kHeldOut));
  EXPECT_NE(first, *train.next());
  EXPECT_NE(held_out.describe().find("held-out"), std::string::npos);
  EXPECT_THROW(held_out.load_state({{"index", 5}}), titan::Error);  // a training position
  held_out.load_state({{"index", SyntheticEnglish::kHeldOut + 3}});
  EXPECT_EQ(*held_out.next(), SyntheticEnglish::document(SyntheticEnglish::kHeldOut + 3));
}
