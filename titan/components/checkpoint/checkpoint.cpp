#include "titan/components/checkpoint/checkpoint.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/util/accumulate.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>

#include "titan/common/crc32c.h"
#include "titan/common/error.h"
#include "titan/common/files.h"
#include "titan/common/log.h"
#include "titan/common/test_hooks.h"
#include "titan/components/checkpoint/checkpoint_metadata.h"
#include "titan/components/checkpoint/dcp.h"
#include "titan/components/device/device.h"
#include "titan/components/checkpoint/safetensors.h"

namespace titan::components {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = kCheckpointFormat;
constexpr int kVersion = kCheckpointVersion;
const std::set<std::string> kParts = {"model", "optimizer", "lr_scheduler", "dataloader", "train_state"};

std::string shard_name(int rank) {
  std::string n = std::to_string(rank);
  return "rank-" + std::string(n.size() < 5 ? 5 - n.size() : 0, '0') + n + ".safetensors";
}

// Checksums as 8 hex digits: a fixed width, so that they can be filled into a written header.
std::string crc_hex(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

uint32_t checksum(const at::Tensor& t) {  // t: contiguous CPU
  return crc32c(0, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
}

void fsync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// The step folders of a checkpoint folder. titan.cpp touches only what it names as its own:
// it rotates (keep_latest_k) only step-N folders it committed (with metadata.json), and cleans
// only its interrupted saves (step-N.partial-<run id>). Anything else named step-* (a user's
// backup, a folder without an index) is listed apart and never deleted or overwritten.
struct Listing {
  std::map<int64_t, fs::path> complete;  // step-N with metadata.json (titan.cpp's) or .metadata (PyTorch's)
  std::set<int64_t> committed;           // those with metadata.json: the only ones keep_latest_k deletes
  std::vector<fs::path> unfinished;      // step-N.partial-<run id>: saves that were interrupted
  std::vector<fs::path> foreign;         // other step-* entries, left alone
};
// N for a folder named step-N; nullopt for any other name.
std::optional<int64_t> step_of(const std::string& folder_name) {
  static const std::regex step_re("step-([0-9]{1,18})");
  std::smatch m;
  if (!std::regex_match(folder_name, m, step_re)) return std::nullopt;
  return std::stoll(m[1]);
}

Listing list_steps(const fs::path& folder) {
  Listing out;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return out;
  static const std::regex partial_re("step-[0-9]{1,18}\\.partial-[0-9]+");
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0) continue;
    std::error_code dir_ec;
    const bool dir = e.is_directory(dir_ec) && !e.is_symlink(dir_ec);
    const std::optional<int64_t> step = dir ? step_of(name) : std::nullopt;
    if (step && fs::exists(e.path() / "metadata.json")) {
      out.complete[*step] = e.path();
      out.committed.insert(*step);
    } else if (step && fs::exists(e.path() / ".metadata")) {
      out.complete[*step] = e.path();
    } else if (dir && std::regex_match(name, partial_re)) {
      out.unfinished.push_back(e.path());
    } else {
      out.foreign.push_back(e.path());
    }
  }
  std::sort(out.unfinished.begin(), out.unfinished.end());
  std::sort(out.foreign.begin(), out.foreign.end());
  return out;
}

nlohmann::json read_metadata(const fs::path& step_dir) {
  const fs::path p = step_dir / "metadata.json";
  return parse_checkpoint_metadata(read_file(p.string(), "checkpoint metadata"), p.string());
}

bool saved_full_state(const nlohmann::json& m) {
  const auto& c = m.value("contents", nlohmann::json::array());
  return std::find(c.begin(), c.end(), "optimizer") != c.end();
}

// The part `part` (in the tensor's coordinates) of `t`, which holds the box at `origin`.
at::Tensor slice(at::Tensor t, const std::vector<int64_t>& origin, const Box& part) {
  for (size_t d = 0; d < part.offsets.size(); ++d)
    t = t.narrow(static_cast<int64_t>(d), part.offsets[d] - origin[d], part.sizes[d]);
  return t;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A step folder named step-N holds the training state of step N (a renamed or hand-edited folder
// would resume at another step than its name says).
void check_step_matches_folder(fs::path dir, const nlohmann::json& meta) {
  dir = dir.lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "step-5/"
  const std::string name = dir.filename().string();
  const std::optional<int64_t> step = step_of(name);
  if (!saved_full_state(meta) || !step) return;
  if (*step != meta.at("step").get<int64_t>())
    throw Error((dir / "metadata.json").string() + " records step " + meta.at("step").dump() + " but the folder is " + name,
                "the folder was renamed or metadata.json edited; rename it step-" + meta.at("step").dump() +
                    " or load another step");
}

// Reads chunks, each file's header once, and checks every chunk's checksum.
class ChunkReader {
 public:
  explicit ChunkReader(fs::path dir) : dir_(std::move(dir)) {}
  // The chunk, read into `into` when given (it must match: contiguous, dtype, size), else into a
  // new tensor.
  at::Tensor read(const std::string& key, const nlohmann::json& chunk, const std::string& dtype, at::Tensor into = {}) {
    const std::string file = chunk.at("file").get<std::string>();
    std::map<std::string, SafetensorsFile>::iterator it;
    {
      std::lock_guard<std::mutex> lock(mu_);
      it = headers_.find(file);
      if (it == headers_.end()) {
        const fs::path p = dir_ / file;
        if (!fs::exists(p))
          throw Error("the checkpoint " + dir_.string() + " lacks its file " + file,
                      "the checkpoint is incomplete; copy the whole step folder or load another step");
        it = headers_.emplace(file, read_safetensors_header(p.string())).first;
      }
    }
    const SafetensorsEntry* e = it->second.find(key);
    if (!e) throw Error(it->second.path + " does not hold " + key + " although metadata.json says so",
                        "the checkpoint is damaged; load another step");
    // The file's header agrees with metadata.json on what the chunk is.
    const auto sizes = chunk.at("sizes").get<std::vector<int64_t>>();
    if (e->shape != sizes || safetensors_dtype(e->dtype) != dtype)
      throw Error(it->second.path + " holds " + key + " as " + safetensors_dtype(e->dtype) + " " + shape_str(e->shape) +
                      " but metadata.json says " + dtype + " " + shape_str(sizes),
                  "the checkpoint is damaged; load another step");
    at::Tensor t = into;
    if (t.defined()) read_safetensors_into(it->second, *e, t);
    else t = read_safetensors_tensor(it->second, *e);
    if (crc_hex(checksum(t)) != chunk.at("crc32c").get<std::string>())
      throw Error("the checksum of " + key + " in " + it->second.path + " does not match metadata.json",
                  "the file is corrupt; load another step (checkpoint.load_step) or restore the file");
    bytes_ += static_cast<uint64_t>(t.numel()) * t.element_size();
    return t;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  fs::path dir_;
  std::mutex mu_;
  std::map<std::string, SafetensorsFile> headers_;  // std::map: entries stay put as others are added
  std::atomic<uint64_t> bytes_{0};
};

// Rank 0's part of a save once every rank's file is in `partial`: metadata.json from the files'
// headers, config.toml, flush, and the rename to `final_dir` (replacing an older save of that step
// only once this one is whole).
void commit_step(const fs::path& partial, const fs::path& final_dir, int world_size, int64_t step, bool model_only,
                 const nlohmann::json& layout, const nlohmann::json& model, const nlohmann::json& scalars,
                 const std::string& config_toml, int64_t run_id, bool replace = false) {
  nlohmann::json tensors = nlohmann::json::object();
  nlohmann::json files = nlohmann::json::object();
  for (int r = 0; r < world_size; ++r) {
    const SafetensorsFile f = read_safetensors_header((partial / shard_name(r)).string());
    files[shard_name(r)] = f.file_size;
    const nlohmann::json chunks = nlohmann::json::parse(f.metadata.at("titan.chunks"));
    for (const auto& e : f.entries) {
      const auto& c = chunks.at(e.name);
      auto& t = tensors[e.name];
      t["dtype"] = safetensors_dtype(e.dtype);
      t["global_shape"] = c.at("global_shape");
      t["chunks"].push_back({{"file", shard_name(r)}, {"offsets", c.at("offsets")}, {"sizes", e.shape},
                             {"crc32c", c.at("crc32c")}});
    }
  }
  nlohmann::json contents = nlohmann::json::array({"model"});
  if (!model_only) {
    bool optimizer = false;
    for (const auto& [key, t] : tensors.items()) optimizer = optimizer || key.rfind("optimizer.", 0) == 0;
    if (optimizer) contents.push_back("optimizer");
    for (const char* part : {"lr_scheduler", "dataloader", "train_state"})
      if (scalars.contains(part)) contents.push_back(part);
  }
  nlohmann::json meta = {{"format", kFormat}, {"version", kVersion}, {"step", step},
                         {"contents", contents}, {"world_size", world_size}, {"layout", layout},
                         {"model", model}, {"files", files}, {"tensors", tensors}, {"scalars", scalars}};
  if (!config_toml.empty()) write_file_atomically((partial / "config.toml").string(), config_toml);
  write_file_atomically((partial / "metadata.json").string(), meta.dump(1));
  fsync_path(partial / "metadata.json");
  fsync_path(partial);
  // A committed step folder is never replaced by a save (the run refuses at its start to save
  // over one; this is the last guard). `replace` (titan convert --force over a model-only folder)
  // moves the old folder aside and deletes it once the new one is in place.
  std::error_code ec;
  const bool had = fs::exists(fs::symlink_status(final_dir, ec));
  if (had && !replace)
    throw Error(final_dir.string() + " already exists; titan.cpp never overwrites a committed checkpoint",
                "move " + final_dir.string() + " out of the checkpoint folder, or use another checkpoint.folder");
  const fs::path old = final_dir.parent_path() / (final_dir.filename().string() + ".old-" + std::to_string(run_id));
  if (had) {
    fs::rename(final_dir, old, ec);
    if (ec) throw Error("cannot move " + final_dir.string() + " aside: " + ec.message(), "check the folder's permissions");
  }
  fs::rename(partial, final_dir, ec);
  if (ec) throw Error("cannot rename " + partial.string() + " to " + final_dir.string() + ": " + ec.message(),
                      "check the checkpoint folder's permissions");
  fsync_path(final_dir.parent_path());
  if (had) fs::remove_all(old, ec);
}

// This rank's file of a save: chunks with their checksums in the header, written under a
// temporary name and renamed when flushed.
struct ShardTimes {
  uint64_t bytes = 0;
  double checksum_seconds = 0, write_seconds = 0;
};
ShardTimes write_shard(const fs::path& partial, int rank, std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       nlohmann::json& chunks, const std::function<void(uint64_t)>& after_bytes) {
  ShardTimes out;
  auto t0 = std::chrono::steady_clock::now();
  // The checksums are computed on other threads while the data is written, and go into the
  // header (placeholders of the same width until then) once both are done.
  std::vector<uint32_t> crc(tensors.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < tensors.size();) crc[i] = checksum(tensors[i].second);
  };
  std::vector<std::thread> pool;
  const int n = std::max(1, std::min<int>(4, static_cast<int>(std::thread::hardware_concurrency()) - 1));
  for (int k = 0; k < n; ++k) pool.emplace_back(work);
  for (auto& [key, t] : tensors) chunks[key]["crc32c"] = crc_hex(0);
  const fs::path tmp = partial / (shard_name(rank) + ".tmp");
  for (const auto& [key, t] : tensors) out.bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
  double crc_wait = 0;
  try {
    write_safetensors(tmp.string(), tensors, {{"titan.chunks", chunks.dump()}}, after_bytes, [&] {
      const auto w0 = std::chrono::steady_clock::now();
      for (auto& th : pool) th.join();
      pool.clear();
      crc_wait = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      for (size_t i = 0; i < tensors.size(); ++i) chunks[tensors[i].first]["crc32c"] = crc_hex(crc[i]);
      return std::map<std::string, std::string>{{"titan.chunks", chunks.dump()}};
    });
  } catch (...) {
    next = tensors.size();
    for (auto& th : pool) th.join();
    throw;
  }
  auto t1 = std::chrono::steady_clock::now();
  std::error_code ec;
  fs::rename(tmp, partial / shard_name(rank), ec);
  if (ec) throw Error("cannot rename " + tmp.string() + ": " + ec.message(), "check the checkpoint folder");
  out.checksum_seconds = crc_wait;  // what the checksums added after the write
  out.write_seconds = std::chrono::duration<double>(t1 - t0).count() - crc_wait;
  return out;
}

}  // namespace

void write_checkpoint(const std::string& step_dir, int64_t step, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const nlohmann::json& model, const nlohmann::json& scalars, bool replace) {
  const fs::path final_dir = fs::absolute(step_dir);
  const fs::path partial = final_dir.parent_path() / (final_dir.filename().string() + ".partial-convert");
  std::error_code ec;
  fs::remove_all(partial, ec);  // an earlier conversion's, interrupted
  fs::create_directories(partial, ec);
  if (ec) throw Error("cannot create " + partial.string() + ": " + ec.message(), "choose a writable folder");
  try {
    std::vector<std::pair<std::string, at::Tensor>> staged;
    nlohmann::json chunks = nlohmann::json::object();
    for (const auto& [key, t] : tensors) {
      staged.emplace_back(key, t.contiguous());
      chunks[key] = {{"offsets", std::vector<int64_t>(t.dim(), 0)}, {"sizes", t.sizes().vec()},
                     {"global_shape", t.sizes().vec()}};
    }
    (void)write_shard(partial, 0, staged, chunks, {});
    const bool model_only = !scalars.contains("train_state");
    // An empty folder (checked by the caller) is replaced too.
    const bool empty_dir = fs::is_directory(final_dir, ec) && fs::is_empty(final_dir, ec);
    commit_step(partial, final_dir, 1, step, model_only, {{"describe", "converted (one file)"}}, model, scalars, "", 0,
                replace || empty_dir);
  } catch (...) {
    fs::remove_all(partial, ec);
    throw;
  }
}

bool check_convert_output(const std::string& out, bool force, bool step_folder) {
  const fs::path p = out;
  std::error_code ec;
  const auto st = fs::symlink_status(p, ec);
  if (!fs::exists(st)) return false;
  if (!fs::is_directory(st))
    throw Error(out + " exists and is not a folder", "give titan convert a new folder to write");
  if (fs::is_empty(p, ec)) return false;
  const bool step = fs::exists(p / "metadata.json") || fs::exists(p / ".metadata");
  if (step) {
    const bool full = open_state_reader(out)->holds_full_state();
    if (full)
      throw Error(out + " is a training checkpoint (it holds the optimizer state); titan convert never writes into one",
                  "give titan convert a new folder to write");
    if (!force || !step_folder)
      throw Error(out + " is a checkpoint step folder" +
                      std::string(step_folder ? " (model only)" : "; titan convert to-hf never writes into one"),
                  step_folder ? "give titan convert a new folder, or --force to replace this model-only checkpoint"
                              : "give titan convert a new folder to write");
    return true;
  }
  if (!list_steps(p).complete.empty())
    throw Error(out + " is a checkpoint folder (it holds step folders); titan convert never writes into one",
                "give titan convert a new folder to write");
  if (step_folder)
    throw Error(out + " is a folder that is not empty and not a checkpoint; titan convert writes a step folder as a "
                      "whole and does not mix it with other files",
                "give titan convert a new or empty folder to write");
  if (!force)
    throw Error(out + " is not empty; titan convert does not write into a folder that holds files unless told to",
                "give titan convert a new folder, or --force to write there (files of the same name are replaced)");
  return true;
}

struct CheckpointReader::Chunks {
  explicit Chunks(fs::path dir) : reader(std::move(dir)) {}
  ChunkReader reader;
};

CheckpointReader::CheckpointReader(const std::string& step_dir)
    : dir_(step_dir), meta_(read_metadata(step_dir)), chunks_(std::make_unique<Chunks>(step_dir)) {
  check_step_matches_folder(step_dir, meta_);
}
CheckpointReader::~CheckpointReader() = default;

bool CheckpointReader::has(const std::string& key) const { return meta_.at("tensors").contains(key); }

std::vector<int64_t> CheckpointReader::global_shape(const std::string& key) const {
  return meta_.at("tensors").at(key).at("global_shape").get<std::vector<int64_t>>();
}

uint64_t CheckpointReader::bytes_read() const { return chunks_->reader.bytes(); }
bool CheckpointReader::holds_full_state() const { return saved_full_state(meta_); }
int64_t CheckpointReader::step() const { return meta_.at("step").get<int64_t>(); }
nlohmann::json CheckpointReader::scalars() { return meta_.value("scalars", nlohmann::json::object()); }
std::string CheckpointReader::describe() const {
  return "saved from layout " + meta_.value("layout", nlohmann::json::object()).value("describe", std::string("?"));
}
std::string CheckpointReader::model_flavor() const {
  return meta_.value("model", nlohmann::json::object()).value("flavor", std::string("?"));
}
nlohmann::json CheckpointReader::model_description() const { return meta_.value("model", nlohmann::json::object()); }
std::vector<std::string> CheckpointReader::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, t] : meta_.at("tensors").items()) out.push_back(key);
  return out;
}

