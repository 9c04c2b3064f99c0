// A contiguous box of a tensor: offsets and sizes per dimension. What a rank holds of a
// parameter (distributed/placement.h) and what a checkpoint chunk covers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace titan {

struct Box {
  std::vector<int64_t> offsets, sizes;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : sizes) n *= s;
    return n;
  }
  bool operator==(const Box&) const = default;
};

// The common part of two boxes of one tensor (both in the tensor's coordinates); nullopt when
// they do not meet. Both must have the same number of dimensions.
inline std::optional<Box> intersect(const Box& a, const Box& b) {
  Box out;
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    const int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const int64_t hi = std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d]);
    if (hi <= lo) return std::nullopt;
    out.offsets.push_back(lo);
    out.sizes.push_back(hi - lo);
  }
  return out;
}

// Whether `chunks` (inside a tensor of `shape`) cover it exactly once: "" when they do, else what
// is wrong ("no chunks", "chunks 2 and 3 overlap", "the chunks cover 96 of its 128 elements").
// A sweep along dimension 0: each chunk is compared only with those whose rows it shares.
inline std::string cover_problem(const std::vector<Box>& chunks, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (chunks.empty()) return "it has no chunks";
  if (shape.empty()) return chunks.size() == 1 ? "" : "a scalar with " + std::to_string(chunks.size()) + " chunks";
  std::vector<size_t> order(chunks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return chunks[x].offsets[0] < chunks[y].offsets[0]; });
  std::vector<size_t> active;
  int64_t covered = 0;
  for (size_t i : order) {
    const Box& c = chunks[i];
    if (c.numel() == 0) continue;
    std::erase_if(active, [&](size_t j) { return chunks[j].offsets[0] + chunks[j].sizes[0] <= c.offsets[0]; });
    for (size_t j : active)
      if (intersect(c, chunks[j]))
        return "its chunks " + std::to_string(std::min(i, j)) + " and " + std::to_string(std::max(i, j)) + " overlap";
    active.push_back(i);
    covered += c.numel();
  }
  if (covered != numel)
    return "its chunks cover " + std::to_string(covered) + " of its " + std::to_string(numel) + " elements";
  return "";
}

}  // namespace titan
