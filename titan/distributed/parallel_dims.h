// The device mesh: degrees of pipeline, data-parallel replicate and shard, context and tensor
// parallelism, their product equal to the world size, and this rank's coordinates and groups.
#pragma once

#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/distributed/process_group.h"

namespace titan::distributed {

struct ParallelDims {
  int pp = 1, dp_replicate = 1, dp_shard = 1, cp = 1, tp = 1;
  int world_size = 1;

  // From parallelism.*; data_parallel_shard_degree = -1 takes the ranks left over. Throws
  // titan::Error naming the degrees when they do not multiply to the world size.
  static ParallelDims from_config(const config::JobConfig& cfg, int world_size);

  bool fsdp_enabled() const { return dp_shard * cp > 1; }
  bool dp_replicate_enabled() const { return dp_replicate > 1; }
  int dp_degree() const { return dp_replicate * dp_shard; }
  std::string describe() const;  // "pp=1, dp_replicate=1, dp_shard=4, cp=1, tp=1 (world size 4)"

  // Mesh order pp, dp_replicate, dp_shard, cp, tp (tp fastest). For the named dims (a subset,
  // e.g. {"dp_replicate", "dp_shard"}), the ranks that share every other coordinate with `rank`,
  // ascending; and all such groups, in a fixed order every rank agrees on.
  std::vector<int> group_of(int rank, const std::vector<std::string>& dims) const;
  std::vector<std::vector<int>> all_groups(const std::vector<std::string>& dims) const;
  int coordinate(int rank, const std::string& dim) const;
};

// This rank's process groups for the mesh.
struct MeshGroups {
  Group dp_shard;      // FSDP: shards parameters, reduce-scatters gradients
  Group dp_replicate;  // DDP/HSDP: all-reduces gradients
  Group dp;            // every data-parallel rank: loss and token counts
  Group world;
};
MeshGroups build_mesh_groups(World& world, const ParallelDims& dims);

}  // namespace titan::distributed
