#include "titan/distributed/device_mesh.h"

#include <algorithm>
#include <stdexcept>

namespace titan::distributed {

namespace {

const std::map<std::string, std::vector<std::string>>& named_meshes() {
  static const std::map<std::string, std::vector<std::string>> meshes = {
      {"pp", {"pp"}},
      {"dp_replicate", {"dp_replicate"}},
      {"dp_shard", {"dp_shard"}},
      {"cp", {"cp"}},
      {"tp", {"tp"}},
      {"dp", {"dp_replicate", "dp_shard"}},
      {"dp_shard_cp", {"dp_shard", "cp"}},
      {"dp_cp", {"dp_replicate", "dp_shard", "cp"}},
      {"loss", {"dp_replicate", "dp_shard", "cp"}},
      {"dp_shard_cp:grads", {"dp_shard", "cp"}},
      {"pp_ends", {"pp"}},
  };
  return meshes;
}

// The order every rank builds the groups in. Where two names cover the same ranks the group is
// built once, under the first name here (what the flight recorder shows): the FSDP and loss
// meshes come before their parts.
const std::vector<std::string> kBuildOrder = {"pp", "dp_replicate", "dp_shard_cp", "dp_cp", "tp",
                                              "dp_shard", "cp", "dp", "loss"};

}  // namespace

const std::vector<std::string>& DeviceMesh::dims_of(const std::string& name) {
  auto it = named_meshes().find(name);
  if (it == named_meshes().end()) throw std::logic_error("unknown mesh name " + name);
  return it->second;
}

DeviceMesh::DeviceMesh(World& world, const ParallelDims& dims) : dims_(dims), world_(world.all()) {
  std::map<std::vector<int>, Group> built;  // by ranks: one c10d group per distinct set
  for (const auto& name : kBuildOrder) {
    Group mine;
    for (const auto& ranks : dims.all_groups(dims_of(name))) {
      auto it = built.find(ranks);
      if (it == built.end()) it = built.emplace(ranks, world.new_group(ranks, name)).first;
      if (std::find(ranks.begin(), ranks.end(), world.rank()) != ranks.end()) mine = it->second;
    }
    groups_[name] = mine;
  }
  // FSDP's gradient reductions get communicators of their own, so that a reduce-scatter does
  // not queue behind (or ahead of) the next part's all-gather.
  Group grads;
  for (const auto& ranks : dims.all_groups(dims_of("dp_shard_cp"))) {
    Group g = world.new_group(ranks, "dp_shard_cp:grads");
    if (std::find(ranks.begin(), ranks.end(), world.rank()) != ranks.end()) grads = g;
  }
  groups_["dp_shard_cp:grads"] = grads;
  // Expert parallelism: each FSDP group carved into "ep" and "efsdp" groups
  // (ParallelDims::expert_groups), with a second efsdp group for the gradients. Without expert
  // parallelism they are trivial.
  groups_["ep"] = Group();
  groups_["efsdp"] = Group();
  groups_["efsdp:grads"] = Group();
  if (dims.ep > 1) {
    // Where a group covers the ranks of one built already it is that one, except the gradients'.
    auto carve = [&](const std::string& name, bool ep_groups, bool own) {
      Group mine;
      for (const auto& members : dims.expert_groups(ep_groups)) {
        Group g;
        if (!own && built.count(members)) g = built.at(members);
        else if (members.size() > 1) g = world.new_group(members, name);
        if (std::find(members.begin(), members.end(), world.rank()) != members.end()) mine = g;
      }
      groups_[name] = mine;
    };
    carve("ep", true, false);
    if (dims.efsdp() > 1) {
      carve("efsdp", false, false);
      carve("efsdp:grads", false, true);
    }
  }

  // The two ends of each pipeline: a tied embedding table lives on the first and the last stage,
  // whose gradients are summed there. With two stages it is the pipeline's own group.
  if (dims.pp > 1) {
    Group ends;
    for (const auto& ranks : dims.all_groups(dims_of("pp"))) {
      const std::vector<int> pair{ranks.front(), ranks.back()};
      Group g = dims.pp == 2 ? built.at(ranks) : world.new_group(pair, "pp_ends");
      if (world.rank() == pair.front() || world.rank() == pair.back()) ends = g;
    }
    groups_["pp_ends"] = ends;
  } else {
    groups_["pp_ends"] = groups_["pp"];
  }
}

Group& DeviceMesh::group(const std::string& name) {
  if (name == "world") return world_;
  auto it = groups_.find(name);
  if (it == groups_.end()) throw std::logic_error("unknown mesh name " + name);
  return it->second;
}

}  // namespace titan::distributed
