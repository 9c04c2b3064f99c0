#include "titan/distributed/data_parallel.h"

#include <algorithm>
#include <array>
#include <optional>

#include <torch/csrc/autograd/custom_function.h>

#include <c10/core/StorageImpl.h>

#include "titan/common/error.h"
#include "titan/components/loss.h"
#include "titan/kernels/float8.h"

namespace titan::distributed {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Slot {
  std::string name;
  at::Tensor* model_slot = nullptr;  // the model member its part reads
  size_t layout = 0;                 // index into DataParallel::layouts_
  Box box;                           // this rank's box of the global tensor
  std::vector<int64_t> local_shape;  // the tensor-parallel share: what FSDP gathers
  int64_t rows = 0, rows_per_rank = 0, row_numel = 0;
  at::Tensor shard;     // leaf the optimizer owns: (rows_per_rank, ...) float32, or the whole share
  c10::Storage unsharded;  // FSDP: the persistent gathered buffer, its memory released between uses
  bool tp_sharded = false, tp_partial = false;
  int64_t offset = 0, numel = 0;  // place of this slot in the unit's flat gradient buffer (elements)
  int64_t gather_offset = 0, gather_bytes = 0;  // and in the unit's all-gather buffer (bytes)
  at::ScalarType gather_dtype = at::kFloat;     // what is gathered: the parameter dtype, or float8
  // The float8 all-gather: the weight's scale, and whether it is that of the current shard
  // (the optimizer's step makes it stale).
  at::Tensor float8_scale;
  bool float8_current = false;
  // Expert parallelism: the slot's FSDP is the efsdp group's (the ranks holding the same
  // experts), bucket 1; the others', dp_shard_cp's, bucket 0. Without efsdp (expert_parallel_degree
  // = dp_shard x cp) the shard is this rank's experts, used as it is (never gathered; in neither
  // bucket), its gradients not reduced yet (no sync) in local_accumulated.
  int bucket = 0;
  bool local = false;
  bool expert = false;
  at::Tensor local_accumulated;
};

// The slots of a unit that FSDP gathers over one group, packed into one buffer.
struct Bucket {
  Group* gather = nullptr;  // the all-gathers
  Group* reduce = nullptr;  // the gradients' reduce-scatters
  int W = 1;
  int64_t shard_numel = 0;   // the unit's float32 shard elements in this bucket
  int64_t gather_bytes = 0;  // the all-gather buffer of one rank
  Pending gather_pending;
  at::Tensor recv;         // (W * gather_bytes) bytes
  at::Tensor accumulated;  // (W * shard_numel) float32 gradients not reduced yet (no sync)
};

struct Unit {
  size_t index = 0;
  std::string part;
  std::vector<Slot> slots;
  bool reshard_after_forward = true;
  bool gathered = false;
  bool issued = false;
  std::array<Bucket, 2> buckets;  // dp_shard_cp's slots, efsdp's (expert parallelism)
};

namespace {

// Frees a storage's memory but keeps it (and every tensor over it) valid.
void free_storage(c10::Storage& s) { s.unsafeGetStorageImpl()->reset(); }

// Gives a storage freed by free_storage its memory back (contents undefined).
void alloc_storage(c10::Storage& s, size_t nbytes) {
  c10::StorageImpl* impl = s.unsafeGetStorageImpl();
  if (impl->nbytes() == nbytes && impl->data() != nullptr) return;
  impl->set_data_ptr_noswap(impl->allocator()->allocate(nbytes));
  impl->set_nbytes(nbytes);
}

// A tensor over `storage` with its own version counter and no autograd history: writing
// through it does not look like an in-place change to the tensors autograd saved, and each
// forward's output is a new tensor over the same memory.
at::Tensor over(const c10::Storage& storage, at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor a = at::empty({0}, options.requires_grad(false));
  a.set_(storage, 0, sizes, c10::contiguous_strides(sizes));
  return a;
}

std::vector<int64_t> padded_shape(const Slot& s, int world) {
  std::vector<int64_t> shape = s.local_shape;
  shape[0] = s.rows_per_rank * world;
  return shape;
}

// The gathered blocks of a unit's buckets (W x gather_bytes each, rank-major) into its slots'
// persistent buffers: each rank's rows of a slot, one after the other, are the slot's padded tensor.
void unpack(Unit& unit) {
  at::NoGradGuard no_grad;
  for (Slot& s : unit.slots) {
    if (s.local) continue;
    const Bucket& b = unit.buckets[s.bucket];
    at::Tensor blocks = b.recv.view({b.W, b.gather_bytes});
    alloc_storage(s.unsharded, static_cast<size_t>(b.W * s.gather_bytes));
    over(s.unsharded, {b.W, s.gather_bytes}, b.recv.options())
        .copy_(blocks.narrow(1, s.gather_offset, s.gather_bytes));
  }
}

// What a unit's forward reads for a slot: the gathered tensor, or for a float8 gather a stand-in
// of the weight's shape (never read; it carries the gradient back) with the float8 value attached.
at::Tensor gathered(const Slot& s, int W, const at::TensorOptions& param_options) {
  const auto shape = padded_shape(s, W);
  if (s.gather_dtype != at::kFloat8_e4m3fn)
    return over(s.unsharded, shape, param_options.dtype(s.gather_dtype)).narrow(0, 0, s.rows);
  std::vector<int64_t> rows_shape = shape;
  rows_shape[0] = s.rows;
  at::Tensor stand_in = at::zeros({}, param_options.requires_grad(false)).expand(rows_shape);
  kernels::attach_float8_weight(
      stand_in, {over(s.unsharded, shape, param_options.dtype(at::kFloat8_e4m3fn)).narrow(0, 0, s.rows), s.float8_scale});
  return stand_in;
}

// Forward: the all-gathered parameters of one unit, new tensors over the persistent buffers.
// Backward hands the gradients to the DataParallel, which reduces them asynchronously and adds
// them to the shards itself.
struct GatherFunction : public torch::autograd::Function<GatherFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList shards, DataParallel* dp, Unit* unit,
                               int64_t param_dtype) {
    (void)shards;
    ctx->saved_data["dp"] = reinterpret_cast<int64_t>(dp);
    ctx->saved_data["unit"] = static_cast<int64_t>(unit->index);
    unpack(*unit);
    const auto options = shards[0].options().dtype(static_cast<at::ScalarType>(param_dtype)).requires_grad(false);
    variable_list out;  // the gathered slots only (not the local expert-parallel ones), in order
    for (const Slot& s : unit->slots)
      if (!s.local) out.push_back(gathered(s, unit->buckets[s.bucket].W, options));
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* dp = reinterpret_cast<DataParallel*>(ctx->saved_data["dp"].toInt());
    dp->post_backward(static_cast<size_t>(ctx->saved_data["unit"].toInt()), grads);
    variable_list none(grads.size());
    none.emplace_back();  // dp
    none.emplace_back();  // unit
    none.emplace_back();  // param_dtype
    return none;
  }
};

