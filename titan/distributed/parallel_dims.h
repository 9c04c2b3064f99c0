// The device mesh: degrees of pipeline, data-parallel replicate and shard, context and tensor
// parallelism, their product equal to the world size, and this rank's coordinates and groups.
#pragma once

#include <string>
#include <vector>

#include <cstdint>

namespace titan::distributed {

struct ParallelDims {
  int pp = 1, dp_replicate = 1, dp_shard = 1, cp = 1, tp = 1;
  int world_size = 1;
  // Expert parallelism: a MoE layer's experts split over the ep ranks (1: off), carved from
  // FSDP's dp_shard x cp (etp = tp: the experts split over tp as well), or from dp_shard x cp x tp
  // (etp = 1 with tp > 1: ep borrows the tp ranks, each routing a share of the tokens); ep divides
  // it, and the ranks holding the same experts (efsdp) shard them further as FSDP does.
  int ep = 1, etp = 1;

  // From parallelism.*; data_parallel_shard_degree = -1 takes the ranks left over. Throws
  // titan::Error naming the degrees when they do not multiply to the world size.
  // The parallelism.*_degree settings (train/options.h builds them); dp_shard -1 takes what the others leave.
  struct Degrees {
    int64_t pp = 1, dp_replicate = 1, dp_shard = -1, cp = 1, tp = 1, ep = 1, etp = 1;
  };
  static ParallelDims from_degrees(const Degrees& degrees, int world_size);

  bool fsdp_enabled() const { return dp_shard * cp > 1; }
  // torchtitan's ETP = 1 with tensor parallelism: the ep ranks include the tp ranks.
  bool ep_borrows_tp() const { return ep > 1 && tp > 1 && etp == 1; }
  // The ranks each ep group is carved from: dp_shard x cp, times tp when ep borrows it.
  int ep_span() const { return dp_shard * cp * (ep_borrows_tp() ? tp : 1); }
  int efsdp() const { return ep > 1 ? ep_span() / ep : 1; }
  bool dp_replicate_enabled() const { return dp_replicate > 1; }
  bool tp_enabled() const { return tp > 1; }
  // Ranks that read different data: dp_replicate x dp_shard (context parallelism splits each
  // sequence, it does not add data); the loss is averaged over dp_replicate x dp_shard x cp.
  int dp_degree() const { return dp_replicate * dp_shard; }
  std::string describe() const;  // "pp=1, dp_replicate=1, dp_shard=4, cp=1, tp=1 (world size 4)"

  // Mesh order pp, dp_replicate, dp_shard, cp, tp (tp fastest). For the named dims (a subset,
  // e.g. {"dp_replicate", "dp_shard"}), the ranks that share every other coordinate with `rank`,
  // ascending; and all such groups, in a fixed order every rank agrees on.
  std::vector<int> group_of(int rank, const std::vector<std::string>& dims) const;
  std::vector<std::vector<int>> all_groups(const std::vector<std::string>& dims) const;
  // Expert parallelism's carving of each FSDP group, or dp_shard x cp x tp group when ep borrows
  // the tp ranks (its ranks ascending, positions 0..W-1) into
  // efsdp x ep, ep inner as torchtitan's sparse mesh: every "ep" group (ep consecutive positions,
  // the ranks that split the experts) or every "efsdp" group (the positions equal modulo ep, the
  // ranks that hold the same experts), in a fixed order every rank agrees on.
  std::vector<std::vector<int>> expert_groups(bool ep_groups) const;
  int coordinate(int rank, const std::string& dim) const;
};

}  // namespace titan::distributed
