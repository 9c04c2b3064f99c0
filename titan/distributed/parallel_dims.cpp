#include "titan/distributed/parallel_dims.h"

#include <algorithm>
#include <array>

#include "titan/common/error.h"

namespace titan::distributed {

namespace {
constexpr std::array<const char*, 5> kDims = {"pp", "dp_replicate", "dp_shard", "cp", "tp"};

std::array<int, 5> sizes_of(const ParallelDims& d) { return {d.pp, d.dp_replicate, d.dp_shard, d.cp, d.tp}; }

int dim_index(const std::string& name) {
  for (size_t i = 0; i < kDims.size(); ++i)
    if (name == kDims[i]) return static_cast<int>(i);
  throw std::logic_error("unknown mesh dim " + name);
}

std::array<int, 5> coords(const ParallelDims& d, int rank) {
  auto s = sizes_of(d);
  std::array<int, 5> c{};
  for (int i = 4; i >= 0; --i) {
    c[i] = rank % s[i];
    rank /= s[i];
  }
  return c;
}

int rank_of(const ParallelDims& d, const std::array<int, 5>& c) {
  auto s = sizes_of(d);
  int r = 0;
  for (int i = 0; i < 5; ++i) r = r * s[i] + c[i];
  return r;
}
}  // namespace

ParallelDims ParallelDims::from_degrees(const Degrees& g, int world_size) {
  ParallelDims d;
  d.world_size = world_size;
  d.pp = static_cast<int>(g.pp);
  d.dp_replicate = static_cast<int>(g.dp_replicate);
  d.cp = static_cast<int>(g.cp);
  d.tp = static_cast<int>(g.tp);
  const int64_t shard = g.dp_shard;
  for (auto [v, key] : {std::pair{d.pp, "pipeline_parallel_degree"}, {d.dp_replicate, "data_parallel_replicate_degree"},
                        {d.cp, "context_parallel_degree"}, {d.tp, "tensor_parallel_degree"}})
    if (v < 1) throw Error("parallelism." + std::string(key) + " = " + std::to_string(v) + " must be >= 1");
  const int others = d.pp * d.dp_replicate * d.cp * d.tp;
  if (shard == -1) {
    if (world_size % others != 0)
      throw Error("parallelism degrees pp=" + std::to_string(d.pp) + " x dp_replicate=" + std::to_string(d.dp_replicate) +
                      " x cp=" + std::to_string(d.cp) + " x tp=" + std::to_string(d.tp) + " = " + std::to_string(others) +
                      " do not divide the world size " + std::to_string(world_size),
                  "choose degrees whose product divides the number of processes");
    d.dp_shard = world_size / others;
  } else {
    if (shard < 1) throw Error("parallelism.data_parallel_shard_degree = " + std::to_string(shard) + " must be -1 or >= 1");
    d.dp_shard = static_cast<int>(shard);
  }
  const int product = others * d.dp_shard;
  if (product != world_size)
    throw Error("parallelism degrees pp=" + std::to_string(d.pp) + " x dp_replicate=" + std::to_string(d.dp_replicate) +
                    " x dp_shard=" + std::to_string(d.dp_shard) + " x cp=" + std::to_string(d.cp) +
                    " x tp=" + std::to_string(d.tp) + " multiply to " + std::to_string(product) + ", but there are " +
                    std::to_string(world_size) + " processes",
                "make pp * dp_replicate * dp_shard * cp * tp equal the number of processes, or set "
                "data_parallel_shard_degree = -1 to take the rest");
  if (g.ep < 1) throw Error("parallelism.expert_parallel_degree = " + std::to_string(g.ep) + " must be >= 1");
  d.ep = static_cast<int>(g.ep);
  d.etp = static_cast<int>(g.etp);
  if (d.ep > 1 && d.etp != 1 && d.etp != d.tp)
    throw Error("parallelism.expert_tensor_parallel_degree = " + std::to_string(d.etp) + " with tensor_parallel_degree = " +
                    std::to_string(d.tp) + ": it is 1 (expert parallelism borrows the tp ranks) or tensor_parallel_degree",
                "set expert_tensor_parallel_degree = 1 or " + std::to_string(d.tp));
  if (d.ep > 1 && d.ep_span() % d.ep != 0) {
    const bool tp = d.ep_borrows_tp();
    const std::string span = tp ? "dp_shard x cp x tp = " + std::to_string(d.dp_shard) + " x " + std::to_string(d.cp) +
                                      " x " + std::to_string(d.tp)
                                : "dp_shard x cp = " + std::to_string(d.dp_shard) + " x " + std::to_string(d.cp);
    throw Error("parallelism.expert_parallel_degree = " + std::to_string(d.ep) + " does not divide " + span + " = " +
                    std::to_string(d.ep_span()) + ": the expert-parallel ranks are carved from FSDP's" +
                    (tp ? " and tensor parallelism's (expert_tensor_parallel_degree = 1)" : ""),
                "choose an expert_parallel_degree that divides " + std::to_string(d.ep_span()) +
                    (tp ? " (data_parallel_shard_degree x context_parallel_degree x tensor_parallel_degree)"
                        : " (data_parallel_shard_degree x context_parallel_degree)"));
  }
  if (d.ep_borrows_tp() && d.efsdp() > 1 && d.dp_shard * d.cp == 1)
    throw Error("parallelism.expert_parallel_degree = " + std::to_string(d.ep) + " borrowing tensor_parallel_degree = " +
                    std::to_string(d.tp) + " without FSDP (dp_shard x cp = 1): the " + std::to_string(d.efsdp()) +
                    " tp ranks that would hold the same experts shard them by FSDP alone, which is not supported yet",
                "set expert_parallel_degree = " + std::to_string(d.tp) + ", or data_parallel_shard_degree > 1");
  return d;
}

std::string ParallelDims::describe() const {
  return "pp=" + std::to_string(pp) + ", dp_replicate=" + std::to_string(dp_replicate) + ", dp_shard=" +
         std::to_string(dp_shard) + ", cp=" + std::to_string(cp) + ", tp=" + std::to_string(tp) +
         (ep > 1 ? ", ep=" + std::to_string(ep) + (tp > 1 ? ", etp=" + std::to_string(etp) : "") +
                       (efsdp() > 1 ? ", efsdp=" + std::to_string(efsdp()) : "")
                 : "") +
         " (world size " + std::to_string(world_size) + ")";
}

int ParallelDims::coordinate(int rank, const std::string& dim) const { return coords(*this, rank)[dim_index(dim)]; }

std::vector<int> ParallelDims::group_of(int rank, const std::vector<std::string>& dims) const {
  auto s = sizes_of(*this);
  auto base = coords(*this, rank);
  std::vector<int> free_dims;
  for (const auto& name : dims) free_dims.push_back(dim_index(name));
  std::sort(free_dims.begin(), free_dims.end());
  for (int i : free_dims) base[i] = 0;
  std::vector<int> out;
  // Enumerate the free coordinates in mesh order.
  int total = 1;
  for (int i : free_dims) total *= s[i];
  for (int k = 0; k < total; ++k) {
    auto c = base;
    int rest = k;
    for (auto it = free_dims.rbegin(); it != free_dims.rend(); ++it) {
      c[*it] = rest % s[*it];
      rest /= s[*it];
    }
    out.push_back(rank_of(*this, c));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::vector<int>> ParallelDims::all_groups(const std::vector<std::string>& dims) const {
  std::vector<std::vector<int>> groups;
  for (int r = 0; r < world_size; ++r) {
    auto g = group_of(r, dims);
    if (g.front() == r) groups.push_back(g);  // each group once, named by its lowest rank
  }
  return groups;
}

std::vector<std::vector<int>> ParallelDims::expert_groups(bool ep_groups) const {
  const int e = std::max(ep, 1), efsdp = ep_span() / e;
  std::vector<std::vector<int>> out;
  const std::vector<std::string> span =
      ep_borrows_tp() ? std::vector<std::string>{"dp_shard", "cp", "tp"} : std::vector<std::string>{"dp_shard", "cp"};
  for (const auto& ranks : all_groups(span))
    for (int g = 0; g < (ep_groups ? efsdp : e); ++g) {
      std::vector<int> members;
      for (int k = 0; k < (ep_groups ? e : efsdp); ++k)
        members.push_back(ranks[static_cast<size_t>(ep_groups ? g * e + k : k * e + g)]);
      out.push_back(std::move(members));
    }
  return out;
}

}  // namespace titan::distributed
