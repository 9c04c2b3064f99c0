// The `titan` command line: `titan train [--section.key value ...]`. User errors (titan::Error)
// print one message and exit 2; anything else is an internal failure and exits 1.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <c10/util/Logging.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/config/job_config.h"
#include "titan/distributed/flight_recorder.h"
#include "titan/train/options.h"
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
    "  generate --checkpoint FOLDER --prompt TEXT\n"
    "            continue text with a trained model (a step folder or a Hugging Face folder;\n"
    "            docs/generate.md)\n"
    "  convert to-hf|from-hf|from-dcp\n"
    "            a model's weights between titan.cpp checkpoints and Hugging Face folders, or\n"
    "            a torchtitan distributed checkpoint into a titan.cpp step folder\n"
    "  checkpoint info PATH\n"
    "            describe a checkpoint (a step-N folder, or the checkpoint folder: every step)\n"
    "            and verify every chunk's checksum (docs/checkpoint.md)\n"
    "  pp-schedule --schedule NAME --stages S --microbatches M\n"
    "            print a pipeline schedule's timeline per rank and its bubble fraction\n"
    "            (docs/pipeline.md)\n"
    "  comm-report FOLDER\n"
    "            after a failed multi-process run: read every rank's flight recorder in\n"
    "            FOLDER (<dump_folder>/comm_traces) and name the rank that fell behind\n"
    "  version   print the version (also --version)\n"
    "  help      print this message (also --help, -h)\n";

int train(const std::vector<std::string>& args) {
  titan::config::JobConfig cfg;
  try {
    cfg = titan::config::load_config(args);
  } catch (const titan::config::HelpRequested&) {
    std::printf("%s", titan::config::help_text().c_str());
    return 0;
  }
  if (titan::train::trainer_options(cfg).dry_run) return titan::train::dry_run(cfg);
  titan::train::run_training(cfg);
  return 0;
}

// A message with the control bytes a user's input may hold (a file name, a config value)
// shown as \xNN rather than sent to the terminal; line breaks stay.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Under torchrun, the failure for its summary: torchrun reads TORCHELASTIC_ERROR_FILE of a rank
// that exited non-zero (the format torch.distributed.elastic's @record writes), so its report
// shows this message instead of "error_file: <N/A>". titan_exit_code lets run_train.sh exit 2
// for a user's error (torchrun itself exits 1).
void write_elastic_error_file(const std::string& message, int exit_code) {
  const char* path = std::getenv("TORCHELASTIC_ERROR_FILE");
  if (!path || !*path) return;
  const nlohmann::json body = {
      {"message", {{"message", message},
                   {"extraInfo", {{"py_callstack", message}, {"timestamp", std::to_string(std::time(nullptr))}}}}},
      {"titan_exit_code", exit_code}};
  if (std::FILE* f = std::fopen(path, "w")) {
    const std::string text = body.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
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
  if (command == "generate") return titan::apps::generate_command(args);
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
  if (command == "version" || command == "--version") {
    titan::apps::check_help(args, "usage: titan version\n");
    if (!args.empty()) throw titan::Error("titan version takes no arguments", "titan version");
    std::printf("titan 0.1.0\n");
    return 0;
  }
  std::fprintf(stderr, "titan: unknown command '%s'\n\n%s", printable(command).c_str(), kUsage);
  return titan::Error::kExitCode;
}

// Prints the failure once (stderr) and hands it to the launcher; returns the exit code.
int fail(const std::string& message, int exit_code) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", message.c_str());
  write_elastic_error_file(message, exit_code);
  return exit_code;
}

}  // namespace

namespace titan::apps {

int run_cli(std::vector<std::string> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
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
    return fail("titan: error: " + printable(e.message()), e.exit_code());
  } catch (const std::bad_alloc&) {
    return fail("titan: error: out of memory\n  fix: lower training.local_batch_size or training.seq_len, use "
                "activation_checkpoint.mode = \"full\", or more ranks (--job.dry_run estimates memory)",
                titan::Error::kExitCode);
  } catch (const std::exception& e) {
    // A peer process that died mid-collective: say so, not "internal error" (its own output,
    // or its exit status, says why it ended).
    const std::string what = e.what();
    for (const char* gone : {"Connection closed by peer", "Connection reset by peer", "Broken pipe"})
      if (what.find(gone) != std::string::npos)
        return fail("titan: error: another process of this job closed its connection: it exited or was killed (" +
                        std::string(gone) + ")\n  fix: that process's output (or the launcher's summary) says why it "
                        "ended; rerun the job",
                    1);
    return fail("titan: internal error: " + printable(describe_internal(e)), 1);
  }
}

}  // namespace titan::apps