std::unique_ptr<StateReader> open_state_reader(const std::string& step_dir) {
  if (!fs::exists(fs::path(step_dir) / "metadata.json") && fs::exists(fs::path(step_dir) / ".metadata"))
    return std::make_unique<DcpReader>(step_dir);
  return std::make_unique<CheckpointReader>(step_dir);
}

void CheckpointReader::read_into(const std::string& key, const Box& box, at::Tensor out) {
  at::NoGradGuard no_grad;
  const auto& t = meta_.at("tensors").at(key);
  const std::string dtype = t.at("dtype").get<std::string>();
  int64_t covered = 0;
  for (const auto& c : t.at("chunks")) {
    const Box chunk_box{c.at("offsets").get<std::vector<int64_t>>(), c.at("sizes").get<std::vector<int64_t>>()};
    if (chunk_box.offsets.size() != box.offsets.size())
      throw Error("metadata.json of " + dir_ + " gives a chunk of " + key + " of another rank than the tensor",
                  "the checkpoint is damaged; load another step");
    const std::optional<Box> common = intersect(box, chunk_box);
    if (!common) continue;
    // The same box in the same dtype (a resume on the layout that saved): straight into place.
    if (chunk_box == box && out.is_contiguous() && out.device().is_cpu() && out.scalar_type() == scalar_type_of(dtype, dir_)) {
      chunks_->reader.read(key, c, dtype, out);
      covered += std::max<int64_t>(box.numel(), 1);
      continue;
    }
    at::Tensor chunk = chunks_->reader.read(key, c, dtype);
    slice(out, box.offsets, *common).copy_(slice(chunk, chunk_box.offsets, *common));
    covered += common->numel();
  }
  if (covered != std::max<int64_t>(box.numel(), 1))
    throw Error("the checkpoint " + dir_ + " covers " + std::to_string(covered) + " of the " +
                    std::to_string(box.numel()) + " elements of " + key + " asked for",
                "the checkpoint is incomplete; load another step");
}

