#include "titan/components/checkpoint/checkpoint_metadata.h"

#include <array>
#include <cstdint>

#include "titan/common/box.h"
#include "titan/common/error.h"

namespace titan::components {

namespace {

constexpr std::array<const char*, 10> kDtypeNames = {"F64", "F32", "BF16", "F16", "I64", "I32", "I16", "I8", "U8", "BOOL"};

}  // namespace

nlohmann::json parse_checkpoint_metadata(std::string_view text, const std::string& path) {
  const std::string damaged = "the checkpoint is damaged; load another step";
  auto m = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded()) throw Error(path + " is not valid JSON", damaged);
  if (!m.is_object() || !m.contains("format") || m["format"] != kCheckpointFormat)
    throw Error(path + " is not the metadata of a titan.cpp checkpoint", "point at a step-N folder titan.cpp wrote");
  if (!m.contains("version") || m["version"] != kCheckpointVersion)
    throw Error(path + " has version " + (m.contains("version") ? m["version"].dump() : std::string("(none)")) +
                    "; this build reads version " + std::to_string(kCheckpointVersion),
                "use the titan.cpp version that wrote it");
  auto bad = [&](const std::string& what) { return Error(path + " is malformed: " + what, damaged); };
  auto natural = [](const nlohmann::json& v) {
    return v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX) && v.get<int64_t>() >= 0;
  };
  if (!m.contains("step") || !natural(m["step"])) throw bad("\"step\" is not a non-negative integer");
  if (!m.contains("contents") || !m["contents"].is_array()) throw bad("\"contents\" is not a list");
  for (const auto& c : m["contents"])
    if (!c.is_string() || (c != "model" && c != "optimizer" && c != "lr_scheduler" && c != "dataloader" &&
                           c != "train_state"))
      throw bad("\"contents\" holds " + c.dump() +
                ", not a part of a checkpoint (model, optimizer, lr_scheduler, dataloader, train_state)");
  if (!m.contains("files") || !m["files"].is_object()) throw bad("\"files\" is not an object");
  for (const auto& [name, bytes] : m["files"].items())
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." || !natural(bytes))
      throw bad("\"files\" holds \"" + name + "\": " + bytes.dump() + " (a file of the step folder and its size)");
  for (const char* key : {"scalars", "layout", "model"})
    if (m.contains(key) && !m[key].is_object()) throw bad(std::string("\"") + key + "\" is not an object");
  if (!m.contains("tensors") || !m["tensors"].is_object()) throw bad("\"tensors\" is not an object");
  for (const auto& [key, t] : m["tensors"].items()) {
    const std::string where = "tensor \"" + key + "\"";
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("global_shape") ||
        !t["global_shape"].is_array() || !t.contains("chunks") || !t["chunks"].is_array())
      throw bad(where + " lacks dtype, global_shape or chunks");
    bool known = false;
    for (const char* d : kDtypeNames) known = known || t["dtype"] == d;
    if (!known) throw bad(where + " has dtype " + t["dtype"].dump());
    const auto& shape = t["global_shape"];
    if (shape.size() > 16) throw bad(where + " has " + std::to_string(shape.size()) + " dimensions");
    double elements = 1;
    for (const auto& d : shape) {
      if (!natural(d)) throw bad(where + " has the dimension " + d.dump());
      elements *= d.get<double>();
    }
    if (elements > 9.0e15) throw bad(where + " has " + shape.dump() + " elements, more than any file holds");
    for (const auto& c : t["chunks"]) {
      if (!c.is_object() || !c.contains("file") || !c["file"].is_string() || !c.contains("offsets") ||
          !c["offsets"].is_array() || !c.contains("sizes") || !c["sizes"].is_array() || !c.contains("crc32c") ||
          !c["crc32c"].is_string())
        throw bad(where + " has a chunk without file, offsets, sizes or crc32c");
      if (!m["files"].contains(c["file"].get<std::string>()))
        throw bad(where + " has a chunk in " + c["file"].dump() + ", which \"files\" does not list");
      const auto& off = c["offsets"];
      const auto& size = c["sizes"];
      if (off.size() != shape.size() || size.size() != shape.size())
        throw bad(where + " has a chunk of another rank than its global_shape " + shape.dump());
      for (size_t d = 0; d < shape.size(); ++d) {
        if (!natural(off[d]) || !natural(size[d]) ||
            off[d].get<int64_t>() > shape[d].get<int64_t>() - size[d].get<int64_t>())
          throw bad(where + " has a chunk at " + off.dump() + " of " + size.dump() + ", outside " + shape.dump());
      }
      const std::string crc = c["crc32c"].get<std::string>();
      if (crc.size() != 8 || crc.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw bad(where + " has the checksum " + c["crc32c"].dump() + " (8 hex digits expected)");
    }
    // Every element saved exactly once: no tensor without chunks, no gap, no overlap.
    std::vector<Box> boxes;
    for (const auto& c : t["chunks"])
      boxes.push_back({c["offsets"].get<std::vector<int64_t>>(), c["sizes"].get<std::vector<int64_t>>()});
    const std::string problem = cover_problem(boxes, shape.get<std::vector<int64_t>>());
    if (!problem.empty()) throw bad(where + ": " + problem);
  }
  return m;
}

}  // namespace titan::components
