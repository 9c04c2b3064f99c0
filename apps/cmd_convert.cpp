// titan convert to-hf|from-hf|from-dcp: a registered model's weights between titan.cpp
// checkpoints and Hugging Face folders or torchtitan's checkpoints (docs/checkpoint.md).
#include <cstdio>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/train/hf_convert.h"

namespace titan::apps {

namespace {

const char* kUsage =
    "usage: titan convert to-hf STEP_FOLDER OUT_FOLDER [--dtype float32|bfloat16|float16] [--max-shard-gb N]\n"
    "                           [--tokenizer PATH] [--force]\n"
    "       titan convert from-hf HF_FOLDER OUT_STEP_FOLDER [--dtype float32|bfloat16|float16] [--force]\n"
    "       titan convert from-dcp TORCHTITAN_STEP_FOLDER OUT_STEP_FOLDER [--model NAME] [--flavor NAME] [--force]\n"
    "\n"
    "to-hf writes model.safetensors (or shards with model.safetensors.index.json) and config.json\n"
    "that transformers' AutoModelForCausalLM.from_pretrained loads, with the run's tokenizer\n"
    "(tokenizer.json, tokenizer_config.json, generation_config.json: --tokenizer, else the one\n"
    "the checkpoint's run recorded) for AutoTokenizer; from-hf writes a model-only\n"
    "checkpoint step folder that checkpoint.initial_load_path (or checkpoint.folder) loads;\n"
    "from-dcp reads a PyTorch distributed checkpoint torchtitan wrote (model, optimizer moments,\n"
    "train state) into a titan.cpp step folder (training also loads such folders directly); --model\n"
    "(model.name, default llama3) and --flavor record which model it holds.\n"
    "\n"
    "The output must be a new or empty folder. --force lets to-hf write into a folder of other\n"
    "files (same names replaced) and lets from-hf/from-dcp replace a model-only step folder; a\n"
    "training checkpoint or a checkpoint folder is never written into.\n";

std::optional<at::ScalarType> parse_dtype(const std::string& s) {
  if (s.empty()) return std::nullopt;
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  throw Error("--dtype " + s + " is not a dtype titan convert writes", "use float32, bfloat16 or float16");
}

}  // namespace

int convert_command(const std::vector<std::string>& args) {
  check_help(args, kUsage);
  if (args.empty()) throw Error("titan convert needs a conversion", kUsage);
  Options o(std::vector<std::string>(args.begin() + 1, args.end()), {"force"}, {"dtype", "max-shard-gb", "model", "flavor", "tokenizer"}, kUsage);
  if (o.positional.size() != 2) throw Error("titan convert " + args[0] + " takes two folders", kUsage);
  const auto dtype = parse_dtype(o.get("dtype"));
  const bool known = args[0] == "to-hf" || args[0] == "from-hf" || args[0] == "from-dcp";
  const bool replace =
      known && components::check_convert_output(o.positional[1], o.flag("force"), /*step_folder=*/args[0] != "to-hf");
  if (args[0] == "to-hf") {
    const int64_t gb = o.get_int("max-shard-gb", 5);
    if (gb < 1) throw Error("--max-shard-gb must be at least 1", kUsage);
    std::string tokenizer = o.get("tokenizer");
    if (tokenizer.empty()) tokenizer = train::recorded_tokenizer(o.positional[0]);
    train::convert_to_hf(o.positional[0], o.positional[1], dtype, gb << 30, train::stderr_progress("to-hf"), tokenizer);
    if (tokenizer.empty())
      std::printf("wrote %s (transformers: AutoModelForCausalLM.from_pretrained(\"%s\")); no tokenizer: the checkpoint "
                  "records none that is still there, give --tokenizer PATH for AutoTokenizer\n",
                  o.positional[1].c_str(), o.positional[1].c_str());
    else
      std::printf("wrote %s with the tokenizer of %s (transformers: AutoTokenizer and AutoModelForCausalLM."
                  "from_pretrained(\"%s\"))\n",
                  o.positional[1].c_str(), tokenizer.c_str(), o.positional[1].c_str());
    return 0;
  }
  if (args[0] == "from-hf") {
    train::convert_from_hf(o.positional[0], o.positional[1], dtype, train::stderr_progress("from-hf"), replace);
    std::printf("wrote %s (train from it: --checkpoint.enable --checkpoint.initial_load_path %s)\n",
                o.positional[1].c_str(), o.positional[1].c_str());
    return 0;
  }
  if (args[0] == "from-dcp") {
    train::convert_from_dcp(o.positional[0], o.positional[1], o.get("model").empty() ? "llama3" : o.get("model"),
                           o.get("flavor"), train::stderr_progress("from-dcp"), replace);
    std::printf("wrote %s\n", o.positional[1].c_str());
    return 0;
  }
  throw Error("titan convert " + args[0] + " is not a conversion", kUsage);
}

}  // namespace titan::apps
