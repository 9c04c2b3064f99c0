#include "titan/components/checkpoint/dcp.h"

#include <fcntl.h>
#include <unistd.h>

#include <torch/csrc/jit/serialization/pickle.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/common/log.h"
#include "titan/components/checkpoint/pickle.h"

namespace titan::components {

namespace fs = std::filesystem;

namespace {

const std::string kDamaged = "the checkpoint is damaged or of a PyTorch version titan.cpp does not read; load another step";

// torch dtypes as DCP's TensorProperties records them (a torch.<name> global).
bool known_dtype(const PyRef& d) {
  return d && d->kind == PyObj::Kind::Global && d->s.rfind("torch.", 0) == 0;
}

at::ScalarType dtype_of(const std::string& name, const std::string& where) {
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"float32", at::kFloat}, {"float", at::kFloat}, {"bfloat16", at::kBFloat16}, {"float16", at::kHalf},
      {"half", at::kHalf},     {"float64", at::kDouble}, {"double", at::kDouble}, {"int64", at::kLong},
      {"long", at::kLong},     {"int32", at::kInt},      {"int", at::kInt},       {"uint8", at::kByte},
      {"int8", at::kChar},     {"bool", at::kBool}};
  for (const auto& [n, t] : table)
    if (name == n) return t;
  throw Error(where + ": dtype torch." + name + " is not one titan.cpp reads", kDamaged);
}

}  // namespace

std::vector<std::string> DcpReader::keys() const {
  std::vector<std::string> out;
  for (const auto& [k, t] : tensors_) out.push_back(k);
  return out;
}

at::ScalarType DcpReader::dtype(const std::string& key) const { return tensors_.at(dcp_key(key)).dtype; }

std::string DcpReader::dcp_key(const std::string& key) {
  if (key.rfind("model.", 0) == 0) return key.substr(6);
  if (key.rfind("optimizer.", 0) == 0) return "optimizer.state." + key.substr(10);
  return key;
}

DcpReader::DcpReader(const std::string& step_dir) : dir_(step_dir) {
  const std::string path = (fs::path(step_dir) / ".metadata").string();
  const std::string data = read_file(path, "distributed checkpoint metadata");
  try {
    PyRef md = unpickle(data);
    PyRef sdm = md->attr("state_dict_metadata"), storage = md->attr("storage_data");
    if (!sdm || sdm->kind != PyObj::Kind::Dict || !storage || storage->kind != PyObj::Kind::Dict)
      throw Error(path + " is not the metadata of a PyTorch distributed checkpoint", kDamaged);
    // Where each chunk lies: (fqn, chunk offsets) -> file, offset, length.
    std::map<std::pair<std::string, std::vector<int64_t>>, Chunk> where;
    for (const auto& [index, info] : storage->dict) {
      const std::string fqn = index->attr("fqn")->as_str();
      PyRef off = index->attr("offset");
      std::vector<int64_t> offsets = off && off->kind != PyObj::Kind::None ? off->as_ints() : std::vector<int64_t>{};
      Chunk c;
      c.file = info->attr("relative_path")->as_str();
      c.offset = static_cast<uint64_t>(info->attr("offset")->as_int());
      c.length = static_cast<uint64_t>(info->attr("length")->as_int());
      if (PyRef t = info->attr("transform_descriptors"); t && t->kind != PyObj::Kind::None && !t->items.empty())
        throw Error(path + ": " + fqn + " is stored with transforms (compression or extensions) titan.cpp does not read",
                    "save the checkpoint without storage transforms");
      where[{fqn, offsets}] = c;
    }
    for (const auto& [k, v] : sdm->dict) {
      const std::string key = k->as_str();
      if (v->is_call_of("torch.distributed.checkpoint.metadata.BytesStorageMetadata")) {
        auto it = where.find({key, {}});
        if (it != where.end()) bytes_items_[key] = it->second;
        continue;
      }
      if (!v->is_call_of("torch.distributed.checkpoint.metadata.TensorStorageMetadata"))
        throw Error(path + ": the entry " + key + " is neither a tensor nor bytes", kDamaged);
      Tensor t;
      t.shape = v->attr("size")->as_ints();
      PyRef props = v->attr("properties");
      PyRef dtype = props ? props->attr("dtype") : nullptr;
      if (!dtype && props && props->state && props->state->kind == PyObj::Kind::Tuple && !props->state->items.empty())
        dtype = props->state->items[0];  // TensorProperties pickles its fields as a tuple
      if (!known_dtype(dtype)) throw Error(path + ": the dtype of " + key + " is not recorded", kDamaged);
      t.dtype = dtype_of(dtype->s.substr(6), path + ": " + key);
      for (const auto& c : v->attr("chunks")->items) {
        Chunk chunk;
        chunk.offsets = c->attr("offsets")->as_ints();
        chunk.sizes = c->attr("sizes")->as_ints();
        auto it = where.find({key, chunk.offsets});
        if (it == where.end()) throw Error(path + ": a chunk of " + key + " has no storage entry", kDamaged);
        chunk.file = it->second.file;
        chunk.offset = it->second.offset;
        chunk.length = it->second.length;
        t.chunks.push_back(std::move(chunk));
      }
      tensors_[key] = std::move(t);
    }
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const Error*>(&e)) throw;
    throw Error(path + " cannot be read: " + e.what(), kDamaged);
  }
}

