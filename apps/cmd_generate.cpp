// titan generate: text from a titan.cpp checkpoint or a Hugging Face folder (docs/generate.md).
#include <ATen/Parallel.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/components/tokenizer/tokenizer.h"
#include "titan/generate/generator.h"

namespace titan::apps {

namespace {

const char* kUsage =
    "usage: titan generate --checkpoint FOLDER [--prompt TEXT]... [--prompt-file FILE] [--tokenizer PATH]\n"
    "                      [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                      [--ignore-eos] [--no-kv-cache] [--json] [--device cpu|cuda] [--dtype float32|bfloat16]\n"
    "\n"
    "Continues each prompt with the model of FOLDER: a titan.cpp checkpoint step folder (any layout\n"
    "it was saved on) or a Hugging Face model folder, for every registered model (docs/models.md).\n"
    "Prompts come from --prompt (repeatable), --prompt-file (one per line) or, without either,\n"
    "standard input (one per line); several are generated together as one left-padded batch, each\n"
    "with BOS in front as training reads documents.\n"
    "\n"
    "--tokenizer    the tokenizer (default: the one the checkpoint's run recorded, or the Hugging\n"
    "               Face folder's own)\n"
    "--max-new-tokens  at most this many tokens per prompt (default 64); generation stops earlier\n"
    "               at EOS unless --ignore-eos\n"
    "--temperature  0 (the default) is greedy; above 0 samples from softmax(logits / T), after\n"
    "               --top-k (keep the K most likely, 0 = all) and --top-p (keep the most likely\n"
    "               whose probability reaches P, 1 = all), from a generator seeded with --seed (0)\n"
    "--no-kv-cache  run the whole sequence again at every step instead of the key/value cache\n"
    "--json         one JSON object per prompt on stdout (prompt, prompt_ids, ids, text) instead\n"
    "               of the text as it comes\n"
    "--device, --dtype  where and in what the model runs (cpu, float32)\n"
    "\n"
    "Time to first token and tokens per second go to standard error at the end.\n";

double parse_double(const Options& o, const std::string& name, double fallback) {
  const std::string v = o.get(name);
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    const double d = std::stod(v, &used);
    if (used == v.size()) return d;
  } catch (const std::exception&) {
  }
  throw Error("--" + name + " " + v + " is not a number", kUsage);
}

std::vector<std::string> lines_of(std::istream& in) {
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace

int generate_command(const std::vector<std::string>& args) {
  Options o(args, {"ignore-eos", "no-kv-cache", "json"},
            {"checkpoint", "prompt", "prompt-file", "tokenizer", "max-new-tokens", "temperature", "top-k", "top-p",
             "seed", "device", "dtype"},
            kUsage);
  if (!o.positional.empty()) throw Error("unexpected argument " + o.positional[0], kUsage);
  const std::string folder = o.need("checkpoint");
  const std::string device_name = o.get("device", "cpu"), dtype_name = o.get("dtype", "float32");
  if (device_name != "cpu" && device_name != "cuda")
    throw Error("--device " + device_name + " is not a device titan generate runs on", "use cpu or cuda");
  if (device_name == "cuda" && !at::hasCUDA()) throw Error("--device cuda: no CUDA GPU is visible", "use --device cpu");
  if (dtype_name != "float32" && dtype_name != "bfloat16")
    throw Error("--dtype " + dtype_name + " is not a dtype titan generate runs in", "use float32 or bfloat16");

  generate::SamplingOptions so;
  so.max_new_tokens = o.get_int("max-new-tokens", 64);
  so.temperature = parse_double(o, "temperature", 0.0);
  so.top_k = o.get_int("top-k", 0);
  so.top_p = parse_double(o, "top-p", 1.0);
  so.seed = static_cast<uint64_t>(o.get_int("seed", 0));
  so.stop_at_eos = !o.flag("ignore-eos");
  so.use_cache = !o.flag("no-kv-cache");

  std::vector<std::string> prompts = o.get_all("prompt");
  if (const std::string file = o.get("prompt-file"); !file.empty()) {
    std::ifstream in(file);
    if (!in) throw Error("--prompt-file " + file + " cannot be read", "give a text file with one prompt per line");
    for (auto& line : lines_of(in)) prompts.push_back(std::move(line));
  }
  if (prompts.empty()) prompts = lines_of(std::cin);

  const auto model = generate::load_model(folder, at::Device(device_name == "cuda" ? at::kCUDA : at::kCPU),
                                          dtype_name == "bfloat16" ? at::kBFloat16 : at::kFloat);
  std::string tokenizer_path = o.get("tokenizer", model.tokenizer_path);
  if (tokenizer_path.empty())
    throw Error(folder + " records no tokenizer that is still there", "give --tokenizer PATH (the one it was trained with)");
  const auto tokenizer = components::build_tokenizer(tokenizer_path, "--tokenizer");

  const bool stream = !o.flag("json") && prompts.size() == 1;
  const auto on_token = [&](size_t, int64_t id) {
    if (!stream) return;
    const std::string piece = tokenizer->decode({id});
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  if (stream) {
    std::fwrite(prompts[0].data(), 1, prompts[0].size(), stdout);
    std::fflush(stdout);
  }
  const auto g = generate::generate(model, *tokenizer, prompts, so, on_token);
  if (stream) std::printf("\n");
  for (size_t i = 0; i < prompts.size() && !stream; ++i) {
    const std::string text = tokenizer->decode(g.new_ids[i]);
    if (o.flag("json")) {
      const nlohmann::json row = {{"prompt", prompts[i]}, {"prompt_ids", g.prompt_ids[i]}, {"ids", g.new_ids[i]},
                                  {"text", text}};
      std::printf("%s\n", row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("[%zu] %s%s\n", i + 1, prompts[i].c_str(), text.c_str());
    }
  }
  int64_t generated = 0;
  for (const auto& ids : g.new_ids) generated += static_cast<int64_t>(ids.size());
  std::fprintf(stderr,
               "generate: %s; %zu prompt(s), %lld new tokens; time to first token %.1f ms; %.1f tokens/s after it "
               "(%lld tokens in %.3f s); KV cache %.2f MiB\n",
               model.describe.c_str(), prompts.size(), static_cast<long long>(generated),
               g.time_to_first_token_s * 1e3, g.decode_s > 0 ? static_cast<double>(g.decode_tokens) / g.decode_s : 0.0,
               static_cast<long long>(g.decode_tokens), g.decode_s, static_cast<double>(g.kv_cache_bytes) / 1048576.0);
  return 0;
}

}  // namespace titan::apps
