#include "titan/distributed/data_parallel.h"

#include <torch/csrc/autograd/custom_function.h>

#include <c10/core/StorageImpl.h>

#include "titan/common/error.h"
#include "titan/components/loss.h"

namespace titan::distributed {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Slot {
  std::string name;
  at::Tensor* model_slot = nullptr;  // the model member its part reads
  std::vector<int64_t> full_shape;
  int64_t rows = 0, rows_per_rank = 0, row_numel = 0;
  at::Tensor shard;  // leaf the optimizer owns: (rows_per_rank, ...) float32, or the full replica
  at::Tensor full;   // what the model reads this step (an autograd output)
  int64_t offset = 0, numel = 0;  // place of this slot in the unit's flat shard buffer
};

struct Unit {
  size_t index = 0;
  std::string part;
  std::vector<Slot> slots;
  bool reshard_after_forward = true;
  int64_t shard_numel = 0;
  bool gathered = false;
  bool issued = false;
  Pending gather_pending;
  at::Tensor recv;  // (W * shard_numel) in the parameter dtype
};

namespace {

// Frees a tensor's memory but keeps the tensor (and autograd's references to it) valid.
void free_storage(const at::Tensor& t) { t.storage().unsafeGetStorageImpl()->reset(); }

// Gives a tensor freed by free_storage its memory back (contents undefined).
void alloc_storage(const at::Tensor& t, size_t nbytes) {
  c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  impl->set_data_ptr_noswap(impl->allocator()->allocate(nbytes));
  impl->set_nbytes(nbytes);
}

// A tensor over the same memory with its own version counter: writing through it does not
// look like an in-place change to the tensors autograd saved.
at::Tensor writable_alias(const at::Tensor& t, at::IntArrayRef sizes) {
  at::Tensor a = at::empty({0}, t.options().requires_grad(false));
  a.set_(t.storage(), 0, sizes, c10::contiguous_strides(sizes));
  return a;
}

std::vector<int64_t> padded_shape(const Slot& s, int world) {
  std::vector<int64_t> shape = s.full_shape;
  shape[0] = s.rows_per_rank * world;
  return shape;
}

// Forward: the all-gathered parameters of one unit. Backward hands the gradients to the
// DataParallel, which reduces them asynchronously and adds them to the shards itself.
struct GatherFunction : public torch::autograd::Function<GatherFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList shards, DataParallel* dp, Unit* unit, int world) {
    (void)shards;
    ctx->saved_data["dp"] = reinterpret_cast<int64_t>(dp);
    ctx->saved_data["unit"] = static_cast<int64_t>(unit->index);
    const int64_t W = world, S = unit->shard_numel;
    at::Tensor blocks = unit->recv.view({W, S});
    variable_list out;
    for (const Slot& s : unit->slots) {
      // A fresh tensor per parameter (reshape could return a view into recv when a rank holds
      // one row): its storage is what release() frees and the backward re-gather refills.
      at::Tensor padded = at::empty(padded_shape(s, world), unit->recv.options());
      padded.view({W, s.numel}).copy_(blocks.narrow(1, s.offset, s.numel));
      out.push_back(padded.narrow(0, 0, s.rows));
    }
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* dp = reinterpret_cast<DataParallel*>(ctx->saved_data["dp"].toInt());
    dp->post_backward(static_cast<size_t>(ctx->saved_data["unit"].toInt()), grads);
    variable_list none(grads.size());
    none.emplace_back();  // dp
    none.emplace_back();  // unit
    none.emplace_back();  // world
    return none;
  }
};

// DDP: the replicas themselves (as views), with the same backward hand-off.
struct ReplicateFunction : public torch::autograd::Function<ReplicateFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList params, DataParallel* dp, Unit* unit) {
    ctx->saved_data["dp"] = reinterpret_cast<int64_t>(dp);
    ctx->saved_data["unit"] = static_cast<int64_t>(unit->index);
    variable_list out;
    for (const auto& p : params) out.push_back(p.view_as(p));
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* dp = reinterpret_cast<DataParallel*>(ctx->saved_data["dp"].toInt());
    dp->post_backward(static_cast<size_t>(ctx->saved_data["unit"].toInt()), grads);
    variable_list none(grads.size());
    none.emplace_back();
    none.emplace_back();
    return none;
  }
};

