// The `titan` subcommands other than train (each returns the exit code; user errors throw
// titan::Error, which main() prints and turns into exit code 2).
#pragma once

#include <string>
#include <vector>

namespace titan::apps {

int tokenizer_command(const std::vector<std::string>& args);  // titan tokenizer ...
int data_command(const std::vector<std::string>& args);       // titan data ...
int convert_command(const std::vector<std::string>& args);    // titan convert ...

// Options of the form --name VALUE / --flag, with the positional arguments kept in order.
struct Options {
  Options(const std::vector<std::string>& args, const std::vector<std::string>& flags,
          const std::vector<std::string>& valued, const std::string& usage);
  bool flag(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::string need(const std::string& name) const;  // throws if absent
  int64_t get_int(const std::string& name, int64_t fallback) const;
  std::vector<std::string> positional;

 private:
  std::vector<std::pair<std::string, std::string>> values_;
  std::vector<std::string> flags_;
  std::string usage_;
};

}  // namespace titan::apps
