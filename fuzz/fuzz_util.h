// Shared by the fuzz targets: the bytes of one input as a file in a private temporary folder
// (the loaders under test read files), and the rule that titan::Error is the expected way for
// bad input to end; anything else escaping (or a sanitizer report) is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "titan/common/error.h"

namespace titan::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("titan_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const auto path = scratch() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                               static_cast<std::streamsize>(size));
  return path.string();
}

// Runs `f`; a titan::Error is a clean refusal. Other exceptions abort (libFuzzer reports them).
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const titan::Error&) {
  }
}

}  // namespace titan::fuzz