// The parameters themselves, with the same backward hand-off: as views for DDP and tensor
// parallelism alone (the gradients go to post_backward); for expert parallelism, a unit's local
// slots cast to the parameter dtype (to post_backward_local).
struct HandOffFunction : public torch::autograd::Function<HandOffFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList params, DataParallel* dp, size_t unit,
                               std::optional<at::ScalarType> local_dtype) {
    ctx->saved_data["dp"] = reinterpret_cast<int64_t>(dp);
    ctx->saved_data["unit"] = static_cast<int64_t>(unit);
    ctx->saved_data["local"] = local_dtype.has_value();
    variable_list out;
    // A view where the dtype is the parameter's own (a local expert without mixed precision): no copy.
    for (const auto& p : params)
      out.push_back(local_dtype && p.scalar_type() != *local_dtype ? p.to(*local_dtype) : p.view_as(p));
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* dp = reinterpret_cast<DataParallel*>(ctx->saved_data["dp"].toInt());
    const auto unit = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    if (ctx->saved_data["local"].toBool()) dp->post_backward_local(unit, grads);
    else dp->post_backward(unit, grads);
    return variable_list(grads.size() + 3);  // none for the parameters (handed off), dp, unit, local_dtype
  }
};

void accumulate(at::Tensor& param, const at::Tensor& grad) {
  if (param.grad().defined()) param.mutable_grad().add_(grad);
  else param.mutable_grad() = grad.clone();
}

}  // namespace

