// Where each part of a parameter lives: the one description FSDP, tensor parallelism, gradient
// clipping, the optimizer, initialisation and checkpoints read. A parameter has an FQN, a global
// shape, and per mesh (a dimension or a flattened sub-mesh, in the order the splits apply)
// a placement: Replicate, Shard(dim) or Partial (for gradients: a sum still to be taken over
// that mesh). From it, the box (offsets, sizes) any rank holds. The small part of DTensor the
// C++ side needs; no tensor subclass.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "titan/common/box.h"

namespace titan::distributed {

struct Placement {
  enum class Kind { Replicate, Shard, Partial };
  Kind kind = Kind::Replicate;
  int dim = 0;  // Shard: the tensor dimension split
  static Placement replicate() { return {}; }
  static Placement shard(int dim) { return {Kind::Shard, dim}; }
  static Placement partial() { return {Kind::Partial, 0}; }
  bool is_shard() const { return kind == Kind::Shard; }
  std::string describe() const;  // "Replicate", "Shard(0)", "Partial"
};

using titan::Box;  // a contiguous box of a tensor (common/box.h)

struct ParamLayout {
  std::string fqn;
  std::vector<int64_t> global_shape;
  // (mesh name, placement), in the order the splits apply: a Shard splits what the earlier
  // ones left this rank into `size` pieces of ceil(n / size) rows (the last short or empty).
  std::vector<std::pair<std::string, Placement>> placements;

  // The placement over a mesh (Replicate when not listed).
  Placement on(const std::string& mesh) const;
  bool sharded_on(const std::string& mesh) const { return on(mesh).is_shard(); }
  std::string describe() const;  // "layers.0.attention.wq.weight [256, 256]: tp Shard(0), dp_shard_cp Shard(0)"
};

// (index, size) of this rank in a mesh.
using MeshCoordinate = std::function<std::pair<int, int>(const std::string& mesh)>;

// The box of the global tensor a rank holds, and the box before the last n splits (n = 1: what
// the last split divides, e.g. a tensor-parallel rank's share that FSDP shards further).
Box local_box(const ParamLayout& layout, const MeshCoordinate& coordinate, size_t skip_last = 0);
// The rows one piece of a split of n rows into `size` pieces has (ceil(n / size)).
int64_t piece_rows(int64_t n, int size);

}  // namespace titan::distributed
