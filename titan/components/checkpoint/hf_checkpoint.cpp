#include "titan/components/checkpoint/hf_checkpoint.h"

#include <filesystem>

#include "titan/common/error.h"
#include "titan/common/files.h"

namespace titan::components {

namespace fs = std::filesystem;

HfReader::HfReader(const std::string& path) {
  const fs::path p = path;
  std::vector<std::string> files;
  if (fs::is_regular_file(p) && p.extension() == ".safetensors") {
    folder_ = p.parent_path().string();
    files.push_back(p.filename().string());
  } else if (fs::is_directory(p)) {
    folder_ = p.string();
    if (fs::exists(p / "model.safetensors.index.json")) {
      const std::string idx = (p / "model.safetensors.index.json").string();
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_file(idx, "safetensors index"));
        for (const auto& [name, file] : j.at("weight_map").items()) where_[name] = file.get<std::string>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(idx + " is not a safetensors index (" + e.what() + ")", "use the index transformers wrote");
      }
    } else if (fs::exists(p / "model.safetensors")) {
      files.push_back("model.safetensors");
    } else {
      throw Error(path + " holds neither model.safetensors nor model.safetensors.index.json",
                  "point at a Hugging Face model folder (save_pretrained's output)");
    }
  } else {
    throw Error(path + " is not a Hugging Face model folder or .safetensors file", "check the path");
  }
  for (const auto& f : files) {
    auto h = read_safetensors_header((fs::path(folder_) / f).string());
    for (const auto& e : h.entries) where_[e.name] = f;
    headers_.emplace(f, std::move(h));
  }
  const fs::path cfg = fs::path(folder_) / "config.json";
  if (fs::exists(cfg)) {
    config_path_ = cfg.string();
    try {
      config_ = nlohmann::json::parse(read_file(config_path_, "config.json"));
    } catch (const nlohmann::json::exception& e) {
      throw Error(config_path_ + " is not valid JSON (" + e.what() + ")", "use the config.json transformers wrote");
    }
  }
}

std::vector<std::string> HfReader::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : where_) out.push_back(n);
  return out;
}

at::Tensor HfReader::read(const std::string& name) {
  auto w = where_.find(name);
  if (w == where_.end()) throw Error(folder_ + " holds no tensor " + name, "use the complete model folder");
  auto h = headers_.find(w->second);
  if (h == headers_.end()) {
    const fs::path f = fs::path(folder_) / w->second;
    if (!fs::exists(f))
      throw Error("the index of " + folder_ + " names " + w->second + ", which is not there", "copy every shard of the model");
    h = headers_.emplace(w->second, read_safetensors_header(f.string())).first;
  }
  const SafetensorsEntry* e = h->second.find(name);
  if (!e) throw Error(h->second.path + " does not hold " + name + " although the index says so", "the folder is damaged");
  return read_safetensors_tensor(h->second, *e);
}

void write_hf_folder(const std::string& folder, const std::vector<HfTensorSpec>& specs,
                     const std::function<at::Tensor(const std::string&)>& produce, const nlohmann::json& config,
                     int64_t max_shard_bytes, const std::function<void(size_t, size_t)>& progress) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw Error("cannot create " + folder + ": " + ec.message(), "choose a writable folder");
  // Shards in order, each up to max_shard_bytes (a larger tensor alone).
  std::vector<std::vector<const HfTensorSpec*>> shards(1);
  int64_t in_shard = 0;
  for (const auto& s : specs) {
    if (!shards.back().empty() && in_shard + s.bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += s.bytes;
  }
  auto pad5 = [](size_t v) {
    std::string n = std::to_string(v);
    return std::string(n.size() < 5 ? 5 - n.size() : 0, '0') + n;
  };
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total_bytes = 0;
  size_t done = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? "model.safetensors"
                                                : "model-" + pad5(i + 1) + "-of-" + pad5(shards.size()) + ".safetensors";
    // One shard's tensors at a time in memory.
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto* s : shards[i]) {
      tensors.emplace_back(s->name, produce(s->name).contiguous());
      weight_map[s->name] = name;
      total_bytes += s->bytes;
      if (progress) progress(++done, specs.size());
    }
    const fs::path tmp = fs::path(folder) / (name + ".tmp");
    write_safetensors(tmp.string(), tensors, {{"format", "pt"}});
    fs::rename(tmp, fs::path(folder) / name);
  }
  if (shards.size() > 1)
    write_file_atomically((fs::path(folder) / "model.safetensors.index.json").string(),
                          nlohmann::json{{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}}.dump(2));
  write_file_atomically((fs::path(folder) / "config.json").string(), config.dump(2));
}

}  // namespace titan::components
