// titan::Error: the one exception type for things a user can fix (bad config, bad data,
// bad layout). It carries what went wrong and what to do; the CLI prints it once and exits
// with code 2. Anything else escaping to the CLI is an internal failure (exit code 1).
#pragma once

#include <stdexcept>
#include <string>

namespace titan {

class Error : public std::runtime_error {
 public:
  // `what`: the problem, naming the file/key/value. `fix`: what the user should do (may be empty).
  explicit Error(const std::string& what, std::string fix = {})
      : std::runtime_error(what), fix_(std::move(fix)) {}

  const std::string& fix() const { return fix_; }
  // 2 for a user's mistake; 1 for a run that failed on its own (e.g. a non-finite loss).
  int exit_code() const { return exit_code_; }
  Error& with_exit_code(int code) {
    exit_code_ = code;
    return *this;
  }

  // The message as the CLI prints it: "<what>" or "<what>\n  fix: <fix>".
  std::string message() const {
    return fix_.empty() ? std::string(what()) : std::string(what()) + "\n  fix: " + fix_;
  }

  static constexpr int kExitCode = 2;

 private:
  std::string fix_;
  int exit_code_ = kExitCode;
};

}  // namespace titan