void accumulate(at::Tensor& param, const at::Tensor& grad) {
  if (param.grad().defined()) param.mutable_grad().add_(grad);
  else param.mutable_grad() = grad.clone();
}

}  // namespace

DataParallel::DataParallel(models::llama3::Transformer& model, Group shard, Group replicate, at::Device device,
                           DataParallelOptions options)
    : model_(model), shard_(std::move(shard)), replicate_(std::move(replicate)), device_(device), options_(options) {
  at::NoGradGuard no_grad;
  const int W = shard_.size(), r = shard_.rank();
  const auto& args = model.args();
  auto parts = model.parameters_by_part();
  const auto& names = model.part_names();
  for (size_t u = 0; u < parts.size(); ++u) {
    auto unit = std::make_unique<Unit>();
    unit->index = u;
    unit->part = names[u];
    const bool is_output = names[u] == "output";
    const bool tied_embedding = names[u] == "tok_embeddings" && args.tied_embeddings;
    unit->reshard_after_forward =
        tied_embedding ? false : is_output ? options.reshard_output_after_forward : options.reshard_after_forward;
    for (auto& np : parts[u]) {
      Slot s;
      s.name = np.name;
      s.model_slot = np.tensor;
      s.full_shape = np.tensor->sizes().vec();
      s.rows = s.full_shape[0];
      s.row_numel = np.tensor->numel() / s.rows;
      s.rows_per_rank = (s.rows + W - 1) / W;
      // Same values for any layout: drawn for the full parameter by name, then sliced.
      at::Tensor full = models::llama3::init_value(args, s.name, s.full_shape, options.seed);
      if (W > 1) {
        at::Tensor padded = at::zeros(padded_shape(s, W), full.options());
        padded.narrow(0, 0, s.rows).copy_(full);
        full = padded.narrow(0, r * s.rows_per_rank, s.rows_per_rank).clone();
      }
      s.shard = full.to(device).requires_grad_(true);
      s.offset = unit->shard_numel;
      s.numel = s.rows_per_rank * s.row_numel;
      unit->shard_numel += s.numel;
      unit->slots.push_back(std::move(s));
    }
    units_.push_back(std::move(unit));
  }
  model.init_buffers(at::TensorOptions().device(device));
  model.set_forward_hooks(this);
}

DataParallel::~DataParallel() { model_.set_forward_hooks(nullptr); }

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

void DataParallel::gather_start(size_t u) {
  Unit& unit = *units_[u];
  if (unit.issued || unit.gathered) return;
  const int W = shard_.size();
  at::Tensor send = at::empty({unit.shard_numel}, unit.slots[0].shard.options().dtype(options_.param_dtype));
  {
    at::NoGradGuard no_grad;
    for (const Slot& s : unit.slots) send.narrow(0, s.offset, s.numel).copy_(s.shard.detach().reshape({-1}));
  }
  unit.recv = at::empty({W * unit.shard_numel}, send.options());
  unit.gather_pending = shard_.all_gather(unit.recv, send);
  unit.issued = true;
}

void DataParallel::gather_finish(size_t u, bool for_backward) {
  Unit& unit = *units_[u];
  gather_start(u);
  unit.gather_pending.wait();
  unit.issued = false;
  const int W = shard_.size();
  if (for_backward) {
    // Same tensors as in forward (autograd saved them): give their memory back and refill it.
    at::NoGradGuard no_grad;
    at::Tensor blocks = unit.recv.view({W, unit.shard_numel});
    for (Slot& s : unit.slots) {
      auto shape = padded_shape(s, W);
      const size_t nbytes = static_cast<size_t>(s.rows_per_rank * W * s.row_numel) * unit.recv.element_size();
      alloc_storage(s.full, nbytes);
      writable_alias(s.full, shape).copy_(blocks.narrow(1, s.offset, s.numel).reshape(shape));
    }
  } else {
    std::vector<at::Tensor> shards;
    for (const Slot& s : unit.slots) shards.push_back(s.shard);
    variable_list full = GatherFunction::apply(at::TensorList(shards), this, &unit, W);
    for (size_t i = 0; i < unit.slots.size(); ++i) {
      unit.slots[i].full = full[i];
      *unit.slots[i].model_slot = full[i];
    }
  }
  unit.recv = at::Tensor();
  unit.gathered = true;
}

