// Loading a JobConfig: type checks and bounds from the schema, TOML documents walked table by table
// with file:line in every message, and `--section.key` flags parsed the way torchtitan's tyro CLI
// reads them (flags, --no- negation, comma-separated lists, None for optional values).
#include "titan/config/job_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "titan/common/error.h"

namespace titan::config {
namespace {

using Strings = std::vector<std::string>;
using StringLists = std::vector<Strings>;

const KeySpec& spec_at(size_t index) { return schema()[index]; }

std::string format_number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 1e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  return format_value(v);
}

// ">= 1", "in [0, 1]", "> 0", ">= -1 and not 0".
std::string bounds_text(const KeySpec& spec) {
  auto is_excluded = [&](double x) {
    return std::find(spec.excluded.begin(), spec.excluded.end(), x) != spec.excluded.end();
  };
  bool strict_min = spec.min && is_excluded(*spec.min);
  std::string text;
  if (spec.min && spec.max) {
    text = std::string(strict_min ? "in (" : "in [") + format_number(*spec.min) + ", " +
           format_number(*spec.max) + "]";
  } else if (spec.min) {
    text = (strict_min ? "> " : ">= ") + format_number(*spec.min);
  } else if (spec.max) {
    text = "<= " + format_number(*spec.max);
  }
  for (double x : spec.excluded) {
    if (!(spec.min && x == *spec.min)) {
      text += (text.empty() ? "not " : " and not ") + format_number(x);
    }
  }
  return text;
}

std::string join(const Strings& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

// The value with its kind, for "got ..." in messages.
std::string describe(const Value& value) {
  static const char* kKinds[] = {"", "bool ", "int ", "float ", "string ", "list ", "list "};
  return kKinds[value.index()] + format_value(value);
}

// The problem with a well-typed value (choices, bounds, extra rule), or "" if it is fine.
std::string check_value(const KeySpec& spec, const Value& value) {
  std::optional<double> number;
  if (auto* i = std::get_if<int64_t>(&value)) number = static_cast<double>(*i);
  if (auto* d = std::get_if<double>(&value)) number = *d;
  if (number) {
    bool bad = (spec.min && !(*number >= *spec.min)) || (spec.max && !(*number <= *spec.max));
    for (double x : spec.excluded) bad = bad || *number == x;
    if (bad) return "must be " + bounds_text(spec);
  }
  if (auto* s = std::get_if<std::string>(&value)) {
    if (!spec.choices.empty() &&
        std::find(spec.choices.begin(), spec.choices.end(), *s) == spec.choices.end()) {
      return "must be one of: " + join(spec.choices, ", ");
    }
    if (spec.check) return spec.check(*s);
  }
  return "";
}

// `v` converted to the key's type, or nullopt when it cannot represent one.
std::optional<Value> coerce(const KeySpec& spec, Value v) {
  bool none = std::holds_alternative<std::monostate>(v);
  switch (spec.type) {
    case Type::Bool:
      if (std::holds_alternative<bool>(v)) return v;
      break;
    case Type::OptInt:
      if (none) return v;
      [[fallthrough]];
    case Type::Int:
      if (std::holds_alternative<int64_t>(v)) return v;
      break;
    case Type::OptFloat:
      if (none) return v;
      [[fallthrough]];
    case Type::Float:
      if (std::holds_alternative<double>(v)) return v;
      if (auto* i = std::get_if<int64_t>(&v)) return Value(static_cast<double>(*i));
      break;
    case Type::OptString:
      if (none) return v;
      [[fallthrough]];
    case Type::String:
      if (std::holds_alternative<std::string>(v)) return v;
      break;
    case Type::StringList:
      if (std::holds_alternative<Strings>(v)) return v;
      break;
    case Type::StringListList:
      if (none) return Value(StringLists{});
      if (std::holds_alternative<StringLists>(v)) return v;
      break;
  }
  return std::nullopt;
}

std::string fix_for(const KeySpec& spec) {
  if (!spec.choices.empty()) {
    return "use one of: " + join(spec.choices, ", ") +
           (spec.type == Type::OptString ? ", None" : "");
  }
  std::string fix = "give " + spec.name + " a value of type " + type_name(spec.type);
  std::string bounds = bounds_text(spec);
  if (!bounds.empty()) fix += ", " + bounds;
  return fix + " (default: " + format_value(spec.default_value) + ")";
}

// config.set(), with `where` ("file:line: " or "--flag: ") in front of any message.
void set_at(JobConfig& config, const KeySpec& spec, Value value, const std::string& where,
            std::string source) {
  try {
    config.set(spec.name, std::move(value), std::move(source));
  } catch (const Error& e) {
    throw Error(where + e.what(), e.fix());
  }
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

bool is_none_text(const std::string& text) { return text == "None" || text == "none"; }

bool is_optional(Type type) {
  return type == Type::OptString || type == Type::OptInt || type == Type::OptFloat ||
         type == Type::StringListList;
}

// ---- TOML ----------------------------------------------------------------------------------

std::string describe_node(const toml::node& node) {
  if (auto* s = node.as_string()) return "string " + format_value(s->get());
  if (auto* i = node.as_integer()) return "int " + std::to_string(i->get());
  if (auto* d = node.as_floating_point()) return "float " + format_value(d->get());
  if (auto* b = node.as_boolean()) return b->get() ? "bool true" : "bool false";
  if (node.is_array()) return "an array";
  if (node.is_table()) return "a table";
  return "a date/time";
}

// A TOML array of strings, or nullopt with `problem` set.
std::optional<Strings> strings_of(const toml::node& node, std::string& problem) {
  const toml::array* array = node.as_array();
  if (!array) {
    problem = describe_node(node);
    return std::nullopt;
  }
  Strings out;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    if (!element.is_string()) {
      problem = "an array whose element " + std::to_string(i) + " is " + describe_node(element);
      return std::nullopt;
    }
    out.push_back(element.as_string()->get());
  }
  return out;
}

Strings split(const std::string& text, char separator) {
  Strings out;
  if (text.empty()) return out;
  std::string item;
  std::istringstream in(text + separator);
  while (std::getline(in, item, separator)) {
    size_t first = item.find_first_not_of(" \t");
    size_t last = item.find_last_not_of(" \t");
    out.push_back(first == std::string::npos ? "" : item.substr(first, last - first + 1));
  }
  return out;
}

Value value_from_node(const KeySpec& spec, const toml::node& node, const std::string& where) {
  std::string problem;
  if (auto* s = node.as_string(); s && is_none_text(s->get()) && is_optional(spec.type)) {
    return std::monostate{};  // TOML has no null; "None" stands for it as on the command line
  }
  switch (spec.type) {
    case Type::Bool:
      if (auto* b = node.as_boolean()) return b->get();
      break;
    case Type::Int:
    case Type::OptInt:
      if (auto* i = node.as_integer()) return i->get();
      break;
    case Type::Float:
    case Type::OptFloat:
      if (auto* i = node.as_integer()) return static_cast<double>(i->get());
      if (auto* d = node.as_floating_point()) return d->get();
      break;
    case Type::String:
    case Type::OptString:
      if (auto* s = node.as_string()) return s->get();
      break;
    case Type::StringList:
      if (auto* s = node.as_string(); s && spec.accepts_string) return split(s->get(), ',');
      if (auto list = strings_of(node, problem)) return *list;
      break;
    case Type::StringListList:
      if (auto* array = node.as_array()) {
        StringLists out;
        for (size_t i = 0; i < array->size() && problem.empty(); ++i) {
          if (auto inner = strings_of(*array->get(i), problem)) out.push_back(*inner);
        }
        if (problem.empty()) return out;
        problem = "an array whose element is " + problem;
      }
      break;
  }
  if (problem.empty()) problem = describe_node(node);
  throw Error(where + spec.name + ": expected " + type_name(spec.type) + ", got " + problem,
              fix_for(spec));
}

void merge_table(JobConfig& config, const toml::table& table, const std::string& prefix,
                 const std::string& file) {
  for (auto&& [key, node] : table) {
    std::string name =
        prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    std::string where = file + ":" + std::to_string(key.source().begin.line) + ": ";
    if (const KeySpec* spec = find_key(name)) {
      Value value = value_from_node(*spec, node, where);
      set_at(config, *spec, std::move(value), where, where.substr(0, where.size() - 2));
    } else if (is_section_prefix(name)) {
      if (!node.is_table()) {
        throw Error(where + "'" + name + "' is a section, not a key",
                    "write its keys under a [" + name + "] table");
      }
      merge_table(config, *node.as_table(), name, file);
    } else if (node.is_table()) {
      std::string hint = suggest_name(name, true);
      throw Error(where + "unknown section [" + name + "]" +
                      (hint.empty() ? "" : " (did you mean [" + hint + "]?)"),
                  "rename or remove it; `titan train --help` lists every section and key");
    } else {
      std::string hint = suggest_name(name);
      throw Error(where + "unknown key '" + name + "'" +
                      (hint.empty() ? "" : " (did you mean '" + hint + "'?)"),
                  "rename or remove it; `titan train --help` lists every key");
    }
  }
}

// ---- command line --------------------------------------------------------------------------

std::optional<int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  int64_t out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return out;
}

std::optional<double> parse_float(std::string_view text) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  double out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return out;
}

