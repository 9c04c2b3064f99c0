// safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw bytes. Checkpoint shards and Hugging Face weights
// both use it; `python -c "import safetensors"` and any JSON tool can read them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace titan::components {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range, relative to the end of the header
};

struct SafetensorsFile {
  std::string path;
  uint64_t data_start = 0;  // file offset of the first data byte
  uint64_t file_size = 0;
  std::vector<SafetensorsEntry> entries;       // in file order
  std::map<std::string, std::string> metadata;  // "__metadata__"
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent
};

// "F32", "BF16", ... and back; titan::Error for a dtype safetensors cannot hold / an unknown name.
std::string safetensors_dtype(at::ScalarType t);
at::ScalarType scalar_type_of(const std::string& safetensors_dtype, const std::string& where);

// Reads and checks the header: JSON, dtypes, shapes against byte ranges, ranges inside the file.
// titan::Error naming the file for anything wrong (truncated, not safetensors, ...).
SafetensorsFile read_safetensors_header(const std::string& path);
// One tensor's bytes as a CPU tensor.
at::Tensor read_safetensors_tensor(const SafetensorsFile& file, const SafetensorsEntry& entry);
// One tensor's bytes into `out` (contiguous CPU, the entry's dtype and element count).
void read_safetensors_into(const SafetensorsFile& file, const SafetensorsEntry& entry, at::Tensor& out);

// Writes `tensors` (any device or layout; copied to contiguous CPU memory one at a time) to
// `path` and flushes it to the disk (fsync), with O_DIRECT where the file system allows.
// `path` is written in place: callers write under a temporary name and rename. `after_bytes`,
// when set, is called with the bytes written so far (tests use it to die midway).
// `final_metadata`, when set, is called once the data is written and its result replaces
// `metadata` in the header: it must have the same keys and value lengths (placeholders
// filled in, e.g. checksums computed while the data was written).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<void(uint64_t)>& after_bytes = {},
                       const std::function<std::map<std::string, std::string>()>& final_metadata = {});

}  // namespace titan::components
