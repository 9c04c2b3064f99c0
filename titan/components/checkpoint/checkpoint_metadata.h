// metadata.json of a titan.cpp checkpoint step folder: parsed and checked whole before any of it
// is used (types, shapes, chunk boxes inside their tensors, file names inside the folder), so that
// a damaged or hand-edited file is one clear error. Torch-free (fuzzed: fuzz/fuzz_checkpoint_metadata).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace titan::components {

inline constexpr const char* kCheckpointFormat = "titan.cpp checkpoint";
inline constexpr int kCheckpointVersion = 1;

// The metadata of `path` (named in messages): {"format", "version", "step", "contents": [...],
// "files": {name: bytes}, "tensors": {key: {"dtype", "global_shape", "chunks": [{"file",
// "offsets", "sizes", "crc32c"}]}}, "scalars": {...}, "layout", "model", ...}. Throws titan::Error.
nlohmann::json parse_checkpoint_metadata(std::string_view text, const std::string& path);

}  // namespace titan::components