at::Tensor CheckpointReader::read_full(const std::string& key) {
  const auto shape = global_shape(key);
  const auto dtype = scalar_type_of(meta_.at("tensors").at(key).at("dtype").get<std::string>(), dir_ + "/metadata.json");
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  read_into(key, {std::vector<int64_t>(shape.size(), 0), shape}, out);
  return out;
}

// A save: the staged tensors of this rank and what rank 0 commits.
struct Checkpointer::Job {
  int64_t step = 0;
  bool model_only = false;
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // contiguous CPU
  nlohmann::json chunks;                                     // key -> {offsets, global_shape, crc32c}
  nlohmann::json scalars;
  fs::path partial, final_dir;
  std::exception_ptr error;
  std::chrono::steady_clock::time_point start;
  double seconds = 0, checksum_seconds = 0, write_seconds = 0;
  uint64_t bytes = 0;
};

Checkpointer::Checkpointer(const CheckpointOptions& o, CheckpointContext ctx) : ctx_(std::move(ctx)) {
  enabled_ = o.enable;
  load_only_ = o.load_only;
  first_step_ = o.enable_first_step_checkpoint;
  interval_ = o.interval;
  keep_latest_k_ = o.keep_latest_k;
  load_step_ = o.load_step;
  steps_ = o.training_steps;
  folder_ = o.folder;
  initial_load_path_ = o.initial_load_path;
  initial_model_only_ = o.initial_load_model_only;
  const std::string& mode = o.async_mode;
  async_ = mode != "disabled";
  pinned_ = mode == "async_with_pinned_mem";
  if (mode == "async_with_pinned_mem" && !ctx_.device.is_cuda())
    throw Error("checkpoint.async_mode = \"async_with_pinned_mem\" needs a CUDA device (pinned memory stages GPU tensors)",
                "use checkpoint.async_mode = \"async\" on the CPU");
  const std::string& ed = o.export_dtype;
  export_dtype_ = ed == "bfloat16" ? at::kBFloat16 : ed == "float16" ? at::kHalf : at::kFloat;
  if (keep_latest_k_ == 1)
    throw Error("checkpoint.keep_latest_k = 1 would delete the last checkpoint while the next is being written",
                "use 0 (keep all) or at least 2");
  for (const auto& p : o.exclude_from_loading) {
    if (!kParts.count(p))
      throw Error("checkpoint.exclude_from_loading holds \"" + p + "\", which is not a part of a checkpoint",
                  "use model, optimizer, lr_scheduler, dataloader or train_state");
    exclude_.insert(p);
  }
  config_toml_ = o.config_toml;
}

