// The one table of every job-config section and key: name, type, default, allowed values and a
// one-line help. TOML loading, `--section.key` flags, `--help`, validation and `to_toml()` are all
// driven by it. It mirrors torchtitan v0.2.2's JobConfig dataclasses key for key, in their order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace titan::config {

// Python annotation ↔ Type: bool, int, `float | int` (Float), str, `str | None` (OptString),
// `int | None`, `float | None`, `list[str]` (also `list[str] | str`), `list[list[str]] | None`
// (StringListList, where None is the empty list).
enum class Type {
  Bool,
  Int,
  Float,
  String,
  OptString,
  OptInt,
  OptFloat,
  StringList,
  StringListList
};

// std::monostate is Python's None.
using Value = std::variant<std::monostate, bool, int64_t, double, std::string,
                           std::vector<std::string>, std::vector<std::vector<std::string>>>;

// A string rule that ranges cannot express; returns the problem, or "" when the value is fine.
using StringCheck = std::string (*)(const std::string& value);

struct KeySpec {
  std::string name;  // full dotted name, e.g. "training.seq_len", "quantize.linear.float8.emulate"
  Type type;
  Value default_value;
  std::vector<std::string> choices = {};  // allowed strings for Literal types, empty = any
  std::optional<double> min =
      std::nullopt;       // numeric lower bound (inclusive), where one makes sense
  std::string help = {};  // one line
  // Additions beyond the core fields:
  std::optional<double> max = std::nullopt;  // numeric upper bound (inclusive)
  std::vector<double> excluded = {};         // numbers refused although inside [min, max]
  bool accepts_string = false;  // `list[str] | str`: a plain string is taken as "a,b" -> [a, b]
  StringCheck check = nullptr;  // extra rule for string values
};

// Every key of torchtitan v0.2.2's JobConfig, in its declaration order; sections are contiguous.
const std::vector<KeySpec>& schema();

// The spec of a full dotted key name; nullptr if there is no such key.
const KeySpec* find_key(std::string_view name);

// Position of `name` in schema(); nullopt if unknown.
std::optional<size_t> key_index(std::string_view name);

// Section part of a key: "training.dataloader" for "training.dataloader.num_workers".
std::string_view section_of(std::string_view key_name);

// Every section that holds keys, in schema order ("job", ..., "training", "training.dataloader").
const std::vector<std::string>& sections();

// True if `name` is a section or a parent of one ("quantize", "quantize.linear", ...).
bool is_section_prefix(std::string_view name);

// Python-style name of a type: "int", "str | None", "list[str]", ...
std::string type_name(Type type);

// A value as it is written in TOML ("0.0008", "\"./outputs\"", "[\"model\", \"loss\"]", true);
// None is written `None`.
std::string format_value(const Value& value);

// The closest key (or section, when `sections_only`) to a misspelt name; "" if none is close.
std::string suggest_name(std::string_view name, bool sections_only = false);

}  // namespace titan::config
