#include "titan/components/optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "titan/common/error.h"

namespace titan::components {

double LRSchedule::factor(int64_t step) const {
  const int64_t warmup_stable = warmup_steps + stable_steps;
  if (step < warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step < warmup_stable) return 1.0;
  // Past the end of the schedule (lr_scheduler.total_steps < training.steps) the factor stays at
  // its final value instead of going negative or back up.
  const double progress = std::min(
      1.0, static_cast<double>(step + 1 - warmup_stable) / static_cast<double>(decay_steps));
  double f = 0.0;
  switch (decay_type) {
    case DecayType::Linear: f = 1.0 - progress; break;
    case DecayType::Sqrt: f = 1.0 - std::sqrt(progress); break;
    case DecayType::Cosine: f = 0.5 * (1.0 + std::cos(std::numbers::pi * progress)); break;
  }
  return min_lr_factor + (1.0 - min_lr_factor) * f;
}

LRSchedule make_lr_schedule(int64_t warmup_steps, int64_t total_steps,
                            std::optional<double> decay_ratio, const std::string& decay_type,
                            double min_lr_factor, std::vector<std::string>* warnings) {
  LRSchedule s;
  if (decay_type == "linear") s.decay_type = DecayType::Linear;
  else if (decay_type == "sqrt") s.decay_type = DecayType::Sqrt;
  else if (decay_type == "cosine") s.decay_type = DecayType::Cosine;
  else throw Error("lr_scheduler.decay_type = \"" + decay_type + "\" is unknown", "use linear, sqrt or cosine");
  auto warn = [&](std::string w) { if (warnings) warnings->push_back(std::move(w)); };
  if (warmup_steps > total_steps) {
    warn("Warmup steps (" + std::to_string(warmup_steps) + ") exceed total steps (" +
         std::to_string(total_steps) + "). Adjusting warmup steps to " + std::to_string(total_steps) + ".");
    warmup_steps = total_steps;
  }
  int64_t decay_steps = total_steps - warmup_steps;
  if (decay_ratio) {
    // Python's round(): ties to even, which nearbyint does in the default rounding mode.
    decay_steps = static_cast<int64_t>(std::nearbyint(static_cast<double>(total_steps) * *decay_ratio));
    if (warmup_steps + decay_steps > total_steps) {
      warn("Warmup (" + std::to_string(warmup_steps) + ") + decay (" + std::to_string(decay_steps) +
           ") steps exceed total steps (" + std::to_string(total_steps) + "). Adjusting decay steps to " +
           std::to_string(total_steps - warmup_steps) + ".");
      decay_steps = total_steps - warmup_steps;
    }
  }
  s.warmup_steps = warmup_steps;
  s.decay_steps = decay_steps;
  // One virtual step more, so the last real step never has a learning rate of exactly 0.
  s.stable_steps = total_steps + 1 - warmup_steps - decay_steps;
  s.min_lr_factor = min_lr_factor;
  return s;
}

}  // namespace titan::components
