#include "titan/train/hf_convert.h"

#include <cstdio>
#include <filesystem>
#include <set>
#include <unistd.h>

#include "titan/common/error.h"
#include "titan/common/log.h"
#include "titan/common/progress.h"
#include "titan/components/checkpoint/dcp.h"
#include "titan/components/checkpoint/hf_checkpoint.h"
#include "titan/components/tokenizer/hf_tokenizer_export.h"
#include "titan/models/registry.h"

namespace titan::train {

using models::ModelConfig;

namespace {

std::string dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : t == at::kDouble ? "float64" : "float32";
}

// The parameter FQNs of a model with these arguments, in order, with their shapes.
std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(const ModelConfig& args) {
  const auto meta = models::model_spec(args.family()).build(args, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& p : meta->named_parameters()) out.emplace_back(p.name, p.tensor->sizes().vec());
  return out;
}
std::vector<std::string> parameter_fqns(const ModelConfig& args) {
  std::vector<std::string> out;
  for (const auto& [name, shape] : parameter_shapes(args)) out.push_back(name);
  return out;
}
// The model's persistent buffers (a MoE layer's expert_bias) as a fresh model starts them: zeros.
std::vector<std::pair<std::string, at::Tensor>> zero_buffers(const ModelConfig& args) {
  const auto meta = models::model_spec(args.family()).build(args, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& b : meta->named_buffers()) out.emplace_back(b.name, at::zeros(b.tensor->sizes(), at::kFloat));
  return out;
}

// What a checkpoint recorded of its model.
std::unique_ptr<ModelConfig> checkpoint_args(const components::CheckpointReader& r) {
  return models::config_from_description(r.model_description(), r.path() + "/metadata.json");
}

std::unique_ptr<models::StateDictAdapter> adapter_for(const ModelConfig& args) {
  return models::model_spec(args.family()).hf_adapter(args);
}

}  // namespace

at::Tensor read_hf_parameter(const models::StateDictAdapter& adapter, components::HfReader& hf, const std::string& fqn,
                             const std::string& where, const std::string& fix, std::set<std::string>* used) {
  std::vector<at::Tensor> parts;
  for (const auto& name : adapter.to_hf_names(fqn)) {
    if (!hf.has(name)) throw Error(where + " holds no " + name, fix);
    parts.push_back(hf.read(name));
    if (used) used->insert(name);
  }
  return adapter.from_hf_parts(fqn, parts);
}

namespace {

// The persistent buffer `fqn` (the expert bias) from the files, float32, where transformers keeps
// it and the files hold it; nullopt otherwise. Throws titan::Error when its shape is not `shape`.
std::optional<at::Tensor> read_hf_buffer(const models::StateDictAdapter& adapter, components::HfReader& hf,
                                         const std::string& fqn, const std::vector<int64_t>& shape,
                                         const std::string& where, const std::string& fix,
                                         std::set<std::string>* used = nullptr) {
  const auto name = adapter.buffer_hf_name(fqn);
  if (!name || !hf.has(*name)) return std::nullopt;
  at::Tensor saved = hf.read(*name);
  if (saved.sizes().vec() != shape)
    throw Error(where + ": " + *name + " has shape " + c10::str(saved.sizes()) + " but the model's " + fqn + " has " +
                    c10::str(at::IntArrayRef(shape)),
                fix);
  if (used) used->insert(*name);
  return saved.to(at::kFloat);
}

}  // namespace

Progress stderr_progress(const std::string& what) {
  auto bar = std::make_shared<ProgressBar>(what, "tensors");
  return [bar](size_t done, size_t total) { bar->update(done, total); };
}

std::string recorded_tokenizer(const std::string& step_dir) {
  components::CheckpointReader reader(step_dir);
  const std::string path = reader.model_description().value("tokenizer", std::string());
  std::error_code ec;
  return !path.empty() && (path == "builtin:bytes" || std::filesystem::exists(path, ec)) ? path : "";
}

