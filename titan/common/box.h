// A contiguous box of a tensor: offsets and sizes per dimension. What a rank holds of a
// parameter (distributed/placement.h) and what a checkpoint chunk covers.
#pragma once

#include <cstdint>
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

}  // namespace titan
