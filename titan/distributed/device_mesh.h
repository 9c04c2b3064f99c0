// The device mesh: named dimensions in torchtitan's order (pp, dp_replicate, dp_shard, cp, tp)
// and named flattened sub-meshes (dp = dp_replicate x dp_shard, dp_shard_cp = dp_shard x cp
// (FSDP), dp_cp = dp_replicate x dp_shard x cp, loss = dp_cp), with this rank's group of each,
// built once at start-up (every rank builds every group, in one order) and shared where two
// names cover the same ranks. "dp_shard_cp:grads" is a second group over FSDP's ranks for the
// gradient reductions; "pp_ends" (pp > 1) holds the first and the last rank of each pipeline (a
// tied embedding table's two copies). With expert parallelism, "ep" and "efsdp" (with
// "efsdp:grads") split each FSDP group in two, ep inner, as torchtitan carves its sparse mesh
// (trivial without it). Nothing else builds groups.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "titan/distributed/parallel_dims.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed {

class DeviceMesh {
 public:
  DeviceMesh(World& world, const ParallelDims& dims);

  const ParallelDims& dims() const { return dims_; }
  // This rank's group of a dimension or flattened sub-mesh, or "world". Unknown names are a
  // programming error (std::logic_error).
  Group& group(const std::string& name);
  // The mesh dimensions a name covers ("dp" -> {"dp_replicate", "dp_shard"}; "tp" -> {"tp"}).
  static const std::vector<std::string>& dims_of(const std::string& name);
  // Size of the named (flattened) mesh and this rank's index in it.
  int size(const std::string& name) { return group(name).size(); }
  int rank(const std::string& name) { return group(name).rank(); }

 private:
  ParallelDims dims_;
  Group world_;
  std::map<std::string, Group> groups_;
};

}  // namespace titan::distributed
