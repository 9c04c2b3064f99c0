// `titan pp-schedule`: a pipeline schedule's per-rank timeline and bubble fraction, so that a
// schedule can be picked (and a CSV checked) before any GPU is rented (docs/pipeline.md).
#include <cstdio>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "titan/common/error.h"
#include "titan/distributed/pipeline_schedule.h"

namespace titan::apps {

namespace {

const char* kUsage =
    "usage: titan pp-schedule --schedule NAME --stages S --microbatches M [--stages-per-rank V]\n"
    "                         [--csv FILE] [--actions]\n"
    "  NAME: GPipe, 1F1B, Interleaved1F1B, LoopedBFS, InterleavedZeroBubble, ZBVZeroBubble\n"
    "  S: pipeline ranks (parallelism.pipeline_parallel_degree); V: stages per rank (default 1 for\n"
    "  GPipe and 1F1B, 2 for the others); M: microbatches (local_batch_size / microbatch_size).\n"
    "  --csv FILE reads a schedule table (one row per rank) instead, placed as NAME places stages.\n"
    "  --actions also prints each rank's actions with the sends and receives between ranks.\n"
    "Prints each rank's timeline in unit costs (F = 1, B = 2, I = 1, W = 1) and the bubble fraction;\n"
    "stages x stages-per-rank x microbatches is at most 65536, and a timeline of more than 200000\n"
    "cells (ranks x units) is summarised.\n";

}  // namespace

int pp_schedule_command(const std::vector<std::string>& args) {
  check_help(args, kUsage);
  const Options o(args, {"actions"}, {"schedule", "stages", "microbatches", "stages-per-rank", "csv"}, kUsage);
  if (!o.positional.empty()) throw Error("unexpected argument " + o.positional.front(), kUsage);
  const std::string name = distributed::pp::canonical_schedule_name(o.get("schedule", "1F1B"));
  const int64_t ranks = o.get_int("stages", -1), m = o.get_int("microbatches", -1);
  if (ranks < 1 || ranks > 4096) throw Error("--stages must be given, from 1 to 4096", kUsage);
  if (m < 1 || m > (1 << 20)) throw Error("--microbatches must be given, from 1 to 1048576", kUsage);
  const int64_t v = o.get_int("stages-per-rank", distributed::pp::single_stage_schedule(name) ? 1 : 2);
  if (v < 1 || v > 64) throw Error("--stages-per-rank must be from 1 to 64", kUsage);
  // The work grows with stages x microbatches: bounded so that an answer takes under a second.
  constexpr int64_t kMaxWork = int64_t{1} << 16;
  if (ranks * v * m > kMaxWork)
    throw Error("--stages " + std::to_string(ranks) + " x --stages-per-rank " + std::to_string(v) + " x --microbatches " +
                    std::to_string(m) + " = " + std::to_string(ranks * v * m) +
                    " stage-microbatches, more than titan pp-schedule simulates (65536)",
                "ask for fewer microbatches: the bubble fraction of most schedules depends on their ratio to the "
                "stages, which a smaller case shows");
  const std::string csv = o.get("csv");
  const auto s = csv.empty() ? distributed::pp::make_schedule(name, static_cast<int>(ranks), static_cast<int>(v),
                                                              static_cast<int>(m))
                             : distributed::pp::load_schedule_csv(csv, static_cast<int>(ranks), static_cast<int>(v),
                                                                  static_cast<int>(m),
                                                                  distributed::pp::schedule_placement(name));
  const auto comm = distributed::pp::with_communication(s);  // also proves it cannot deadlock
  const auto t = distributed::pp::simulate(s);
  std::printf("%s: %d ranks x %d stage(s) (%s placement), %d microbatches; F = 1, B = 2, I = 1, W = 1\n",
              s.name.c_str(), s.pp, s.stages_per_rank, s.placement == distributed::pp::Placement::V ? "V" : "loop",
              s.microbatches);
  // The timeline is a character per rank and unit of time: past 200,000 it is summarised.
  constexpr double kMaxCells = 200000;
  if (t.makespan * s.pp <= kMaxCells)
    std::printf("%s", distributed::pp::render_timeline(s, t).c_str());
  else
    std::printf("(the timeline, %d ranks x %.0f units, is not printed: more than %.0f cells)\n", s.pp, t.makespan,
                kMaxCells);
  std::printf("makespan %.0f units; bubble (idle) fraction %.2f%%", t.makespan, 100.0 * t.bubble_fraction);
  if (const auto f = distributed::pp::bubble_formula(s)) std::printf(" (the schedule's formula: %.2f%%)", 100.0 * *f);
  std::printf("\n");
  if (o.flag("actions"))
    for (int r = 0; r < s.pp; ++r) {
      std::printf("rank %d:", r);
      for (const auto& a : comm[r]) std::printf(" %s", distributed::pp::to_string(a).c_str());
      std::printf("\n");
    }
  return 0;
}

}  // namespace titan::apps
