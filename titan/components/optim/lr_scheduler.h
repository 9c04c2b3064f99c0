// Warmup-stable-decay learning-rate schedule as a multiplicative factor of optimizer.lr,
// with torchtitan's step arithmetic (linear warmup, flat, then linear/sqrt/cosine decay).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace titan::components {

enum class DecayType { Linear, Sqrt, Cosine };

struct LRSchedule {
  int64_t warmup_steps = 0;
  int64_t stable_steps = 0;
  int64_t decay_steps = 0;
  DecayType decay_type = DecayType::Linear;
  double min_lr_factor = 0.0;

  // Factor for the optimizer step with 0-based index `step` (training step `step + 1`).
  double factor(int64_t step) const;
};

// Builds the schedule; adjustments torchtitan makes with a warning (warmup longer than the
// run, warmup + decay longer than the run) are appended to `warnings`.
LRSchedule make_lr_schedule(int64_t warmup_steps, int64_t total_steps,
                            std::optional<double> decay_ratio, const std::string& decay_type,
                            double min_lr_factor, std::vector<std::string>* warnings);

}  // namespace titan::components