Checkpointer::~Checkpointer() {
  if (thread_.joinable()) thread_.join();
  if (job_ && job_->error) {
    try {
      std::rethrow_exception(job_->error);
    } catch (const std::exception& e) {
      log::warning(std::string("the last checkpoint save failed: ") + e.what());
    }
  }
}

void Checkpointer::agree(std::exception_ptr error, const std::string& doing, const std::function<void()>& on_failure) {
  const bool failed = ctx_.any_failed ? ctx_.any_failed(error != nullptr) : error != nullptr;
  if (failed && on_failure) {
    try {
      on_failure();
    } catch (const std::exception& e) {
      log::warning(std::string("while cleaning up after a failure: ") + e.what());
    }
  }
  if (failed && !error)
    throw Error("another rank failed while " + doing + " (its message above names the problem)",
                "fix what that rank reports");
  if (error) std::rethrow_exception(error);
}

void Checkpointer::remove_unfinished(const fs::path& partial) const {
  if (ctx_.rank != 0) return;  // every rank has finished with the folder: the collective came first
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (ec) log::warning("could not remove the failed save's folder " + partial.string() + ": " + ec.message());
  else log::info("Removed " + partial.string() + " (the failed save)");
}

bool Checkpointer::has_checkpoint() const { return !list_steps(folder_).complete.empty(); }