DataParallel::DataParallel(std::vector<ModelPart> parts, std::vector<ParamLayout> layouts, InitFn init,
                           std::function<void(ForwardHooks*)> install_hooks, DeviceMesh& mesh, at::Device device,
                           DataParallelOptions options)
    : install_hooks_(std::move(install_hooks)), mesh_(mesh), shard_(mesh.group("dp_shard_cp")),
      reduce_(mesh.group("dp_shard_cp:grads")), replicate_(mesh.group("dp_replicate")), tp_(mesh.group("tp")),
      ep_(mesh.group("ep")), efsdp_(mesh.group("efsdp")), efsdp_reduce_(mesh.group("efsdp:grads")), device_(device),
      options_(std::move(options)), layouts_(std::move(layouts)), sync_(true) {
  at::NoGradGuard no_grad;
  const int W = shard_.size();
  const MeshCoordinate coordinate = [&mesh](const std::string& name) {
    return std::pair<int, int>{mesh.rank(name), mesh.size(name)};
  };
  size_t next_layout = 0;
  for (size_t u = 0; u < parts.size(); ++u) {
    auto unit = std::make_unique<Unit>();
    unit->buckets[0].gather = &shard_;
    unit->buckets[0].reduce = &reduce_;
    unit->buckets[0].W = W;
    unit->buckets[1].gather = &efsdp_;
    unit->buckets[1].reduce = &efsdp_reduce_;
    unit->buckets[1].W = efsdp_.size();
    unit->index = u;
    unit->part = parts[u].name;
    unit->reshard_after_forward =
        u < options_.reshard_after_forward.size() ? options_.reshard_after_forward[u] : true;
    for (auto& np : parts[u].params) {
      if (next_layout >= layouts_.size() || layouts_[next_layout].fqn != np.name)
        throw std::logic_error("DataParallel: no layout for " + np.name + " in the order of the parts");
      const ParamLayout& layout = layouts_[next_layout];
      Slot s;
      s.name = np.name;
      s.model_slot = np.tensor;
      s.layout = next_layout++;
      s.tp_sharded = layout.sharded_on("tp");
      s.tp_partial = layout.on("tp").kind == Placement::Kind::Partial;
      // Expert parallelism's experts: split over "ep", then FSDP's split over "efsdp".
      s.expert = std::find(options_.local.begin(), options_.local.end(), s.name) != options_.local.end();
      if (s.expert && !layout.sharded_on("ep"))
        throw std::logic_error("DataParallel: expert-parallel " + s.name + " is not split over ep");
      s.bucket = s.expert ? 1 : 0;
      Bucket& bucket = unit->buckets[s.bucket];
      // FSDP's split, when there is one, is the last: the share it divides is the box before it.
      const bool fsdp_split = layout.sharded_on(s.expert ? "efsdp" : "dp_shard_cp");
      s.local_shape = local_box(layout, coordinate, fsdp_split ? 1 : 0).sizes;
      s.box = local_box(layout, coordinate);
      s.rows = s.local_shape[0];
      int64_t numel = 1;
      for (int64_t d : s.local_shape) numel *= d;
      s.row_numel = s.rows ? numel / s.rows : 0;
      s.rows_per_rank = piece_rows(s.rows, bucket.W);
      s.local = s.expert && bucket.W == 1;
      // This rank draws only its box, with the values a full draw has there (per (seed, name,
      // element)); FSDP's padding rows past the end are zero.
      std::vector<int64_t> shard_shape = s.local_shape;
      shard_shape[0] = s.rows_per_rank;
      at::Tensor shard = at::empty(shard_shape, at::TensorOptions().dtype(at::kFloat));
      if (s.box.sizes[0] < s.rows_per_rank) shard.narrow(0, s.box.sizes[0], s.rows_per_rank - s.box.sizes[0]).zero_();
      if (s.box.numel() > 0) {
        at::Tensor mine = shard.narrow(0, 0, s.box.sizes[0]);
        init(s.name, layout.global_shape, s.box.offsets, mine);
      }
      s.shard = shard.to(device).requires_grad_(true);
      s.unsharded = c10::Storage(c10::Storage::use_byte_size_t(), 0,
                                 c10::GetAllocator(device.type()), /*resizable=*/true);
      s.offset = bucket.shard_numel;
      s.numel = s.local ? 0 : s.rows_per_rank * s.row_numel;
      bucket.shard_numel += s.numel;
      const bool f8 = W > 1 && std::find(options_.float8_gather.begin(), options_.float8_gather.end(), s.name) !=
                                   options_.float8_gather.end();
      s.gather_dtype = f8 && !s.expert ? at::kFloat8_e4m3fn : options_.param_dtype;
      // Each slot's bytes start aligned to the parameter dtype, so that they can be viewed in it.
      const int64_t align = static_cast<int64_t>(c10::elementSize(options_.param_dtype));
      s.gather_offset = (bucket.gather_bytes + align - 1) / align * align;
      s.gather_bytes = s.numel * static_cast<int64_t>(c10::elementSize(s.gather_dtype));
      bucket.gather_bytes = s.gather_offset + s.gather_bytes;
      unit->slots.push_back(std::move(s));
    }
    const int64_t align = static_cast<int64_t>(c10::elementSize(options_.param_dtype));
    for (Bucket& b : unit->buckets) b.gather_bytes = (b.gather_bytes + align - 1) / align * align;
    units_.push_back(std::move(unit));
  }
  install_hooks_(this);
}