void DataParallel::release(size_t u) {
  Unit& unit = *units_[u];
  if (shard_.trivial() || !unit.gathered) return;
  for (Slot& s : unit.slots) free_storage(s.full);
  unit.gathered = false;
}

void DataParallel::before(size_t u, const std::string&) {
  if (u == 0)  // a new forward: nothing gathered in an earlier one is current any more
    for (size_t i = 0; i < units_.size(); ++i) release(i);
  Unit& unit = *units_[u];
  if (shard_.trivial()) {  // DDP (or one process): the replicas, through the all-reduce hand-off
    std::vector<at::Tensor> params;
    for (const Slot& s : unit.slots) params.push_back(s.shard);
    variable_list views = ReplicateFunction::apply(at::TensorList(params), this, &unit);
    for (size_t i = 0; i < unit.slots.size(); ++i) *unit.slots[i].model_slot = views[i];
    return;
  }
  if (!unit.gathered) gather_finish(u, /*for_backward=*/false);
  if (options_.prefetch && u + 1 < units_.size()) gather_start(u + 1);
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
  const int W = shard_.size();
  // Flat float32 buffer of the unit's gradients, rank-major like the shards.
  at::Tensor flat = at::zeros({W * unit.shard_numel}, unit.slots[0].shard.options().dtype(at::kFloat));
  at::Tensor blocks = flat.view({W, unit.shard_numel});
  for (size_t i = 0; i < unit.slots.size(); ++i) {
    const Slot& s = unit.slots[i];
    if (!grads[i].defined()) continue;
    if (W == 1) {
      blocks.narrow(1, s.offset, s.numel).copy_(grads[i].reshape({1, -1}));
      continue;
    }
    at::Tensor padded = at::zeros({s.rows_per_rank * W * s.row_numel}, flat.options());
    padded.narrow(0, 0, s.rows * s.row_numel).copy_(grads[i].reshape({-1}));
    blocks.narrow(1, s.offset, s.numel).copy_(padded.view({W, s.numel}));
  }
  auto pending = std::make_shared<Pending>();
  at::Tensor reduced;
  if (W > 1) {
    reduced = at::empty({unit.shard_numel}, flat.options());
    *pending = shard_.reduce_scatter_sum(reduced, flat);
  } else {
    reduced = flat;
    *pending = replicate_.all_reduce(flat);
  }
  const bool hsdp = W > 1 && !replicate_.trivial();
  pending_grads_.emplace_back(pending, [this, &unit, reduced, hsdp]() {
    if (hsdp) replicate_.all_reduce(reduced).wait();
    for (Slot& s : unit.slots) accumulate(s.shard, reduced.narrow(0, s.offset, s.numel).view(s.shard.sizes()));
  });
  release(u);
}

void DataParallel::finish_backward() {
  at::NoGradGuard no_grad;
  for (auto& [pending, then] : pending_grads_) {
    pending->wait();
    then();
  }
  pending_grads_.clear();
}

double DataParallel::grad_norm() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const auto& u : units_)
    for (const auto& s : u->slots)
      if (s.shard.grad().defined()) grads.push_back(s.shard.grad());
  at::Tensor sq = components::sum_of_squares(grads).to(device_);
  shard_.all_reduce(sq).wait();  // shards hold disjoint pieces; replicas hold the same ones
  return std::sqrt(sq.item<double>());
}

std::vector<std::pair<std::string, at::Tensor>> DataParallel::full_state() {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> out;
  const int W = shard_.size();
  for (const auto& u : units_)
    for (const auto& s : u->slots) {
      at::Tensor all = at::empty({W * s.numel}, s.shard.options().requires_grad(false));
      shard_.all_gather(all, s.shard.detach().reshape({-1}).contiguous()).wait();
      out.emplace_back(s.name, all.view(padded_shape(s, W)).narrow(0, 0, s.rows).clone());
    }
  return out;
}

}  // namespace titan::distributed