void convert_to_hf(const std::string& step_dir, const std::string& out_dir, std::optional<at::ScalarType> dtype,
                   int64_t max_shard_bytes, const Progress& progress, const std::string& tokenizer) {
  components::CheckpointReader reader(step_dir);
  const auto args_ptr = checkpoint_args(reader);
  const ModelConfig& args = *args_ptr;
  const auto adapter = adapter_for(args);
  std::vector<components::HfTensorSpec> specs;
  std::map<std::string, std::pair<std::string, size_t>> fqn_of;  // transformers' name -> (fqn, part)
  at::ScalarType saved = at::kFloat;
  for (const auto& fqn : parameter_fqns(args)) {
    const std::string key = "model." + fqn;
    if (!reader.has(key)) throw Error(step_dir + " holds no " + key, "convert a checkpoint with the model's weights");
    saved = components::scalar_type_of(reader.metadata()["tensors"][key]["dtype"].get<std::string>(), step_dir);
    int64_t n = 1;
    for (auto d : reader.global_shape(key)) n *= d;
    const auto names = adapter->to_hf_names(fqn);
    for (size_t i = 0; i < names.size(); ++i) {
      specs.push_back({names[i], n / static_cast<int64_t>(names.size()) *
                                     static_cast<int64_t>(c10::elementSize(dtype.value_or(saved)))});
      fqn_of[names[i]] = {fqn, i};
    }
  }
  const at::ScalarType out_dtype = dtype.value_or(saved);
  // A MoE layer's load-balancing bias: written where transformers' model keeps one (zeros when
  // the checkpoint has none); elsewhere a bias that is not zero is said to be lost.
  std::map<std::string, at::Tensor> buffers;  // fqn -> its zeros
  bool warned = false;
  for (const auto& [name, zero] : zero_buffers(args)) {
    if (const auto hf = adapter->buffer_hf_name(name)) {
      specs.push_back({*hf, zero.numel() * static_cast<int64_t>(c10::elementSize(out_dtype))});
      fqn_of[*hf] = {name, 0};
      buffers[name] = zero;
    } else if (!warned && reader.has("model." + name) &&
               !at::equal(reader.read_full("model." + name).to(at::kFloat), zero)) {
      log::warning("the checkpoint's load-balancing expert bias (" + name + " and the other MoE layers') steers which "
                   "experts titan.cpp routes each token to; transformers' model has no such bias, so it routes by "
                   "the router's scores alone and some tokens may go to other experts");
      warned = true;
    }
  }
  nlohmann::json config = adapter->hf_config(dtype_name(out_dtype));
  if (!tokenizer.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    const auto files = components::write_hf_tokenizer(tokenizer, out_dir, args.sizes().vocab_size);
    if (files.bos_id >= 0) config["bos_token_id"] = files.bos_id;
    if (files.eos_id >= 0) config["eos_token_id"] = files.eos_id;
  }
  // The tensors come in spec order: a parameter stored as several (the experts) is read once.
  std::string last_fqn;
  std::vector<at::Tensor> last_parts;
  components::write_hf_folder(
      out_dir, specs,
      [&](const std::string& hf) {
        const auto& [fqn, part] = fqn_of.at(hf);
        if (fqn != last_fqn) {
          const bool zero = buffers.count(fqn) && !reader.has("model." + fqn);
          last_parts = adapter->to_hf_parts(fqn, zero ? buffers.at(fqn) : reader.read_full("model." + fqn));
          last_fqn = fqn;
        }
        return last_parts.at(part).to(out_dtype);
      },
      config, max_shard_bytes, progress);
}

