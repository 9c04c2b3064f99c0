// Encode throughput of a tokenizer on one text file: one thread over the whole text, then
// batch encoding of its paragraphs on N threads. Prints one JSON line per measurement, for
// bench/run_tokenizer_bench.sh (which runs tiktoken on the same text in the same run).
//   bench_tokenizer TOKENIZER TEXT_FILE [REPEATS] [THREADS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "titan/components/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXT_FILE [REPEATS] [THREADS]\n");
    return 2;
  }
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 5;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  auto load_start = std::chrono::steady_clock::now();
  auto tok = titan::components::build_tokenizer(argv[1], "tokenizer");
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::ifstream f(argv[2], std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  // Documents for batch encoding: paragraphs (text up to and including a blank line).
  std::vector<std::string> lines;
  for (size_t p = 0; p < text.size();) {
    size_t e = text.find("\n\n", p);
    e = e == std::string::npos ? text.size() : e + 2;
    lines.push_back(text.substr(p, e - p));
    p = e;
  }
  // Best of `repeats` (the least disturbed run), as the peer script does.
  double best = 1e30;
  size_t ntok = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    ntok = tok->encode(text).size();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("{\"impl\": \"titan\", \"mode\": \"single\", \"threads\": 1, \"bytes\": %zu, \"tokens\": %zu, "
              "\"seconds\": %.6f, \"mb_per_s\": %.3f, \"load_seconds\": %.3f}\n",
              text.size(), ntok, best, text.size() / best / 1e6, load_s);
  best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    auto ids = titan::components::encode_batch(*tok, lines, false, false, threads);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("{\"impl\": \"titan\", \"mode\": \"batch\", \"threads\": %d, \"bytes\": %zu, \"documents\": %zu, "
              "\"seconds\": %.6f, \"mb_per_s\": %.3f}\n",
              threads, text.size(), lines.size(), best, text.size() / best / 1e6);
  return 0;
}