Value value_from_text(const KeySpec& spec, const std::string& text, const std::string& flag) {
  if (is_optional(spec.type) && is_none_text(text)) return std::monostate{};
  auto bad = [&](const std::string& expected) {
    return Error(flag + ": '" + text + "' is not " + expected, fix_for(spec));
  };
  switch (spec.type) {
    case Type::Bool: {
      std::string t = lower(text);
      if (t == "true" || t == "1" || t == "yes") return true;
      if (t == "false" || t == "0" || t == "no") return false;
      throw bad("a boolean (true or false)");
    }
    case Type::Int:
    case Type::OptInt:
      if (auto i = parse_int(text)) return *i;
      throw bad("an integer");
    case Type::Float:
    case Type::OptFloat:
      if (auto d = parse_float(text)) return *d;
      throw bad("a number");
    case Type::String:
    case Type::OptString:
      return text;
    case Type::StringList:
      return split(text, ',');
    case Type::StringListList: {
      StringLists out;
      for (const std::string& group : split(text, ';')) out.push_back(split(group, ','));
      return out;
    }
  }
  throw std::logic_error("unhandled config type");
}

struct FlagValue {
  const KeySpec* spec;
  Value value;
};

// Resolves a flag body ("training.steps", "no-metrics.enable_tensorboard", "job.config-file") to
// its key; sets `negated` for the --no- forms of a boolean key.
const KeySpec* resolve_flag(std::string name, bool& negated) {
  std::replace(name.begin(), name.end(), '-', '_');
  negated = false;
  if (const KeySpec* spec = find_key(name)) return spec;
  const KeySpec* spec = nullptr;
  if (name.starts_with("no_")) spec = find_key(name.substr(3));  // --no-section.key
  size_t dot = name.rfind('.');
  if (!spec && dot != std::string::npos && name.compare(dot + 1, 3, "no_") == 0) {
    spec = find_key(name.substr(0, dot + 1) + name.substr(dot + 4));  // --section.no-key (tyro)
  }
  negated = spec != nullptr;
  return spec;
}

