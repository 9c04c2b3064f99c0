// Pipeline-parallel schedules as data: for each pipeline rank, the ordered actions it runs
// (forward, full backward, backward for inputs, backward for weights, and the sends and receives
// between stages). The built-in schedules (GPipe, 1F1B, Interleaved1F1B, LoopedBFS,
// InterleavedZeroBubble, ZBVZeroBubble) are generated here; a user's table is read from CSV.
// A timeline simulator gives each rank's timeline and the bubble (idle) fraction
// (`titan pp-schedule`). Torch-free: the runtime that executes a schedule lives elsewhere.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace titan::distributed::pp {

enum class ActionType { Forward, FullBackward, BackwardInput, BackwardWeight, SendF, RecvF, SendB, RecvB };

// One action on one stage for one microbatch. Text form as PyTorch writes it: stage, type,
// microbatch: "0F1", "2B0", "1I3", "1W3", "0SEND_F1", "1RECV_F1", "1SEND_B0", "0RECV_B0".
struct Action {
  int stage = 0;
  ActionType type = ActionType::Forward;
  int microbatch = 0;
  bool operator==(const Action&) const = default;
};
std::string to_string(const Action& a);
// Parses the text form; throws titan::Error naming `where` for anything else.
Action parse_action(const std::string& text, const std::string& where);
bool is_compute(ActionType t);

// Where stages live: "loop" puts stage s on rank s % pp; "v" puts stages r and 2*pp-1-r on rank r.
enum class Placement { Loop, V };

struct Schedule {
  std::string name;
  int pp = 1;                 // pipeline ranks
  int stages_per_rank = 1;    // virtual stages per rank (1 for GPipe and 1F1B)
  int microbatches = 1;
  Placement placement = Placement::Loop;
  // Per rank, its compute actions (F, B, I, W) in the order it runs them.
  std::vector<std::vector<Action>> compute;

  int num_stages() const { return pp * stages_per_rank; }
  int rank_of_stage(int stage) const;
  std::vector<int> stages_of_rank(int rank) const;
};

// The names accepted by parallelism.pipeline_parallel_schedule (case-insensitive).
const std::vector<std::string>& schedule_names();
// Canonical spelling of a schedule name; throws titan::Error listing the valid names.
std::string canonical_schedule_name(const std::string& name);
// Whether the schedule runs one stage per rank (GPipe, 1F1B) or several (the others).
bool single_stage_schedule(const std::string& name);
// The placement a schedule uses (V for ZBVZeroBubble, loop otherwise).
Placement schedule_placement(const std::string& name);

// The compute actions of a built-in schedule for `pp` ranks, `stages_per_rank` stages on each and
// `microbatches` microbatches. Throws titan::Error (naming the schedule and the rule) for counts it
// cannot run: for example 1F1B with fewer microbatches than stages.
Schedule make_schedule(const std::string& name, int pp, int stages_per_rank, int microbatches);

// A user's schedule: CSV with one row per rank, one compute action per cell ("0F1", empty = idle).
// `placement` and `stages_per_rank` come from the configured schedule name. Validated as below.
Schedule load_schedule_csv(const std::string& path, int pp, int stages_per_rank, int microbatches,
                           Placement placement);

// Checks that every stage does every microbatch's forward once, then its backward (full, or input
// then weight), each stage on one rank, in an order that can run: throws titan::Error naming the
// rank, stage and microbatch of the first problem (e.g. "rank 1: 3I2 before 3F2").
void validate_schedule(const Schedule& s);

// Each rank's actions with the sends and receives between stages on different ranks inserted:
// after F of stage s, SEND_F to stage s+1's rank and RECV_F there before its F; after B/I of
// stage s, SEND_B to stage s-1's rank and RECV_B there. Throws titan::Error if the schedule
// deadlocks (a receive that can never be matched).
std::vector<std::vector<Action>> with_communication(const Schedule& s);

// A forward-only schedule (validation): each rank runs its stages in order, every microbatch.
Schedule forward_only_schedule(int pp, int stages_per_rank, int microbatches, Placement placement);

// Unit-cost timeline: F = 1, I = 1, W = 1, B = 2 (I + W), communication free. Every rank runs
// its actions in order, each as soon as its inputs exist.
struct Timeline {
  struct Slot {
    Action action;
    double start = 0, end = 0;
  };
  std::vector<std::vector<Slot>> ranks;
  double makespan = 0;
  double bubble_fraction = 0;  // idle time over pp * makespan
};
Timeline simulate(const Schedule& s);

// The bubble fraction of the schedule's formula under the same unit costs, e.g. GPipe and 1F1B:
// (S - 1) / (M + S - 1). std::nullopt for schedules without a closed form here.
std::optional<double> bubble_formula(const Schedule& s);

// Rows of text, one per rank: the action in each time unit ("." idle), then the rank's idle share.
std::string render_timeline(const Schedule& s, const Timeline& t);

}  // namespace titan::distributed::pp