bool Checkpointer::should_save(int64_t step, bool last_step) const {
  if (!enabled_ || load_only_) return false;
  if (step == 1 && first_step_) return true;
  if (last_step) return true;
  return step % interval_ == 0;
}

LoadResult Checkpointer::load(StateDict& state) {
  LoadResult r;
  if (!enabled_) return r;
  std::exception_ptr error;
  try {
    // ---- which checkpoint -------------------------------------------------------------------
    const Listing listing = list_steps(folder_);
    for (const auto& u : listing.unfinished)
      log::warning("ignoring the unfinished checkpoint " + u.string() + " (a save was interrupted; it is deleted "
                   "after this run's first save)");
    for (const auto& f : listing.foreign)
      log::info("Leaving " + f.string() + " alone: not a checkpoint (no metadata.json)");
    fs::path dir;
    bool model_only = false;
    if (load_step_ >= 0) {
      auto it = listing.complete.find(load_step_);
      if (it == listing.complete.end()) {
        std::string have;
        for (const auto& [s, p] : listing.complete) have += (have.empty() ? "" : ", ") + std::to_string(s);
        throw Error("checkpoint.load_step = " + std::to_string(load_step_) + ": " + folder_ + " holds no step-" +
                        std::to_string(load_step_),
                    have.empty() ? "the folder holds no checkpoint; remove checkpoint.load_step"
                                 : "use one of the saved steps: " + have);
      }
      dir = it->second;
    } else if (!listing.complete.empty()) {
      // The latest checkpoint that can resume training. Model-only exports (a last save with
      // last_save_model_only) are skipped; a model-only step 0 is a seed checkpoint and is loaded.
      for (auto it = listing.complete.rbegin(); it != listing.complete.rend() && dir.empty(); ++it) {
        if (it->first == 0 || open_state_reader(it->second.string())->holds_full_state()) dir = it->second;
        else
          log::info("Checkpoint " + it->second.string() + " holds only the model (a final export): not resumed from");
      }
    }
    if (dir.empty() && !initial_load_path_.empty()) {
      dir = initial_load_path_;
      if (!fs::exists(dir / "metadata.json") && !fs::exists(dir / ".metadata")) {
        const Listing inner = list_steps(dir);
        if (inner.complete.empty())
          throw Error("checkpoint.initial_load_path = \"" + initial_load_path_ +
                          "\" is neither a checkpoint step folder nor a folder holding one",
                      "point it at a step-N folder (with metadata.json, or .metadata for PyTorch's format)");
        dir = inner.complete.rbegin()->second;
      }
      model_only = initial_model_only_;
    }
    if (dir.empty()) {
      check_nothing_overwritten(0);
      return r;
    }
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<StateReader> reader = open_state_reader(dir.string());
    if (!ctx_.reads_torchtitan_checkpoints && dynamic_cast<DcpReader*>(reader.get()))
      throw Error(dir.string() + " is a torchtitan checkpoint (DCP) of model " + ctx_.model.value("name", std::string("?")) +
                      ", which keeps the wq and wk rows of each head in another order than titan.cpp",
                  "convert it first, which reorders them: titan convert from-dcp " + dir.string() + " OUT_STEP_FOLDER "
                  "--model " + ctx_.model.value("name", std::string("?")) + " --flavor " +
                      ctx_.model.value("flavor", std::string("FLAVOR")) + "; then load OUT_STEP_FOLDER");
    if (!reader->holds_full_state()) model_only = true;
    r.loaded = true;
    r.path = dir.string();
    r.model_only = model_only;
    r.step = model_only ? 0 : reader->step();
    check_nothing_overwritten(r.step);

    // ---- the model it was saved from, then this rank's boxes ---------------------------------------
    const std::string saved_model = reader->model_flavor();
    if (!exclude_.count("model") || (!model_only && !exclude_.count("optimizer"))) check_model(*reader, state, dir.string());
    auto wanted = [&](const StateTensor& t) {
      const bool is_model = t.key.rfind("model.", 0) == 0;
      if (is_model) return !exclude_.count("model");
      return !model_only && !exclude_.count("optimizer");
    };
    for (const auto& t : state.tensors) {
      if (!wanted(t)) continue;
      const bool is_model = t.key.rfind("model.", 0) == 0;
      if (!reader->has(t.key))
        throw Error("the checkpoint " + dir.string() + " (model flavor " + saved_model + ") holds no " + t.key,
                    is_model ? "load a checkpoint of this model, or set checkpoint.exclude_from_loading"
                             : "it holds no optimizer state; load it with checkpoint.exclude_from_loading = [\"optimizer\"]");
      const auto saved_shape = reader->global_shape(t.key);
      if (saved_shape != t.global_shape)
        throw Error("the checkpoint " + dir.string() + " holds " + t.key + " with shape " + shape_str(saved_shape) +
                        " but this model's is " + shape_str(t.global_shape) + " (saved flavor " + saved_model +
                        ", this run's " + ctx_.model.value("flavor", "?") + ")",
                    "load a checkpoint of the same model flavor and vocabulary size");
    }
    // Several tensors at a time (reads, checksums and copies overlap) where the reader allows.
    std::vector<StateTensor*> todo;
    for (auto& t : state.tensors)
      if (wanted(t) && !(!t.global_shape.empty() && t.box.numel() == 0)) todo.push_back(&t);
    std::atomic<size_t> next{0};
    std::exception_ptr first_error;
    std::mutex error_mu;
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < todo.size();) {
        try {
          reader->read_into(todo[i]->key, todo[i]->box, todo[i]->local);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!first_error) first_error = std::current_exception();
          next = todo.size();
        }
      }
    };
    std::vector<std::thread> pool;
    const int threads = reader->thread_safe() ? std::max(1, std::min<int>(4, static_cast<int>(std::thread::hardware_concurrency()))) : 1;
    for (int k = 1; k < threads; ++k) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
    if (first_error) std::rethrow_exception(first_error);
    r.scalars = model_only ? nlohmann::json::object() : reader->scalars();
    for (const auto& p : exclude_) r.scalars.erase(p);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log::info("Loaded the checkpoint " + dir.string() + (model_only ? " (model only)" : "") + " in " +
              log::format("%.2f", secs) + " seconds: " + log::format("%.3f", reader->bytes_read() / 1e9) +
              " GB read by this rank (" + log::format("%.2f", reader->bytes_read() / 1e9 / std::max(secs, 1e-9)) +
              " GB/s), " + reader->describe());
  } catch (...) {
    error = std::current_exception();
  }
  agree(error, "loading the checkpoint");
  return r;
}