void convert_from_hf(const std::string& hf_dir, const std::string& out_step_dir, std::optional<at::ScalarType> dtype,
                     const Progress& progress, bool replace) {
  components::HfReader hf(hf_dir);
  if (hf.config_path().empty())
    throw Error(hf_dir + " has no config.json", "convert a folder written by transformers' save_pretrained");
  const models::ModelSpec& spec = models::model_spec_for_hf(hf.config(), hf.config_path());
  const auto args_ptr = spec.config_from_hf(hf.config(), hf.config_path());
  const ModelConfig& args = *args_ptr;
  const auto adapter = spec.hf_adapter(args);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto params = parameter_shapes(args);
  std::set<std::string> used;
  for (const auto& [fqn, shape] : params) {
    at::Tensor t = read_hf_parameter(*adapter, hf, fqn, hf_dir, "convert the complete model folder", &used);
    if (t.sizes().vec() != shape)
      throw Error(hf_dir + ": " + adapter->to_hf_names(fqn).front() + " has shape " + c10::str(t.sizes()) + " but " +
                      hf.config_path() + " describes a model whose " + fqn + " has " + c10::str(at::IntArrayRef(shape)),
                  "the weights and config.json disagree; convert a folder saved whole by save_pretrained");
    tensors.emplace_back("model." + fqn, dtype ? t.to(*dtype) : t);
    if (progress) progress(tensors.size(), params.size());
  }
  // The load-balancing bias where transformers keeps one; otherwise it starts at zero, as in a
  // fresh model.
  for (auto& [name, t] : zero_buffers(args)) {
    if (auto saved = read_hf_buffer(*adapter, hf, name, t.sizes().vec(), hf_dir,
                                    "the weights and config.json disagree; convert a folder saved whole by "
                                    "save_pretrained",
                                    &used))
      t = *saved;
    tensors.emplace_back("model." + name, t);
  }
  // Nothing in the files is left out (a config.json with fewer layers than the weights).
  for (const auto& name : hf.names())
    if (!used.count(name) && !adapter->ignorable(name))
      throw Error(hf_dir + " holds " + name + ", which the model that " + hf.config_path() + " describes does not have",
                  "the weights and config.json disagree (num_hidden_layers?); convert a folder saved whole by "
                  "save_pretrained");
  components::write_checkpoint(out_step_dir, 0, tensors,
                                     {{"name", spec.name}, {"flavor", "converted from " + hf_dir},
                                      {"args", args.to_json()}},
                                     nlohmann::json::object(), replace);
}

