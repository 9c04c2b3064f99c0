// A counter-based random generator: the value of element i of a parameter is a function of
// (seed, parameter name, i) alone, so any rank can draw exactly its own slice of a parameter
// with the values one process draws for the whole. Philox4x32-10 (Salmon et al., SC'11,
// "Parallel random numbers: as easy as 1, 2, 3"), keyed by the seed and the name; one Philox
// block gives two elements.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace titan {

class CounterRng {
 public:
  CounterRng(uint64_t seed, std::string_view name);

  // Four uniform 32-bit words for counter i.
  void block(uint64_t i, uint32_t out[4]) const;
  // Element i as a standard normal (Box-Muller in float), and as a uniform in [0, 1) (53 bits).
  double normal(uint64_t i) const;
  double uniform(uint64_t i) const;

  // Fills a box of a row-major tensor of global shape `shape`: out holds the box
  // [offsets, offsets + sizes) contiguously, element (global flat index g) drawn as element g.
  // normal(mean, std), or the normal truncated to [lo, hi] (inverse CDF, as torch's
  // trunc_normal_; a clamped normal where both bounds lie beyond 6 std), in float. Runs on
  // at::parallel_for's threads.
  struct Box {
    std::vector<int64_t> shape, offsets, sizes;
  };
  void fill_normal(float* out, const Box& box, double mean, double std) const;
  void fill_trunc_normal(float* out, const Box& box, double std, double lo, double hi) const;

 private:
  uint32_t key_[2];
};

// The inverse error function (Giles' approximation refined by a Newton step: about 1e-13).
double erfinv(double x);

}  // namespace titan