void Checkpointer::check_model(StateReader& reader, const StateDict& state, const std::string& dir) const {
  const nlohmann::json saved = reader.model_description();
  const std::string saved_flavor = saved.value("flavor", std::string("?")), flavor = ctx_.model.value("flavor", std::string("?"));
  const std::string flavors = " (saved flavor " + saved_flavor + ", this run's " + flavor + ")";
  const std::string fix = "resume with the saved model's settings (" + dir +
                          "/config.toml holds the saved run's config), or train it anew in another checkpoint.folder";
  if (saved.contains("name") && ctx_.model.contains("name") && saved["name"] != ctx_.model["name"])
    throw Error("the checkpoint " + dir + " holds a " + saved["name"].dump() + " model; this run trains " +
                    ctx_.model["name"].dump(),
                fix);
  if (saved.contains("args") && saved["args"].is_object() && ctx_.model.contains("args")) {
    for (const auto& [arg, value] : ctx_.model["args"].items()) {
      // max_seq_len follows training.seq_len; multiple_of and ffn_dim_multiplier are ways to
      // reach ffn_hidden_dim, which is compared (a converted checkpoint states it directly).
      if (arg == "max_seq_len" || arg == "multiple_of" || arg == "ffn_dim_multiplier" || !saved["args"].contains(arg))
        continue;
      if (saved["args"][arg] != value)
        throw Error("the checkpoint " + dir + " was saved from a model with " + arg + " = " + saved["args"][arg].dump() +
                        "; this run's model has " + arg + " = " + value.dump() + flavors,
                    fix);
    }
  }
  if (exclude_.count("model")) return;
  std::set<std::string> mine = ctx_.model_keys;
  if (mine.empty())
    for (const auto& t : state.tensors)
      if (t.key.rfind("model.", 0) == 0) mine.insert(t.key);
  for (const auto& key : reader.keys())
    if (key.rfind("model.", 0) == 0 && !mine.count(key))
      throw Error("the checkpoint " + dir + " holds " + key + ", which this run's model does not have" + flavors,
                  fix + "; or load it without the model: checkpoint.exclude_from_loading = [\"model\"]");
}

void Checkpointer::check_nothing_overwritten(int64_t start_step) const {
  if (!enabled_ || load_only_) return;
  const Listing listing = list_steps(folder_);
  std::vector<std::pair<int64_t, std::string>> in_way;  // step folders this run would save into
  // The steps this run saves on schedule (a preemption save elsewhere meets commit_step's guard).
  auto saves = [&](int64_t step) { return step > start_step && step <= steps_ && should_save(step, step == steps_); };
  for (const auto& [step, path] : listing.complete)
    if (saves(step))
      in_way.emplace_back(step, std::string(listing.committed.count(step) ? "" : "a PyTorch distributed checkpoint, ") +
                                    (step > 0 && !open_state_reader(path.string())->holds_full_state()
                                         ? "a model-only export, not resumed from"
                                         : "a checkpoint"));
  for (const auto& f : listing.foreign)
    if (const auto step = step_of(f.filename().string()); step && saves(*step))
      in_way.emplace_back(*step, "not a checkpoint: no metadata.json");
  if (in_way.empty()) return;
  std::sort(in_way.begin(), in_way.end());
  const std::string first = (fs::path(folder_) / ("step-" + std::to_string(in_way[0].first))).string();
  throw Error(first + " already exists (" + in_way[0].second + ")" +
                  (in_way.size() > 1 ? " with " + std::to_string(in_way.size() - 1) + " more step folders after it" : "") +
                  ", and this run, training steps " + std::to_string(start_step + 1) + " to " + std::to_string(steps_) +
                  ", would save that step; titan.cpp never overwrites a step folder",
              "move it out of " + folder_ + ", give this run another checkpoint.folder, or set checkpoint.load_only = true");
}