void convert_from_dcp(const std::string& dcp_dir, const std::string& out_step_dir, const std::string& model_name,
                      const std::string& flavor, const Progress& progress, bool replace) {
  const models::ModelSpec& spec = models::model_spec(model_name);
  // A family whose RoPE'd rows torchtitan keeps in Hugging Face's order (Qwen3): they are
  // reordered as from Hugging Face, which needs the flavor's heads.
  const bool reorder = !spec.reads_torchtitan_checkpoints;
  if (reorder && flavor.empty())
    throw Error("converting torchtitan's " + spec.name + " checkpoint " + dcp_dir + " needs its flavor: torchtitan "
                "keeps the wq and wk rows (and the q/k norm weights) of each head in another order, which titan.cpp "
                "reorders head by head",
                "add --flavor NAME (the model.flavor the checkpoint was trained with: " + [&] {
                  std::string names;
                  for (const auto& n : spec.flavor_names()) names += (names.empty() ? "" : ", ") + n;
                  return names;
                }() + ")");
  components::DcpReader dcp(dcp_dir);
  nlohmann::json model = {{"name", spec.name}, {"flavor", flavor.empty() ? "torchtitan checkpoint" : flavor}};
  std::vector<std::string> fqns;
  std::unique_ptr<models::StateDictAdapter> adapter;
  if (!flavor.empty()) {
    const auto args = spec.flavor(flavor);
    model["args"] = args->to_json();
    fqns = parameter_fqns(*args);
    if (reorder) adapter = spec.hf_adapter(*args);
  } else {
    for (const auto& k : dcp.keys())
      if (k.find('.') != std::string::npos && k.rfind("optimizer.", 0) != 0 && k.rfind("lr_scheduler.", 0) != 0 &&
          k.rfind("train_state.", 0) != 0 && k.rfind("dataloader.", 0) != 0)
        fqns.push_back(k);
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  // `fqn`'s tensor under `key`: a weight or an Adam moment (elementwise, so reordered as the
  // weight is); the step count as it is.
  auto take = [&](const std::string& key, const std::string& fqn) {
    const auto shape = dcp.global_shape(key);
    at::Tensor t = at::empty(shape, dcp.dtype(key));
    dcp.read_into(key, {std::vector<int64_t>(shape.size(), 0), shape}, t);
    const bool step = key.size() > 5 && key.compare(key.size() - 5, 5, ".step") == 0;
    if (adapter && !step) {
      if (adapter->from_hf(fqn, t.to(at::kFloat)).sizes() != t.sizes())
        throw Error(dcp_dir + ": " + key + " has shape " + c10::str(t.sizes()) + ", not that of flavor " + flavor,
                    "name the flavor the checkpoint was trained with (--flavor)");
      t = adapter->from_hf(fqn, t).contiguous();
    }
    tensors.emplace_back(key, t);
  };
  const bool full = dcp.holds_full_state();
  if (!flavor.empty())  // the persistent buffers (expert_bias) as saved, zeros where the checkpoint has none
    for (auto& [name, t] : zero_buffers(*spec.flavor(flavor))) {
      if (dcp.has("model." + name)) {
        at::Tensor saved = at::empty(dcp.global_shape("model." + name), dcp.dtype("model." + name));
        dcp.read_into("model." + name, {std::vector<int64_t>(saved.dim(), 0), saved.sizes().vec()}, saved);
        t = saved;
      }
      tensors.emplace_back("model." + name, t);
    }
  for (const auto& fqn : fqns) {
    if (!dcp.has("model." + fqn)) throw Error(dcp_dir + " holds no " + fqn, "convert a checkpoint of this model");
    take("model." + fqn, fqn);
    if (full)
      for (const char* s : {".exp_avg", ".exp_avg_sq", ".step"})
        if (dcp.has("optimizer." + fqn + s)) take("optimizer." + fqn + s, fqn);
    if (progress) progress(&fqn - fqns.data() + 1, fqns.size());
  }
  components::write_checkpoint(out_step_dir, dcp.step(), tensors, model, full ? dcp.scalars() : nlohmann::json::object(),
                               replace);
}

void load_hf_into(const std::string& hf_dir, const ModelConfig& args, components::StateDict& state) {
  components::HfReader hf(hf_dir);
  const auto adapter = adapter_for(args);
  if (!hf.config_path().empty()) {
    const auto have = models::model_spec_for_hf(hf.config(), hf.config_path()).config_from_hf(hf.config(), hf.config_path());
    adapter->check_same(*have, hf.config_path());
  }
  at::NoGradGuard no_grad;
  for (auto& t : state.tensors) {
    if (t.key.rfind("model.", 0) != 0) continue;
    const std::string fqn = t.key.substr(6);
    if (t.buffer) {  // the expert bias where transformers keeps one; otherwise it keeps its start
      const auto saved = read_hf_buffer(*adapter, hf, fqn, t.global_shape, hf_dir,
                                        "use a model.flavor that matches the Hugging Face model");
      if (saved && t.box.numel() > 0) t.local.copy_(saved->narrow(0, t.box.offsets.at(0), t.box.sizes.at(0)));
      continue;
    }
    at::Tensor full = read_hf_parameter(*adapter, hf, fqn, hf_dir, "load the complete model folder");
    if (full.sizes().vec() != t.global_shape)
      throw Error(hf_dir + ": " + adapter->to_hf_names(fqn).front() + " has shape " + c10::str(full.sizes()) +
                      " but this run's " + fqn + " has " + c10::str(at::IntArrayRef(t.global_shape)),
                  "use a model.flavor (and model.vocab_size) that matches the Hugging Face model");
    if (t.box.numel() == 0) continue;
    at::Tensor part = full;
    for (size_t d = 0; d < t.box.offsets.size(); ++d)
      part = part.narrow(static_cast<int64_t>(d), t.box.offsets[d], t.box.sizes[d]);
    t.local.copy_(part);
  }
}

}  // namespace titan::train
