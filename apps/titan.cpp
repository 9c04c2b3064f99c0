// The `titan` command line: `titan train [--section.key value ...]`. User errors (titan::Error)
// print one message and exit 2; anything else is an internal failure and exits 1.
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/components/checkpoint.h"
#include "titan/config/job_config.h"
#include "titan/distributed/flight_recorder.h"
#include "titan/train/trainer.h"

namespace {

const char* kUsage =
    "usage: titan <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     train a model: titan train --job.config_file configs/llama3/debug_model.toml\n"
    "            (titan train --help lists every option)\n"
    "  tokenizer encode|decode|train|info\n"
    "            run a tokenizer on text or ids, or train a byte-level BPE (docs/tokenizers.md)\n"
    "  data tokenize|batches\n"
    "            pre-tokenize text into binary shards; print the batches a config yields\n"
    "            (docs/datasets.md)\n"
    "  convert to-hf|from-hf\n"
    "            Llama 3 weights between titan.cpp checkpoints and Hugging Face folders\n"
    "  checkpoint info PATH\n"
    "            describe a checkpoint (a step-N folder, or the checkpoint folder: every step)\n"
    "            and verify every chunk's checksum (docs/checkpoint.md)\n"
    "  comm-report FOLDER\n"
    "            after a failed multi-process run: read every rank's flight recorder in\n"
    "            FOLDER (<dump_folder>/comm_traces) and name the rank that fell behind\n"
    "  version   print the version\n";

int train(const std::vector<std::string>& args) {
  titan::config::JobConfig cfg;
  try {
    cfg = titan::config::load_config(args);
  } catch (const titan::config::HelpRequested&) {
    std::printf("usage: titan train [--job.config_file FILE] [--section.key VALUE ...]\n\n%s",
                titan::config::help_text().c_str());
    return 0;
  }
  if (cfg.get_bool("job.dry_run")) return titan::train::dry_run(cfg);
  titan::train::run_training(cfg);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "train") return train(args);
    if (command == "tokenizer") return titan::apps::tokenizer_command(args);
    if (command == "data") return titan::apps::data_command(args);
    if (command == "convert") return titan::apps::convert_command(args);
    if (command == "checkpoint") {
      if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
        std::printf("usage: titan checkpoint info PATH\n");
        return 0;
      }
      if (args.size() != 2 || args[0] != "info")
        throw titan::Error("usage: titan checkpoint info PATH", "titan checkpoint info outputs/checkpoint/step-10");
      std::printf("%s", titan::components::checkpoint_info(args[1]).c_str());
      return 0;
    }
    if (command == "comm-report") {
      if (args.size() != 1) throw titan::Error("comm-report takes one folder", "titan comm-report outputs/comm_traces");
      std::printf("%s", titan::distributed::comm_report(args[0]).c_str());
      return 0;
    }
    if (command == "version") {
      std::printf("titan 0.1.0\n");
      return 0;
    }
    std::fprintf(stderr, "titan: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const titan::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "titan: error: %s\n", e.message().c_str());
    return titan::Error::kExitCode;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "titan: internal error: %s\n", e.what());
    return 1;
  }
}