void Checkpointer::save(int64_t step, const StateDict& state, bool model_only, bool export_cast) {
  wait();  // two saves never overlap
  const auto start = std::chrono::steady_clock::now();
  auto job = std::make_unique<Job>();
  job->step = step;
  job->model_only = model_only;
  job->start = start;
  job->final_dir = fs::path(folder_) / ("step-" + std::to_string(step));
  job->partial = fs::path(folder_) / ("step-" + std::to_string(step) + ".partial-" + std::to_string(ctx_.run_id));
  job->chunks = nlohmann::json::object();
  std::exception_ptr error;
  try {
    at::NoGradGuard no_grad;
    c10::DeviceIndex sync_device = -1;
    auto writes = [&](const StateTensor& t) {  // whether this save writes `t`
      if (!t.writer || (model_only && t.key.rfind("model.", 0) != 0)) return false;
      return t.global_shape.empty() || t.box.numel() > 0;  // not an empty FSDP box
    };
    const bool cast = model_only && export_cast;
    if (pinned_) {
      // async_with_pinned_mem: one block of pinned memory of exactly the staged bytes (cudaHostAlloc),
      // cut into the staging tensors, kept while the tensors keep their shapes. (The caching host
      // allocator would round each buffer up to a power of two and keep it: up to twice the state.)
      std::vector<std::pair<std::vector<int64_t>, at::ScalarType>> shapes;
      int64_t need = 0;
      auto bytes_of = [](const std::pair<std::vector<int64_t>, at::ScalarType>& shape) {
        return c10::multiply_integers(shape.first) * static_cast<int64_t>(c10::elementSize(shape.second));
      };
      for (const auto& t : state.tensors)
        if (writes(t)) {
          shapes.emplace_back(t.local.sizes().vec(), cast ? export_dtype_ : t.local.scalar_type());
          if (t.local.is_cuda()) need += (bytes_of(shapes.back()) + 63) / 64 * 64;
        }
      if (shapes != staging_shapes_) {
        staging_.clear();
        pinned_block_ = at::Tensor();  // freed before the new one is taken
        pinned_block_ = cuda::pinned_bytes(need);
        int64_t offset = 0;
        size_t k = 0;
        for (const auto& t : state.tensors) {
          if (!writes(t)) continue;
          const auto& [sizes, dtype] = shapes[k++];
          const int64_t bytes = bytes_of({sizes, dtype});
          if (t.local.is_cuda() && bytes > 0) {
            staging_.push_back(pinned_block_.narrow(0, offset, bytes).view(dtype).view(sizes));
            offset += (bytes + 63) / 64 * 64;
          } else {
            staging_.push_back(at::empty(sizes, at::TensorOptions().dtype(dtype)));
          }
        }
        staging_shapes_ = std::move(shapes);
      }
    }
    for (const auto& t : state.tensors) {
      if (!writes(t)) continue;
      at::Tensor c = cast ? t.local.detach().to(export_dtype_) : t.local.detach();
      // Staged: a copy when the write runs in the background (or the tensor is on a GPU), into
      // the buffers of the previous save when they fit (no new memory after the first).
      // With async_with_pinned_mem, GPU tensors go to pinned buffers without blocking, and the
      // device is synchronised once after the last.
      if (async_ || !c.device().is_cpu()) {
        const size_t k = job->tensors.size();
        const bool pinned = pinned_ && c.device().is_cuda();
        if (!(k < staging_.size() && staging_[k].sizes() == c.sizes() && staging_[k].scalar_type() == c.scalar_type())) {
          if (k >= staging_.size()) staging_.resize(k + 1);
          staging_[k] = at::empty(c.sizes(), c.options().device(at::kCPU));  // pinned ones: made above
        }
        staging_[k].copy_(c, /*non_blocking=*/pinned);
        if (pinned) sync_device = c.device().index();
        c = staging_[k];
      } else {
        c = c.contiguous();
      }
      job->chunks[t.key] = {{"offsets", t.box.offsets}, {"sizes", c.sizes().vec()},
                            {"global_shape", t.global_shape}};
      job->tensors.emplace_back(t.key, c);
    }
    if (sync_device >= 0) at::detail::getCUDAHooks().deviceSynchronize(sync_device);
    job->scalars = state.scalars;
    std::error_code ec;
    fs::create_directories(job->partial, ec);
    if (ec) throw Error("cannot create the checkpoint folder " + job->partial.string() + ": " + ec.message(),
                        "make job.dump_folder / checkpoint.folder writable");
  } catch (...) {
    error = std::current_exception();
  }
  agree(error, "staging the checkpoint", [&] { remove_unfinished(job->partial); });
  job_ = std::move(job);
  if (async_) {
    const double stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log::info("Staged the checkpoint of step " + std::to_string(step) + " in " + log::format("%.3f", stall) +
              " seconds (the step's stall); writing it in the background");
    thread_ = std::thread([this] { run_job(*job_); });
  } else {
    run_job(*job_);
    wait();
  }
}

void Checkpointer::wait() {
  if (!job_) return;
  if (thread_.joinable()) thread_.join();
  std::exception_ptr error = job_->error;
  const int64_t step = job_->step;
  const double secs = job_->seconds;
  const uint64_t bytes = job_->bytes;
  const double crc_secs = job_->checksum_seconds, write_secs = job_->write_seconds;
  const bool model_only = job_->model_only;
  const std::string dir = job_->final_dir.string();
  const fs::path partial = job_->partial;
  job_.reset();
  agree(error, "saving the checkpoint of step " + std::to_string(step), [&] { remove_unfinished(partial); });
  log::info("Saved the checkpoint of step " + std::to_string(step) + (model_only ? " (model only)" : "") + " to " +
            dir + " in " + log::format("%.2f", secs) + " seconds: " + log::format("%.3f", bytes / 1e9) +
            " GB written by this rank (" + log::format("%.2f", bytes / 1e9 / std::max(secs, 1e-9)) + " GB/s; checksums " +
            log::format("%.2f", crc_secs) + " s, write and flush " + log::format("%.2f", write_secs) + " s)");
  if (TestHooks::get().die_after_save_step == step) std::raise(SIGKILL);  // a crash right after the save
}

