// Every command's --help and -h, in one process (the command line is a library; the program's
// main() only calls it): one usage line on stdout, nothing on stderr, exit 0. Unknown options exit
// 2 naming the option. integration.hostile checks the program itself for a few of them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/commands.h"

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result cli(std::vector<std::string> args) {
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int code = titan::apps::run_cli(std::move(args));
  std::string out = testing::internal::GetCapturedStdout(), err = testing::internal::GetCapturedStderr();
  return {code, out, err};
}

size_t count_usage(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t n = 0;
  for (size_t at = s.find("usage:"); at != std::string::npos; at = s.find("usage:", at + 1)) ++n;
  return n;
}

}  // namespace

TEST(Cli, EveryCommandPrintsOneUsageForHelp) {
  const std::vector<std::vector<std::string>> commands = {
      {"train"}, {"tokenizer"}, {"tokenizer", "encode"}, {"data"}, {"data", "tokenize"}, {"data", "batches"},
      {"convert"}, {"convert", "to-hf"}, {"checkpoint"}, {"checkpoint", "info"}, {"comm-report"},
      {"pp-schedule"}, {"generate"}, {"version"}, {}};
  for (const auto& command : commands)
    for (const char* flag : {"--help", "-h"}) {
      std::vector<std::string> args = command;
      args.push_back(flag);
      std::string name = "titan";
      for (const auto& a : args) name += " " + a;
      const Result r = cli(args);
      EXPECT_EQ(r.code, 0) << name;
      EXPECT_EQ(count_usage(r.out), 1u) << name << ": " << r.out.substr(0, 200);
      EXPECT_EQ(r.err, "") << name;
    }
}

TEST(Cli, UnknownOptionsExitTwoNamingThem) {
  const std::vector<std::vector<std::string>> commands = {
      {"tokenizer", "info", "--bogus"}, {"data", "tokenize", "--bogus"}, {"convert", "to-hf", "a", "b", "--bogus"},
      {"pp-schedule", "--bogus"}, {"train", "--bogus.key", "1"}};
  for (const auto& args : commands) {
    const Result r = cli(args);
    EXPECT_EQ(r.code, 2) << args[0];
    EXPECT_NE(r.err.find("bogus"), std::string::npos) << args[0] << ": " << r.err;
    EXPECT_EQ(count_usage(r.err + r.out) <= 1, true) << args[0];
  }
}
