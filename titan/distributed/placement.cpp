#include "titan/distributed/placement.h"

#include <algorithm>

namespace titan::distributed {

std::string Placement::describe() const {
  switch (kind) {
    case Kind::Replicate: return "Replicate";
    case Kind::Shard: return "Shard(" + std::to_string(dim) + ")";
    case Kind::Partial: return "Partial";
  }
  return "?";
}

Placement ParamLayout::on(const std::string& mesh) const {
  for (const auto& [m, p] : placements)
    if (m == mesh) return p;
  return Placement::replicate();
}

std::string ParamLayout::describe() const {
  std::string s = fqn + " [";
  for (size_t i = 0; i < global_shape.size(); ++i) s += (i ? ", " : "") + std::to_string(global_shape[i]);
  s += "]";
  for (size_t i = 0; i < placements.size(); ++i)
    s += std::string(i ? ", " : ": ") + placements[i].first + " " + placements[i].second.describe();
  return s;
}

int64_t piece_rows(int64_t n, int size) { return size <= 1 ? n : (n + size - 1) / size; }

Box local_box(const ParamLayout& layout, const MeshCoordinate& coordinate, size_t skip_last) {
  Box box{std::vector<int64_t>(layout.global_shape.size(), 0), layout.global_shape};
  const size_t splits = layout.placements.size() - std::min(skip_last, layout.placements.size());
  for (size_t i = 0; i < splits; ++i) {
    const auto& [mesh, p] = layout.placements[i];
    if (!p.is_shard()) continue;
    const auto [index, size] = coordinate(mesh);
    const int64_t n = box.sizes[p.dim], chunk = piece_rows(n, size);
    const int64_t first = std::min(n, index * chunk);
    box.offsets[p.dim] += first;
    box.sizes[p.dim] = std::min(chunk, n - first);
  }
  return box;
}

}  // namespace titan::distributed