void Checkpointer::run_job(Job& job) {
  try {
    // ---- this rank's file -------------------------------------------------------------------------
    std::function<void(uint64_t)> die;
    uint64_t total = 0;
    for (const auto& [key, t] : job.tensors) total += static_cast<uint64_t>(t.numel()) * t.element_size();
    if (TestHooks::get().die_in_save_step == job.step)  // a crash halfway through the write
      die = [total](uint64_t written) {
        if (written * 2 >= total) std::raise(SIGKILL);
      };
    const ShardTimes times = write_shard(job.partial, ctx_.rank, job.tensors, job.chunks, die);
    job.bytes = times.bytes;
    job.checksum_seconds = times.checksum_seconds;
    job.write_seconds = times.write_seconds;
    job.tensors.clear();  // the staged copies are no longer needed

    // ---- rank 0: the metadata, once every rank's file is there, then the commit ----------------------
    if (ctx_.rank == 0) {
      const auto deadline = std::chrono::steady_clock::now() + ctx_.wait_for_files;
      for (int r = 0; r < ctx_.world_size; ++r) {
        while (!fs::exists(job.partial / shard_name(r))) {
          if (std::chrono::steady_clock::now() > deadline)
            throw Error("rank " + std::to_string(r) + "'s checkpoint file " + (job.partial / shard_name(r)).string() +
                            " did not appear",
                        "checkpoint.folder must be on a file system every rank shares");
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
      commit_step(job.partial, job.final_dir, ctx_.world_size, job.step, job.model_only, ctx_.layout, ctx_.model,
                  job.model_only ? nlohmann::json::object() : job.scalars, config_toml_, ctx_.run_id);
      std::error_code ec;
      // Unfinished saves of earlier runs (the folder's lock says none is live), and the step
      // folders titan.cpp committed beyond keep_latest_k. Nothing else is touched.
      const Listing listing = list_steps(folder_);
      const std::string mine = ".partial-" + std::to_string(ctx_.run_id);
      for (const auto& u : listing.unfinished) {
        const std::string name = u.filename().string();
        if (name.size() >= mine.size() && name.compare(name.size() - mine.size(), mine.size(), mine) == 0) continue;
        log::info("Deleting " + u.string() + " (an interrupted save)");
        fs::remove_all(u, ec);
      }
      if (keep_latest_k_ > 0) {
        std::vector<int64_t> committed(listing.committed.begin(), listing.committed.end());
        for (size_t i = 0; i + keep_latest_k_ < committed.size(); ++i) {
          const fs::path old = listing.complete.at(committed[i]);
          log::info("Deleting the old checkpoint " + old.string() + " (checkpoint.keep_latest_k = " +
                    std::to_string(keep_latest_k_) + ")");
          fs::remove_all(old, ec);
        }
      }
    }
  } catch (...) {
    job.error = std::current_exception();
  }
  job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job.start).count();
}

std::string checkpoint_info(const std::string& path) {
  fs::path dir = path;
  if (!fs::exists(dir / "metadata.json")) {
    const Listing l = list_steps(dir);
    if (l.complete.empty())
      throw Error(path + " is neither a checkpoint step folder nor a folder holding one",
                  "point at <dump_folder>/checkpoint or one of its step-N folders");
    std::string out;
    for (const auto& u : l.unfinished) out += "unfinished (ignored on load): " + u.string() + "\n";
    for (const auto& [s, p] : l.complete) out += checkpoint_info(p.string()) + "\n";
    return out;
  }
  const nlohmann::json m = read_metadata(dir);
  check_step_matches_folder(dir, m);
  std::string out = dir.string() + "\n";
  out += "  step: " + m.at("step").dump() + "\n";
  std::string contents;
  for (const auto& c : m.at("contents")) contents += (contents.empty() ? "" : ", ") + c.get<std::string>();
  out += "  contents: " + contents + "\n";
  out += "  model: " + m.value("model", nlohmann::json::object()).value("name", "?") + " " +
         m.value("model", nlohmann::json::object()).value("flavor", "?") + "\n";
  out += "  saved from: " + m.value("layout", nlohmann::json::object()).value("describe", "?") + "\n";
  if (m.contains("scalars") && m["scalars"].contains("train_state"))
    out += "  tokens seen: " + m["scalars"]["train_state"].value("tokens_seen", nlohmann::json(0)).dump() + "\n";
  ChunkReader reader(dir);
  int64_t chunks = 0, params = 0, tensors = 0;
  std::map<std::string, int64_t> by_dtype;
  for (const auto& [key, t] : m.at("tensors").items()) {
    ++tensors;
    int64_t n = 1;
    for (auto d : t.at("global_shape")) n *= d.get<int64_t>();
    if (key.rfind("model.", 0) == 0) params += n;
    by_dtype[t.at("dtype").get<std::string>()] += n;
    for (const auto& c : t.at("chunks")) {
      reader.read(key, c, t.at("dtype").get<std::string>());
      ++chunks;
    }
  }
  out += "  tensors: " + std::to_string(tensors) + " (" + log::with_commas(params) + " model parameters)";
  for (const auto& [d, n] : by_dtype) out += ", " + log::with_commas(n) + " " + d;
  out += "\n  files: " + std::to_string(m.at("files").size()) + ", " + log::format("%.3f", reader.bytes() / 1e6) +
         " MB of tensor data\n";
  out += "  checksums: all " + std::to_string(chunks) + " chunks verified\n";
  return out;
}

}  // namespace titan::components
