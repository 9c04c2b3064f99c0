// The `titan` command line: `titan train [--section.key value ...]`. User errors (titan::Error)
// print one message and exit 2; anything else is an internal failure and exits 1.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
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
    "  pp-schedule --schedule NAME --stages S --microbatches M\n"
    "            print a pipeline schedule's timeline per rank and its bubble fraction\n"
    "            (docs/pipeline.md)\n"
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

// A libtorch error's text without its C++ backtrace, unless TITAN_BACKTRACE=1 asks for it.
std::string describe_internal(const std::exception& e) {
  const char* want = std::getenv("TITAN_BACKTRACE");
  const bool backtrace = want && std::string(want) == "1";
  if (const auto* c = dynamic_cast<const c10::Error*>(&e); c && !backtrace) {
    std::string msg = c->what_without_backtrace();
    return msg + "\n  (TITAN_BACKTRACE=1 prints where it happened)";
  }
  return e.what();
}

int run_command(const std::string& command, const std::vector<std::string>& args) {
  if (command == "train") return train(args);
  if (command == "tokenizer") return titan::apps::tokenizer_command(args);
  if (command == "data") return titan::apps::data_command(args);
  if (command == "convert") return titan::apps::convert_command(args);
  if (command == "pp-schedule") return titan::apps::pp_schedule_command(args);
  if (command == "checkpoint") {
    const char* usage = "usage: titan checkpoint info PATH\n";
    titan::apps::check_help(args, usage);
    if (args.size() != 2 || args[0] != "info")
      throw titan::Error("titan checkpoint takes `info PATH`", "titan checkpoint info outputs/checkpoint/step-10");
    std::printf("%s", titan::components::checkpoint_info(args[1]).c_str());
    return 0;
  }
  if (command == "comm-report") {
    titan::apps::check_help(args, "usage: titan comm-report FOLDER   (FOLDER: <dump_folder>/comm_traces)\n");
    if (args.size() != 1) throw titan::Error("comm-report takes one folder", "titan comm-report outputs/comm_traces");
    std::printf("%s", titan::distributed::comm_report(args[0]).c_str());
    return 0;
  }
  if (command == "version") {
    titan::apps::check_help(args, "usage: titan version\n");
    if (!args.empty()) throw titan::Error("titan version takes no arguments", "titan version");
    std::printf("titan 0.1.0\n");
    return 0;
  }
  std::fprintf(stderr, "titan: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return titan::Error::kExitCode;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? titan::Error::kExitCode : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    return run_command(command, args);
  } catch (const titan::apps::UsageRequested& u) {
    std::fputs(u.usage().c_str(), stdout);
    if (!u.usage().empty() && u.usage().back() != '\n') std::fputc('\n', stdout);
    return 0;
  } catch (const titan::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "titan: error: %s\n", e.message().c_str());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "titan: error: out of memory\n  fix: lower training.local_batch_size or training.seq_len, "
                         "use activation_checkpoint.mode = \"full\", or more ranks (--job.dry_run estimates memory)\n");
    return titan::Error::kExitCode;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "titan: internal error: %s\n", describe_internal(e).c_str());
    return 1;
  }
}
