// The `titan` subcommands other than train (each returns the exit code; user errors throw
// titan::Error, which main() prints and turns into exit code 2).
#pragma once

#include <exception>
#include <string>
#include <vector>

namespace titan::apps {

// Thrown when the arguments ask for --help or -h: main() prints `usage` to stdout and exits 0.
class UsageRequested : public std::exception {
 public:
  explicit UsageRequested(std::string usage) : usage_(std::move(usage)) {}
  const char* what() const noexcept override { return "usage requested"; }
  const std::string& usage() const { return usage_; }

 private:
  std::string usage_;
};

// The whole command line (the arguments after the program's name): runs the command and returns the
// process's exit code, having printed any failure (main() is this and nothing else; tests call it).
int run_cli(std::vector<std::string> args);

// Throws UsageRequested if `args` hold --help or -h anywhere.
void check_help(const std::vector<std::string>& args, const std::string& usage);

int tokenizer_command(const std::vector<std::string>& args);  // titan tokenizer ...
int data_command(const std::vector<std::string>& args);       // titan data ...
int convert_command(const std::vector<std::string>& args);    // titan convert ...
int pp_schedule_command(const std::vector<std::string>& args);  // titan pp-schedule ...
int generate_command(const std::vector<std::string>& args);     // titan generate ...

// Options of the form --name VALUE / --flag, with the positional arguments kept in order.
struct Options {
  Options(const std::vector<std::string>& args, const std::vector<std::string>& flags,
          const std::vector<std::string>& valued, const std::string& usage);
  bool flag(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::string need(const std::string& name) const;  // throws if absent
  std::vector<std::string> get_all(const std::string& name) const;  // every value given, in order
  int64_t get_int(const std::string& name, int64_t fallback) const;
  std::vector<std::string> positional;

 private:
  std::vector<std::pair<std::string, std::string>> values_;
  std::vector<std::string> flags_;
  std::string usage_;
};

}  // namespace titan::apps