std::vector<FlagValue> parse_flags(const std::vector<std::string>& args) {
  std::vector<FlagValue> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!arg.starts_with("--") || arg.size() == 2) {
      std::string fix = "flags look like --section.key VALUE or --section.key=VALUE";
      bool after_bool_flag = i > 0 && args[i - 1].starts_with("--") &&
                             args[i - 1].find('=') == std::string::npos &&
                             (lower(arg) == "true" || lower(arg) == "false");
      if (arg.ends_with(".toml")) fix = "to load a config file, write --job.config_file " + arg;
      if (after_bool_flag) {
        fix = "boolean flags take no separate value: write " + args[i - 1] + "=" + arg;
      }
      throw Error(arg.starts_with("-") && arg != "-" ? "unknown flag '" + arg + "'"
                                                     : "unexpected argument '" + arg + "'",
                  fix);
    }
    size_t eq = arg.find('=');
    std::string body = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    std::optional<std::string> text;
    if (eq != std::string::npos) text = arg.substr(eq + 1);
    bool negated = false;
    const KeySpec* spec = resolve_flag(body, negated);
    if (!spec) {
      std::string normalized = body;
      std::replace(normalized.begin(), normalized.end(), '-', '_');
      if (normalized.starts_with("no_")) normalized = normalized.substr(3);
      std::string hint = suggest_name(normalized);
      throw Error("unknown flag '--" + body + "'" +
                      (hint.empty() ? "" : " (did you mean '--" + hint + "'?)"),
                  "`titan train --help` lists every flag");
    }
    std::string flag = "--" + spec->name;
    if (negated && spec->type != Type::Bool) {
      throw Error("'" + arg + "': only boolean keys have a --no- form, and " + spec->name + " is " +
                      type_name(spec->type),
                  "write " + flag + " VALUE");
    }
    if (negated) {
      if (text) throw Error("'" + arg + "' takes no value", "write --no-" + spec->name + " alone");
      out.push_back({spec, false});
      continue;
    }
    if (spec->type == Type::Bool && !text) {
      out.push_back({spec, true});
      continue;
    }
    if (!text) {
      if (i + 1 >= args.size() || args[i + 1].starts_with("--")) {
        throw Error(flag + " needs a value", "write " + flag + " VALUE or " + flag +
                                                 "=VALUE (the =VALUE form also "
                                                 "takes values that start with --)");
      }
      text = args[++i];
    }
    out.push_back({spec, value_from_text(*spec, *text, flag)});
  }
  return out;
}

}  // namespace