bool DcpReader::has(const std::string& key) const { return tensors_.count(dcp_key(key)) > 0; }

std::vector<int64_t> DcpReader::global_shape(const std::string& key) const { return tensors_.at(dcp_key(key)).shape; }

std::vector<char> DcpReader::read_bytes(const std::string& file, uint64_t offset, uint64_t length, const std::string& key) {
  const std::string p = (fs::path(dir_) / file).string();
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("the checkpoint " + dir_ + " lacks its file " + file + " (for " + key + ")",
                          "copy the whole step folder or load another step");
  std::vector<char> buf(length);
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, buf.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw Error(p + " is truncated: " + key + " lies at bytes [" + std::to_string(offset) + ", " +
                      std::to_string(offset + length) + ")", kDamaged);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes_ += length;
  return buf;
}

void DcpReader::read_into(const std::string& key, const Box& box, at::Tensor out) {
  const std::string k = dcp_key(key);
  const Tensor& t = tensors_.at(k);
  at::NoGradGuard no_grad;
  int64_t covered = 0;
  for (const auto& c : t.chunks) {
    const std::optional<Box> common = intersect(box, {c.offsets, c.sizes});
    if (!common) continue;
    at::Tensor chunk;
    try {
      chunk = torch::jit::pickle_load(read_bytes(c.file, c.offset, c.length, k)).toTensor();
    } catch (const c10::Error& e) {
      throw Error(dir_ + "/" + c.file + ": the chunk of " + k + " is not a readable torch.save archive (" +
                      e.what_without_backtrace() + ")", kDamaged);
    }
    if (chunk.sizes().vec() != c.sizes)
      throw Error(dir_ + "/" + c.file + ": the chunk of " + k + " has shape " + c10::str(chunk.sizes()) +
                  " but .metadata says " + c10::str(at::IntArrayRef(c.sizes)), kDamaged);
    at::Tensor src = chunk, dst = out;
    for (size_t d = 0; d < common->offsets.size(); ++d) {
      src = src.narrow(static_cast<int64_t>(d), common->offsets[d] - c.offsets[d], common->sizes[d]);
      dst = dst.narrow(static_cast<int64_t>(d), common->offsets[d] - box.offsets[d], common->sizes[d]);
    }
    dst.copy_(src);
    covered += common->numel();
  }
  if (covered != std::max<int64_t>(box.numel(), 1))
    throw Error("the checkpoint " + dir_ + " covers " + std::to_string(covered) + " of the " +
                std::to_string(box.numel()) + " elements of " + k + " asked for", kDamaged);
}

std::optional<int64_t> DcpReader::read_int(const std::string& key) {
  auto it = bytes_items_.find(key);
  if (it == bytes_items_.end()) return std::nullopt;
  try {
    const c10::IValue v = torch::jit::pickle_load(read_bytes(it->second.file, it->second.offset, it->second.length, key));
    if (v.isInt()) return v.toInt();
    if (v.isTensor()) return v.toTensor().item<int64_t>();
  } catch (const c10::Error& e) {
    throw Error(dir_ + ": " + key + " is not readable (" + e.what_without_backtrace() + ")", kDamaged);
  }
  throw Error(dir_ + ": " + key + " is not an integer", kDamaged);
}

bool DcpReader::holds_full_state() const {
  for (const auto& [k, t] : tensors_)
    if (k.rfind("optimizer.state.", 0) == 0) return true;
  return false;
}

int64_t DcpReader::step() const {
  return const_cast<DcpReader*>(this)->read_int("train_state.step").value_or(0);
}

nlohmann::json DcpReader::scalars() {
  nlohmann::json s = nlohmann::json::object();
  if (auto step = read_int("train_state.step")) {
    s["train_state"] = {{"step", *step}, {"tokens_seen", read_int("train_state.ntokens_seen").value_or(0)}};
    if (auto last = read_int("lr_scheduler.last_epoch")) s["lr_scheduler"] = {{"last_step", *last}};
  }
  bool has_data = false;
  for (const auto& [k, c] : bytes_items_) has_data = has_data || k.rfind("dataloader.", 0) == 0;
  if (has_data)
    log::warning("the data loader position of a torchtitan checkpoint is torchtitan's own; titan.cpp starts the data "
                 "from its beginning");
  return s;
}

}  // namespace titan::components
