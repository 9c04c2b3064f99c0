// Whole-file reads and atomic writes, with titan::Error messages that name the file.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "titan/common/error.h"

namespace titan {

// The bytes of `path`; `what` names the file in the message ("tokenizer.json").
inline std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + what + " " + path, "check that the file exists and is readable");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Writes `body` to `path`.tmp and renames it to `path`, so that an interrupted write never
// leaves a half file under the final name.
inline void write_file_atomically(const std::string& path, const std::string& body) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << body;
    if (!f.flush()) throw Error("cannot write " + tmp, "check free space and permissions");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("cannot write " + path + ": " + ec.message(), "choose another file name or folder");
}

}  // namespace titan