// ---- JobConfig -----------------------------------------------------------------------------

JobConfig::JobConfig() {
  for (const KeySpec& spec : schema()) {
    values_.push_back(spec.default_value);
    sources_.push_back("default");
  }
}

size_t JobConfig::index_of(std::string_view name, Type expected) const {
  auto index = key_index(name);
  if (!index) throw std::logic_error("JobConfig: no config key named '" + std::string(name) + "'");
  Type actual = spec_at(*index).type;
  if (actual != expected) {
    throw std::logic_error("JobConfig: key '" + std::string(name) + "' has type " +
                           type_name(actual) + ", read as " + type_name(expected));
  }
  return *index;
}

bool JobConfig::get_bool(std::string_view name) const {
  return std::get<bool>(values_[index_of(name, Type::Bool)]);
}

int64_t JobConfig::get_int(std::string_view name) const {
  return std::get<int64_t>(values_[index_of(name, Type::Int)]);
}

double JobConfig::get_float(std::string_view name) const {
  return std::get<double>(values_[index_of(name, Type::Float)]);
}

const std::string& JobConfig::get_string(std::string_view name) const {
  return std::get<std::string>(values_[index_of(name, Type::String)]);
}

std::optional<std::string> JobConfig::get_opt_string(std::string_view name) const {
  const Value& v = values_[index_of(name, Type::OptString)];
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  return std::nullopt;
}

std::optional<int64_t> JobConfig::get_opt_int(std::string_view name) const {
  const Value& v = values_[index_of(name, Type::OptInt)];
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  return std::nullopt;
}

std::optional<double> JobConfig::get_opt_float(std::string_view name) const {
  const Value& v = values_[index_of(name, Type::OptFloat)];
  if (auto* d = std::get_if<double>(&v)) return *d;
  return std::nullopt;
}

const std::vector<std::string>& JobConfig::get_list(std::string_view name) const {
  return std::get<Strings>(values_[index_of(name, Type::StringList)]);
}

const std::vector<std::vector<std::string>>& JobConfig::get_list_list(std::string_view name) const {
  return std::get<StringLists>(values_[index_of(name, Type::StringListList)]);
}

const Value& JobConfig::get(std::string_view name) const {
  auto index = key_index(name);
  if (!index) throw std::logic_error("JobConfig: no config key named '" + std::string(name) + "'");
  return values_[*index];
}

bool JobConfig::is_default(std::string_view name) const {
  return get(name) == find_key(name)->default_value;
}

std::string JobConfig::source(std::string_view name) const {
  get(name);  // throws for unknown names
  return sources_[*key_index(name)];
}

void JobConfig::set(std::string_view name, Value v) {
  set(name, std::move(v), "set by the program");
}

void JobConfig::set(std::string_view name, Value v, std::string source) {
  auto index = key_index(name);
  if (!index) throw std::logic_error("JobConfig: no config key named '" + std::string(name) + "'");
  const KeySpec& spec = spec_at(*index);
  std::optional<Value> typed = coerce(spec, v);
  if (!typed) {
    throw Error(spec.name + ": expected " + type_name(spec.type) + ", got " + describe(v),
                fix_for(spec));
  }
  std::string problem = check_value(spec, *typed);
  if (!problem.empty()) {
    throw Error(spec.name + " = " + format_value(*typed) + ": " + problem, fix_for(spec));
  }
  values_[*index] = std::move(*typed);
  sources_[*index] = std::move(source);
}

std::string JobConfig::to_toml() const {
  std::string out =
      "# titan.cpp job config: every key with its resolved value (load with --job.config_file)\n";
  std::string_view section;
  for (size_t i = 0; i < schema().size(); ++i) {
    const KeySpec& spec = spec_at(i);
    if (section_of(spec.name) != section) {
      section = section_of(spec.name);
      out += "\n[" + std::string(section) + "]\n";
    }
    std::string leaf = spec.name.substr(section.size() + 1);
    const Value& value = values_[i];
    bool none = std::holds_alternative<std::monostate>(value) ||
                (spec.type == Type::StringListList && std::get<StringLists>(value).empty());
    bool default_none = spec.type == Type::StringListList ||
                        std::holds_alternative<std::monostate>(spec.default_value);
    if (none && default_none) {
      out += "# " + leaf + " = None\n";
    } else if (none) {
      out += leaf + " = \"None\"\n";
    } else {
      out += leaf + " = " + format_value(value) + "\n";
    }
  }
  return out;
}