DataParallel::~DataParallel() { install_hooks_(nullptr); }

std::vector<at::Tensor> DataParallel::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& u : units_)
    for (const auto& s : u->slots) out.push_back(s.shard);
  return out;
}

std::vector<std::string> DataParallel::parameter_names() const {
  std::vector<std::string> out;
  for (const auto& u : units_)
    for (const auto& s : u->slots) out.push_back(s.name);
  return out;
}

std::vector<Box> DataParallel::boxes() const {
  std::vector<Box> out;
  for (const auto& u : units_)
    for (const auto& s : u->slots) out.push_back(s.box);
  return out;
}

void DataParallel::update_float8_scales(const std::vector<Slot*>& slots) {
  if (slots.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> amax;
  for (Slot* s : slots) amax.push_back(s->shard.detach().abs().max().to(at::kFloat).reshape({1}));
  at::Tensor all = at::cat(amax);
  // The whole weight's amax: its shards over FSDP and, split or not, tensor parallelism.
  shard_.all_reduce(all, /*max=*/true).wait();
  if (!tp_.trivial()) tp_.all_reduce(all, /*max=*/true).wait();
  for (size_t i = 0; i < slots.size(); ++i) {
    slots[i]->float8_scale = kernels::float8_scale(all[static_cast<int64_t>(i)], at::kFloat8_e4m3fn, /*pow2=*/false);
    slots[i]->float8_current = true;
  }
}

void DataParallel::after_optimizer_step() {
  std::vector<Slot*> slots;
  for (auto& u : units_)
    for (Slot& s : u->slots)
      if (s.gather_dtype == at::kFloat8_e4m3fn) {
        s.float8_current = false;
        slots.push_back(&s);
      }
  if (options_.float8_precompute) update_float8_scales(slots);
}

void DataParallel::gather_start(size_t u) {
  Unit& unit = *units_[u];
  if (unit.issued || unit.gathered) return;
  std::vector<Slot*> stale;  // float8 weights whose shard changed since their scale
  for (Slot& s : unit.slots)
    if (s.gather_dtype == at::kFloat8_e4m3fn && !s.float8_current) stale.push_back(&s);
  update_float8_scales(stale);
  for (int k = 0; k < 2; ++k) {
    Bucket& b = unit.buckets[k];
    if (b.gather_bytes == 0) continue;
    at::Tensor send = at::empty({b.gather_bytes}, unit.slots[0].shard.options().dtype(at::kByte));
    {
      at::NoGradGuard no_grad;
      for (const Slot& s : unit.slots) {
        if (s.local || s.bucket != k) continue;
        at::Tensor to = send.narrow(0, s.gather_offset, s.gather_bytes).view(s.gather_dtype);
        const at::Tensor from = s.shard.detach().reshape({-1});
        if (s.gather_dtype == at::kFloat8_e4m3fn) to.copy_(kernels::cast_to_float8(from, s.float8_scale, at::kFloat8_e4m3fn));
        else to.copy_(from);
      }
    }
    b.recv = at::empty({b.W * b.gather_bytes}, send.options());
    b.gather_pending = b.gather->all_gather(b.recv, send);
  }
  unit.issued = true;
}

void DataParallel::gather_finish(size_t u, bool for_backward) {
  Unit& unit = *units_[u];
  gather_start(u);
  for (Bucket& b : unit.buckets)
    if (b.gather_bytes > 0) b.gather_pending.wait();
  unit.issued = false;
  if (for_backward) {
    // The buffers every graph of this unit reads: give them their memory back and refill them.
    unpack(unit);
  } else {
    std::vector<at::Tensor> shards;
    for (const Slot& s : unit.slots)
      if (!s.local) shards.push_back(s.shard);
    if (!shards.empty()) {
      variable_list full =
          GatherFunction::apply(at::TensorList(shards), this, &unit, static_cast<int64_t>(options_.param_dtype));
      size_t k = 0;
      for (Slot& s : unit.slots)
        if (!s.local) *s.model_slot = full[k++];
    }
  }
  for (Bucket& b : unit.buckets) b.recv = at::Tensor();
  unit.gathered = true;
}

void DataParallel::release(size_t u) {
  Unit& unit = *units_[u];
  if (shard_.trivial() || !unit.gathered) return;
  for (Slot& s : unit.slots) free_storage(s.unsharded);
  unit.gathered = false;
}

void DataParallel::before(size_t u, const std::string&) {
  if (u == 0 && !options_.pipelined)  // a new forward: nothing gathered before is current
    release_all();
  Unit& unit = *units_[u];
  if (shard_.trivial()) {  // DDP / tensor parallel alone: the parameters, through the reduce hand-off
    std::vector<at::Tensor> params;
    std::vector<Slot*> slots;
    for (Slot& s : unit.slots)
      if (!s.local) {  // expert parallelism's own experts (ep borrowing tp without FSDP): below
        params.push_back(s.shard);
        slots.push_back(&s);
      }
    if (!params.empty()) {
      variable_list views = HandOffFunction::apply(at::TensorList(params), this, u, std::optional<at::ScalarType>());
      for (size_t i = 0; i < slots.size(); ++i) *slots[i]->model_slot = views[i];
    }
    use_local(u);
    return;
  }
  if (!unit.gathered) gather_finish(u, /*for_backward=*/false);
  use_local(u);
  if (options_.prefetch && u + 1 < units_.size()) gather_start(u + 1);
}

void DataParallel::use_local(size_t u) {
  Unit& unit = *units_[u];
  std::vector<at::Tensor> shards;
  std::vector<Slot*> slots;
  for (Slot& s : unit.slots)
    if (s.local) {
      shards.push_back(s.shard);
      slots.push_back(&s);
    }
  if (slots.empty()) return;
  variable_list views =
      HandOffFunction::apply(at::TensorList(shards), this, u, std::optional<at::ScalarType>(options_.param_dtype));
  for (size_t i = 0; i < slots.size(); ++i) *slots[i]->model_slot = views[i];
}

void DataParallel::post_backward_local(size_t u, std::vector<at::Tensor> grads) {
  Unit& unit = *units_[u];
  size_t k = 0;
  for (Slot& s : unit.slots) {
    if (!s.local) continue;
    const at::Tensor& g_in = grads[k++];
    if (!g_in.defined()) continue;
    at::Tensor g = g_in.to(at::kFloat, false, /*copy=*/true);
    if (s.local_accumulated.defined()) {  // microbatches that did not reduce
      g.add_(s.local_accumulated);
      s.local_accumulated = at::Tensor();
    }
    if (!sync_ && !options_.sync_every_microbatch) {
      s.local_accumulated = g;
      continue;
    }
    auto pending = std::make_shared<Pending>();
    if (!replicate_.trivial()) *pending = replicate_.all_reduce(g);  // HSDP: the replicas' sum
    pending_grads_.emplace_back(pending, [&s, g]() { accumulate(s.shard, g); });
  }
}

at::Tensor DataParallel::after(size_t u, const std::string&, const at::Tensor& out) {
  if (shard_.trivial()) return out;
  if (at::GradMode::is_enabled() && out.requires_grad()) {
    out.register_hook([this, u](const at::Tensor& grad) {
      pre_backward(u);
      return grad;
    });
  }
  if (units_[u]->reshard_after_forward) release(u);
  return out;
}

void DataParallel::pre_backward(size_t u) {
  if (!units_[u]->gathered) gather_finish(u, /*for_backward=*/true);
  if (options_.prefetch && u > 0 && !units_[u - 1]->gathered) gather_start(u - 1);
}

void DataParallel::post_backward(size_t u, std::vector<at::Tensor> grads) {
  Unit& unit = *units_[u];
  if (grads.size() < unit.slots.size()) {  // GatherFunction's or HandOffFunction's: the slots not local only
    std::vector<at::Tensor> all(unit.slots.size());
    for (size_t i = 0, k = 0; i < unit.slots.size(); ++i)
      if (!unit.slots[i].local) all[i] = grads[k++];
    grads = std::move(all);
  }
  const bool reduce_now = sync_ || options_.sync_every_microbatch;
  for (int k = 0; k < 2; ++k) {
    Bucket& b = unit.buckets[k];
    if (b.shard_numel == 0) continue;
    const int W = b.W;
    // Flat float32 buffer of the bucket's gradients, rank-major like the shards.
    at::Tensor flat = at::zeros({W * b.shard_numel}, unit.slots[0].shard.options().dtype(at::kFloat));
    at::Tensor blocks = flat.view({W, b.shard_numel});
    for (size_t i = 0; i < unit.slots.size(); ++i) {
      const Slot& s = unit.slots[i];
      if (s.local || s.bucket != k || !grads[i].defined()) continue;
      if (W == 1) {
        blocks.narrow(1, s.offset, s.numel).copy_(grads[i].reshape({1, -1}));
        continue;
      }
      at::Tensor padded = at::zeros({s.rows_per_rank * W * s.row_numel}, flat.options());
      padded.narrow(0, 0, s.rows * s.row_numel).copy_(grads[i].reshape({-1}));
      blocks.narrow(1, s.offset, s.numel).copy_(padded.view({W, s.numel}));
    }
    if (b.accumulated.defined()) {  // microbatches that did not reduce
      flat.add_(b.accumulated);
      b.accumulated = at::Tensor();
    }
    if (!reduce_now) {
      b.accumulated = flat;
      continue;
    }
    auto pending = std::make_shared<Pending>();
    at::Tensor reduced;
    if (W > 1) {
      reduced = at::empty({b.shard_numel}, flat.options());
      *pending = b.reduce->reduce_scatter_sum(reduced, flat);
    } else {
      reduced = flat;
      *pending = replicate_.all_reduce(flat);
    }
    const bool hsdp = W > 1 && !replicate_.trivial();
    pending_grads_.emplace_back(pending, [this, &unit, k, reduced, hsdp]() {
      if (hsdp) replicate_.all_reduce(reduced).wait();
      for (Slot& s : unit.slots) {
        if (s.local || s.bucket != k) continue;  // post_backward_local's, or the other bucket's
        at::Tensor g = reduced.narrow(0, s.offset, s.numel);
        // Sequence-parallel norms: each tensor-parallel rank holds a partial sum.
        if (s.tp_partial && !tp_.trivial()) tp_.all_reduce(g).wait();
        accumulate(s.shard, g.view(s.shard.sizes()));
      }
    });
  }
  if (!shard_.trivial() && !options_.pipelined) release(u);
}

void DataParallel::release_all() {
  for (size_t i = 0; i < units_.size(); ++i) release(i);
}

void DataParallel::finish_backward() {
  at::NoGradGuard no_grad;
  for (auto& [pending, then] : pending_grads_) {
    pending->wait();
    then();
  }
  pending_grads_.clear();
}

bool DataParallel::is_copy(const std::string& name) const {
  return std::find(options_.copies.begin(), options_.copies.end(), name) != options_.copies.end();
}

std::vector<bool> DataParallel::copies() const {
  std::vector<bool> out;
  for (const auto& u : units_)
    for (const auto& s : u->slots) out.push_back(is_copy(s.name));
  return out;
}

at::Tensor DataParallel::grad_norm() {
  at::NoGradGuard no_grad;
  // Squares of this rank's elements: those split over tp add up over tp; those replicated over
  // tp (each tp rank holds the same) count once. FSDP shards add up over dp_shard_cp; replicas
  // over dp_replicate hold the same and count once. Experts over ep ranks that include the tp
  // ranks are split over tp as well.
  const bool borrows = mesh_.dims().ep_borrows_tp();
  std::vector<at::Tensor> split, replicated;
  for (const auto& u : units_)
    for (const auto& s : u->slots)
      if (s.shard.grad().defined() && !is_copy(s.name))
        (s.tp_sharded || (s.expert && borrows) ? split : replicated).push_back(s.shard.grad());
  at::Tensor sq = at::cat({components::sum_of_squares(split).to(device_), components::sum_of_squares(replicated).to(device_)});
  if (!tp_.trivial()) {
    at::Tensor tp_part = sq.narrow(0, 0, 1).contiguous();
    tp_.all_reduce(tp_part).wait();
    sq.narrow(0, 0, 1).copy_(tp_part);
  }
  at::Tensor total = sq.sum().reshape({1});
  shard_.all_reduce(total).wait();
  // Pipeline stages hold different parameters: their squares add up.
  if (Group& pp = mesh_.group("pp"); !pp.trivial()) pp.all_reduce(total).wait();
  return total.sqrt();
}

std::vector<std::pair<std::string, at::Tensor>> DataParallel::full_state() {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> out;
  const int T = tp_.size();
  for (const auto& u : units_)
    for (const auto& s : u->slots) {
      const Bucket& b = u->buckets[s.bucket];
      at::Tensor all = at::empty({b.W * s.rows_per_rank * s.row_numel}, s.shard.options().requires_grad(false));
      b.gather->all_gather(all, s.shard.detach().reshape({-1}).contiguous()).wait();
      at::Tensor share = all.view(padded_shape(s, b.W)).narrow(0, 0, s.rows).contiguous();
      if (s.expert && !ep_.trivial()) {  // each ep rank's experts, in order
        at::Tensor experts = at::empty({ep_.size() * share.numel()}, share.options());
        ep_.all_gather(experts, share).wait();
        std::vector<int64_t> global = share.sizes().vec();
        global[0] *= ep_.size();
        share = experts.view(global);
      }
      if (s.tp_sharded && T > 1) {
        const int d = layouts_[s.layout].on("tp").dim;
        at::Tensor gathered = at::empty({T * share.numel()}, share.options());
        tp_.all_gather(gathered, share).wait();
        std::vector<int64_t> stacked{T};
        for (int64_t x : share.sizes()) stacked.push_back(x);
        std::vector<int64_t> global = share.sizes().vec();
        global[d] *= T;
        share = gathered.view(stacked).movedim(0, d).reshape(global);
      }
      out.emplace_back(s.name, share.clone());
    }
  return out;
}

}  // namespace titan::distributed
