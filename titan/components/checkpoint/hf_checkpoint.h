// Hugging Face model folders: model.safetensors, or shards listed by model.safetensors.index.json,
// with config.json. Names and layouts are the model's business (its state-dict adapter); this
// reads and writes the files.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "titan/components/checkpoint/safetensors.h"

namespace titan::components {

class HfReader {
 public:
  // A folder (model.safetensors.index.json or model.safetensors, and config.json) or one
  // .safetensors file. titan::Error naming the path when it is neither.
  explicit HfReader(const std::string& path);
  const nlohmann::json& config() const { return config_; }  // empty object without config.json
  const std::string& config_path() const { return config_path_; }
  std::vector<std::string> names() const;
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  at::Tensor read(const std::string& name);  // CPU, in the stored dtype

 private:
  std::string folder_, config_path_;
  nlohmann::json config_ = nlohmann::json::object();
  std::map<std::string, std::string> where_;  // tensor -> file
  std::map<std::string, SafetensorsFile> headers_;
};

struct HfTensorSpec {
  std::string name;
  int64_t bytes;
};

// Writes `folder`: the tensors `produce` returns for each spec (in order), one file when they fit
// in `max_shard_bytes`, else model-0000i-of-0000n.safetensors with model.safetensors.index.json;
// then config.json. Every file is written under a temporary name and renamed when whole.
// `progress(done, total)` after each tensor.
void write_hf_folder(const std::string& folder, const std::vector<HfTensorSpec>& specs,
                     const std::function<at::Tensor(const std::string&)>& produce, const nlohmann::json& config,
                     int64_t max_shard_bytes, const std::function<void(size_t, size_t)>& progress = {});

}  // namespace titan::components