// ---- loading -------------------------------------------------------------------------------

void merge_toml(JobConfig& config, std::string_view toml_text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    throw Error(source_name + ":" + std::to_string(begin.line) + ":" +
                    std::to_string(begin.column) +
                    ": invalid TOML: " + std::string(e.description()),
                "fix the syntax at that position (TOML syntax: https://toml.io/en/v1.0.0)");
  }
  merge_table(config, root, "", source_name);
}

void merge_toml_file(JobConfig& config, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw Error("config file '" + path + "' does not exist",
                "check the path given to --job.config_file (a relative path is taken from the "
                "current directory, " +
                    fs::current_path(ec).string() + ")");
  }
  if (fs::is_directory(path, ec)) {
    throw Error("config file '" + path + "' is a directory",
                "give --job.config_file a .toml file, e.g. configs/llama3/debug_model.toml");
  }
  // A regular file of reasonable size: /dev/zero would grow without end, a FIFO would hang.
  constexpr uintmax_t kMaxConfigBytes = 16u << 20;
  if (!fs::is_regular_file(path, ec))
    throw Error("config file '" + path + "' is not a regular file (a device, a pipe or a socket)",
                "give --job.config_file a .toml file, e.g. configs/llama3/debug_model.toml");
  if (fs::file_size(path, ec) > kMaxConfigBytes)
    throw Error("config file '" + path + "' has " + std::to_string(fs::file_size(path, ec)) +
                    " bytes, more than a config holds (16 MiB at most)",
                "give --job.config_file a .toml file, e.g. configs/llama3/debug_model.toml");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) throw Error("cannot read config file '" + path + "'", "check the file's permissions");
  merge_toml(config, text.str(), path);
}

JobConfig load_config(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") throw HelpRequested();
  }
  std::vector<FlagValue> flags = parse_flags(args);
  JobConfig config;
  std::optional<std::string> config_file;
  for (const FlagValue& flag : flags) {
    if (flag.spec->name == "job.config_file") {
      auto* path = std::get_if<std::string>(&flag.value);
      config_file = path ? std::optional(*path) : std::nullopt;
    }
  }
  if (config_file) merge_toml_file(config, *config_file);
  for (FlagValue& flag : flags) {
    std::string name = "--" + flag.spec->name;
    set_at(config, *flag.spec, std::move(flag.value), name + ": ", name);
  }
  return config;
}

std::string help_text() {
  std::string out =
      "usage: titan train [--job.config_file FILE.toml] [--section.key VALUE]...\n"
      "\n"
      "Values come from, highest first: command-line flags, the TOML file named by\n"
      "--job.config_file, then the defaults below. --section.key=VALUE also works.\n"
      "Booleans: --section.key sets true, --no-section.key sets false (or =true/=false).\n"
      "Lists: comma-separated, a,b,c (\"\" is empty); list[list[str]]: groups split by ';'.\n"
      "Optional values (| None) take None. '-' and '_' are interchangeable in flag names.\n"
      "--job.print_config prints the resolved config; --job.save_config_file writes it.\n";
  std::string_view section;
  for (const KeySpec& spec : schema()) {
    if (section_of(spec.name) != section) {
      section = section_of(spec.name);
      out += "\n[" + std::string(section) + "]\n";
    }
    out += spec.type == Type::Bool ? "  --[no-]" : "  --";
    out += spec.name;
    out += "  ";
    if (spec.choices.empty()) {
      out += type_name(spec.type);
    } else {
      out += '{';
      out += join(spec.choices, ",");
      out += '}';
      if (spec.type == Type::OptString) out += " | None";
    }
    if (spec.accepts_string) out += " | str";
    out += " (default: ";
    out += spec.type == Type::StringListList ? "None" : format_value(spec.default_value);
    std::string bounds = bounds_text(spec);
    if (!bounds.empty()) out += "; " + bounds;
    out += ")\n      ";
    out += spec.help;
    out += "\n";
  }
  return out;
}

}  // namespace titan::config
