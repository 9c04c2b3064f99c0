// JobConfig: the resolved value of every schema key, where each value came from, and the loaders
// that build it: defaults < TOML file (`--job.config_file`) < `--section.key` flags. Every user
// mistake becomes one titan::Error naming the file:line or flag, the key, the value and the fix.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "titan/config/schema.h"

namespace titan::config {

// Thrown by load_config when the arguments hold --help or -h: print help_text() and exit 0.
class HelpRequested : public std::exception {
 public:
  const char* what() const noexcept override { return "help requested"; }
};

class JobConfig {
 public:
  JobConfig();  // all defaults

  // Typed getters. A name not in the schema, or a getter that does not match the key's type, is a
  // programming error: std::logic_error.
  bool get_bool(std::string_view name) const;
  int64_t get_int(std::string_view name) const;
  double get_float(std::string_view name) const;  // Float keys
  const std::string& get_string(std::string_view name) const;
  std::optional<std::string> get_opt_string(std::string_view name) const;
  std::optional<int64_t> get_opt_int(std::string_view name) const;
  std::optional<double> get_opt_float(std::string_view name) const;
  const std::vector<std::string>& get_list(std::string_view name) const;  // StringList keys
  const std::vector<std::vector<std::string>>& get_list_list(
      std::string_view name) const;  // StringListList keys (empty = None)
  const Value& get(std::string_view name) const;

  bool is_default(std::string_view name) const;  // value equals the schema default
  // "default", "<file>:<line>", "--section.key", or what the 3-argument set() was given.
  std::string source(std::string_view name) const;

  // Checks `v` against the key's type (an int is fine for a float key; None for an optional one),
  // choices and bounds; throws titan::Error when it does not fit, std::logic_error for an unknown
  // name. The 2-argument form records the source as "set by the program".
  void set(std::string_view name, Value v);
  void set(std::string_view name, Value v, std::string source);

  // The full config as TOML: every key, one table per section, in schema order. None values whose
  // default is None are written as comments (TOML has no null); other None values as "None".
  // Loading the text back gives an equal config.
  std::string to_toml() const;

  // Same values for every key (sources are not compared).
  bool operator==(const JobConfig& other) const { return values_ == other.values_; }

 private:
  size_t index_of(std::string_view name, Type expected) const;

  std::vector<Value> values_;  // parallel to schema()
  std::vector<std::string> sources_;
};

// Parses the arguments after the subcommand, e.g. {"--job.config_file", "x.toml",
// "--training.steps=5", "--no-metrics.enable_tensorboard"}. Precedence: flags > TOML file >
// defaults; among flags the last one wins. Throws HelpRequested for --help/-h and titan::Error for
// every user error.
JobConfig load_config(const std::vector<std::string>& args);

// Applies the keys of a TOML document to `config` (what load_config does with the config file).
// `source_name` names the document in messages and in source(): "<source_name>:<line>".
void merge_toml(JobConfig& config, std::string_view toml_text, const std::string& source_name);
// Reads `path` and merges it; a missing or unreadable file is a titan::Error.
void merge_toml_file(JobConfig& config, const std::string& path);

// `titan train --help`: usage, then every key with type, default and one-line help, by section.
std::string help_text();

}  // namespace titan::config
