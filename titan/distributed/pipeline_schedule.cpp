#include "titan/distributed/pipeline_schedule.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <deque>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "titan/common/error.h"

namespace titan::distributed::pp {

namespace {

struct TypeName {
  ActionType type;
  const char* code;
};
// Longest codes first: "SEND_F" must not be read as stage + "S"...
constexpr TypeName kTypeNames[] = {{ActionType::SendF, "SEND_F"}, {ActionType::RecvF, "RECV_F"},
                                   {ActionType::SendB, "SEND_B"}, {ActionType::RecvB, "RECV_B"},
                                   {ActionType::Forward, "F"},     {ActionType::FullBackward, "B"},
                                   {ActionType::BackwardInput, "I"}, {ActionType::BackwardWeight, "W"}};

const char* code_of(ActionType t) {
  for (const auto& n : kTypeNames)
    if (n.type == t) return n.code;
  return "?";
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Builds one rank's compute list with per-stage microbatch counters.
class Builder {
 public:
  explicit Builder(std::vector<Action>& out) : out_(out) {}
  void f(int stage) { out_.push_back({stage, ActionType::Forward, next_[{stage, 'F'}]++}); }
  void b(int stage) { out_.push_back({stage, ActionType::FullBackward, next_[{stage, 'B'}]++}); }
  int i(int stage) {
    const int mb = next_[{stage, 'I'}]++;
    out_.push_back({stage, ActionType::BackwardInput, mb});
    return mb;
  }
  void w(int stage, int mb) { out_.push_back({stage, ActionType::BackwardWeight, mb}); }
  int count(int stage, char kind) { return next_[{stage, kind}]; }

 private:
  std::vector<Action>& out_;
  std::map<std::pair<int, char>, int> next_;
};

[[noreturn]] void refuse(const std::string& name, const std::string& what, const std::string& fix) {
  throw Error("parallelism.pipeline_parallel_schedule = \"" + name + "\": " + what, fix);
}

// Interleaved schedules run microbatches in rounds of `per_round` (PyTorch's rule): M < pp runs in
// one round; otherwise M must split into rounds of equal size.
int microbatches_per_round(const std::string& name, int pp, int m) {
  const int rounds = std::max(1, m / pp);
  if (m % rounds != 0)
    refuse(name,
           std::to_string(m) + " microbatches do not split into " + std::to_string(rounds) +
               " rounds of equal size (" + std::to_string(pp) + " ranks)",
           "use a number of microbatches (local_batch_size / pipeline_parallel_microbatch_size) below " +
               std::to_string(pp) + " or a multiple of the rounds, e.g. " + std::to_string(rounds * (m / rounds)));
  return m / rounds;
}

void gpipe(Schedule& s) {
  for (int r = 0; r < s.pp; ++r) {
    Builder b(s.compute[r]);
    for (int m = 0; m < s.microbatches; ++m) b.f(r);
    for (int m = 0; m < s.microbatches; ++m) b.b(r);
  }
}

void one_f_one_b(Schedule& s) {
  const int S = s.num_stages(), M = s.microbatches;
  if (M < S)
    refuse(s.name, std::to_string(M) + " microbatches are fewer than the " + std::to_string(S) + " stages",
           "give 1F1B at least " + std::to_string(S) +
               " microbatches (raise training.local_batch_size or lower pipeline_parallel_microbatch_size), "
               "or use GPipe");
  for (int r = 0; r < s.pp; ++r) {
    Builder b(s.compute[r]);
    const int warmup = std::min(M, S - r);
    for (int k = 0; k < warmup; ++k) b.f(r);
    while (true) {
      b.b(r);
      if (b.count(r, 'F') == M) break;
      b.f(r);
    }
    while (b.count(r, 'B') < M) b.b(r);
  }
}

void looped_bfs(Schedule& s) {
  for (int r = 0; r < s.pp; ++r) {
    auto& out = s.compute[r];
    const auto stages = s.stages_of_rank(r);
    for (int st : stages)
      for (int m = 0; m < s.microbatches; ++m) out.push_back({st, ActionType::Forward, m});
    for (auto it = stages.rbegin(); it != stages.rend(); ++it)
      for (int m = s.microbatches - 1; m >= 0; --m) out.push_back({*it, ActionType::FullBackward, m});
  }
}

// Interleaved 1F1B (Megatron's, in rounds) and its zero-bubble form, where the backward is split
// into I (input gradient, on the critical path) and W (weight gradient, deferred by `rank` slots to
// fill the bubble).
void interleaved(Schedule& s, bool zero_bubble) {
  const int pp = s.pp, V = s.stages_per_rank, M = s.microbatches;
  const int mpr = microbatches_per_round(s.name, pp, M);
  for (int r = 0; r < pp; ++r) {
    Builder b(s.compute[r]);
    const int warmup = std::min((V - 1) * mpr + (zero_bubble ? 1 : 2) * (pp - 1 - r), M * V);
    auto fstage = [&](int k) { return ((k / mpr) % V) * pp + r; };
    auto bstage = [&](int k) { return (V - 1 - ((k - warmup) / mpr) % V) * pp + r; };
    std::deque<std::pair<int, int>> pending_w;  // (stage, microbatch) of I without their W yet
    auto backward = [&](int k) {
      const int st = bstage(k);
      if (!zero_bubble) {
        b.b(st);
        return;
      }
      pending_w.emplace_back(st, b.i(st));
      if (k - warmup >= r) {
        const auto [ws, wm] = pending_w.front();
        pending_w.pop_front();
        b.w(ws, wm);
      }
    };
    for (int k = 0; k < warmup; ++k) b.f(fstage(k));
    for (int k = warmup; k < M * V; ++k) {
      b.f(fstage(k));
      backward(k);
    }
    for (int k = M * V; k < M * V + warmup; ++k) backward(k);
    for (const auto& [ws, wm] : pending_w) b.w(ws, wm);
  }
}

// ZB-V: two stages per rank in a V (rank r holds r and 2pp-1-r), backward split into I and W.
// Built for max(2pp-1, M) microbatches, then the actions of microbatches >= M dropped.
void zbv(Schedule& s) {
  const int pp = s.pp, M = s.microbatches, n = std::max(2 * pp - 1, M);
  for (int r = 0; r < pp; ++r) {
    std::vector<Action> all;
    Builder b(all);
    const int c0 = r, c1 = 2 * pp - 1 - r;
    for (int k = 0; k < 2 * (pp - r) - 1; ++k) b.f(c0);
    for (int k = 0; k < r; ++k) {
      b.f(c1);
      b.f(c0);
    }
    for (int k = 0; k < pp - r; ++k) {
      b.f(c1);
      b.w(c1, b.i(c1));
    }
    while (b.count(c1, 'F') < b.count(c0, 'F') || b.count(c0, 'F') < n) {
      if (b.count(c0, 'F') < n) b.f(c0);
      b.w(c0, b.i(c0));
      b.f(c1);
      b.w(c1, b.i(c1));
    }
    int w0 = b.count(c0, 'I'), w1 = b.count(c1, 'I');
    for (int k = 0; k < r; ++k) {
      b.i(c0);
      b.i(c1);
    }
    for (int k = 0; k < pp - r; ++k) {
      b.i(c0);
      b.w(c0, w0++);
    }
    while (w1 < n) b.w(c1, w1++);
    while (w0 < n) b.w(c0, w0++);
    for (const auto& a : all)
      if (a.microbatch < M) s.compute[r].push_back(a);
  }
}

}  // namespace

std::string to_string(const Action& a) {
  return std::to_string(a.stage) + code_of(a.type) + std::to_string(a.microbatch);
}

Action parse_action(const std::string& text, const std::string& where) {
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  size_t end = text.size();
  while (end > i && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  const std::string t = text.substr(i, end - i);
  auto fail = [&]() -> Action {
    throw Error(where + ": \"" + t + "\" is not an action",
                "write [stage][F|B|I|W][microbatch], e.g. 0F1 (stage 0 forward of microbatch 1) or 2I0");
  };
  size_t p = 0;
  while (p < t.size() && std::isdigit(static_cast<unsigned char>(t[p]))) ++p;
  if (p == 0 || p > 6) return fail();
  Action a;
  a.stage = std::stoi(t.substr(0, p));
  bool matched = false;
  for (const auto& n : kTypeNames) {
    const std::string code = n.code;
    if (t.compare(p, code.size(), code) == 0) {
      a.type = n.type;
      p += code.size();
      matched = true;
      break;
    }
  }
  if (!matched) return fail();
  const size_t digits = p;
  while (p < t.size() && std::isdigit(static_cast<unsigned char>(t[p]))) ++p;
  if (p != t.size() || p == digits || p - digits > 6) return fail();
  a.microbatch = std::stoi(t.substr(digits));
  return a;
}

bool is_compute(ActionType t) {
  return t == ActionType::Forward || t == ActionType::FullBackward || t == ActionType::BackwardInput ||
         t == ActionType::BackwardWeight;
}

int Schedule::rank_of_stage(int stage) const {
  if (placement == Placement::Loop) return stage % pp;
  return stage < pp ? stage : 2 * pp - 1 - stage;
}

std::vector<int> Schedule::stages_of_rank(int rank) const {
  std::vector<int> out;
  for (int st = 0; st < num_stages(); ++st)
    if (rank_of_stage(st) == rank) out.push_back(st);
  return out;
}

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"GPipe", "1F1B", "Interleaved1F1B", "LoopedBFS",
                                                 "InterleavedZeroBubble", "ZBVZeroBubble"};
  return names;
}

std::string canonical_schedule_name(const std::string& name) {
  for (const auto& n : schedule_names())
    if (lower(n) == lower(name)) return n;
  std::string list;
  for (const auto& n : schedule_names()) list += (list.empty() ? "" : ", ") + n;
  if (lower(name) == "dualpipev")
    throw Error("parallelism.pipeline_parallel_schedule = \"DualPipeV\" is not supported yet",
                "use one of " + list);
  throw Error("parallelism.pipeline_parallel_schedule = \"" + name + "\" is not a schedule", "use one of " + list);
}

bool single_stage_schedule(const std::string& name) {
  const std::string n = canonical_schedule_name(name);
  return n == "GPipe" || n == "1F1B";
}

Placement schedule_placement(const std::string& name) {
  return canonical_schedule_name(name) == "ZBVZeroBubble" ? Placement::V : Placement::Loop;
}

Schedule make_schedule(const std::string& name_in, int pp, int stages_per_rank, int microbatches) {
  Schedule s;
  s.name = canonical_schedule_name(name_in);
  if (pp < 1 || pp > 4096) refuse(s.name, "pipeline_parallel_degree = " + std::to_string(pp) + " is out of range", "use 1 to 4096");
  if (microbatches < 1 || microbatches > (1 << 20))
    refuse(s.name, std::to_string(microbatches) + " microbatches is out of range",
           "local_batch_size / pipeline_parallel_microbatch_size must be at least 1");
  s.pp = pp;
  s.stages_per_rank = stages_per_rank;
  s.microbatches = microbatches;
  s.placement = schedule_placement(s.name);
  if (single_stage_schedule(s.name) && stages_per_rank != 1)
    refuse(s.name, "runs one stage per rank, not " + std::to_string(stages_per_rank),
           "use a multi-stage schedule (Interleaved1F1B, LoopedBFS, InterleavedZeroBubble, ZBVZeroBubble), or "
           "pipeline_parallel_layers_per_stage giving one stage per rank");
  if (s.placement == Placement::V && stages_per_rank != 2)
    refuse(s.name, "needs exactly 2 stages per rank (a V), not " + std::to_string(stages_per_rank),
           "set pipeline_parallel_layers_per_stage so that there are 2 * pipeline_parallel_degree stages");
  if (!single_stage_schedule(s.name) && stages_per_rank < 1)
    refuse(s.name, "needs at least 1 stage per rank", "");
  if (static_cast<int64_t>(pp) * stages_per_rank * microbatches > (int64_t{1} << 24))
    refuse(s.name, "pp x stages x microbatches is too large to schedule", "use fewer microbatches or stages");
  s.compute.assign(static_cast<size_t>(pp), {});
  if (s.name == "GPipe") gpipe(s);
  else if (s.name == "1F1B") one_f_one_b(s);
  else if (s.name == "LoopedBFS") looped_bfs(s);
  else if (s.name == "Interleaved1F1B") interleaved(s, /*zero_bubble=*/false);
  else if (s.name == "InterleavedZeroBubble") interleaved(s, /*zero_bubble=*/true);
  else zbv(s);
  validate_schedule(s);
  return s;
}

Schedule load_schedule_csv(const std::string& path, int pp, int stages_per_rank, int microbatches,
                           Placement placement) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error("parallelism.pipeline_parallel_schedule_csv = \"" + path + "\" is " +
                    (std::filesystem::exists(path, ec) ? "not a file (a folder?)" : "not there"),
                "give a CSV file with one row per pipeline rank");
  std::ifstream f(path);
  if (!f)
    throw Error("parallelism.pipeline_parallel_schedule_csv = \"" + path + "\": cannot read it (" +
                    std::strerror(errno) + ")",
                "give a CSV file with one row per pipeline rank");
  Schedule s;
  s.name = "csv:" + path;
  s.pp = pp;
  s.stages_per_rank = stages_per_rank;
  s.microbatches = microbatches;
  s.placement = placement;
  std::string line;
  int row = 0;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    ++row;
    if (row > pp) {
      if (line.find_first_not_of(" ,\t") == std::string::npos) continue;  // trailing blank lines
      throw Error(path + " has more rows than the " + std::to_string(pp) + " pipeline ranks",
                  "write one row per rank (row 1 = rank 0)");
    }
    std::vector<Action> actions;
    std::stringstream cells(line);
    std::string cell;
    int col = 0;
    while (std::getline(cells, cell, ',')) {
      ++col;
      if (cell.find_first_not_of(" \t") == std::string::npos) continue;  // an idle slot
      const Action a = parse_action(cell, path + ":" + std::to_string(row) + ":" + std::to_string(col));
      if (!is_compute(a.type))
        throw Error(path + ":" + std::to_string(row) + ":" + std::to_string(col) + ": \"" + to_string(a) +
                        "\" is a communication action; the CSV holds compute actions only",
                    "write F, B, I and W actions; sends and receives are added");
      actions.push_back(a);
    }
    s.compute.push_back(std::move(actions));
  }
  if (static_cast<int>(s.compute.size()) != pp)
    throw Error(path + " has " + std::to_string(s.compute.size()) + " rows for " + std::to_string(pp) +
                    " pipeline ranks",
                "write one row per rank (row 1 = rank 0)");
  validate_schedule(s);
  return s;
}

void validate_schedule(const Schedule& s) {
  const int S = s.num_stages(), M = s.microbatches;
  const std::string where = s.name.rfind("csv:", 0) == 0 ? s.name.substr(4) : "schedule " + s.name;
  auto bad = [&](int rank, const std::string& what) {
    return Error(where + ": rank " + std::to_string(rank) + ": " + what,
                 "every stage must run each microbatch's forward once, then its backward (B, or I then W), "
                 "on the rank that holds the stage");
  };
  // (stage, microbatch) -> what has run
  std::set<std::tuple<int, int, char>> done;
  for (int r = 0; r < s.pp; ++r) {
    for (const Action& a : s.compute[r]) {
      if (a.stage < 0 || a.stage >= S) throw bad(r, to_string(a) + ": there are stages 0.." + std::to_string(S - 1));
      if (a.microbatch < 0 || a.microbatch >= M)
        throw bad(r, to_string(a) + ": there are microbatches 0.." + std::to_string(M - 1));
      if (s.rank_of_stage(a.stage) != r)
        throw bad(r, to_string(a) + ": stage " + std::to_string(a.stage) + " is on rank " +
                         std::to_string(s.rank_of_stage(a.stage)));
      const char kind = code_of(a.type)[0];
      auto has = [&](char k) { return done.count({a.stage, a.microbatch, k}) > 0; };
      auto name = [&](char k) { return std::to_string(a.stage) + k + std::to_string(a.microbatch); };
      if (has(kind)) throw bad(r, to_string(a) + " appears twice");
      if ((kind == 'B' || kind == 'I') && !has('F')) throw bad(r, to_string(a) + " before " + name('F'));
      if (kind == 'W' && !has('I')) throw bad(r, to_string(a) + " before " + name('I'));
      if ((kind == 'B' && has('I')) || (kind == 'I' && has('B')))
        throw bad(r, to_string(a) + ": microbatch " + std::to_string(a.microbatch) + " of stage " +
                         std::to_string(a.stage) + " has both B and I");
      done.insert({a.stage, a.microbatch, kind});
    }
  }
  for (int st = 0; st < S; ++st)
    for (int m = 0; m < M; ++m) {
      const Action f{st, ActionType::Forward, m};
      const int r = s.rank_of_stage(st);
      if (!done.count({st, m, 'F'})) throw bad(r, to_string(f) + " is missing");
      const bool full = done.count({st, m, 'B'}) > 0, input = done.count({st, m, 'I'}) > 0;
      if (!full && !input) throw bad(r, "the backward of microbatch " + std::to_string(m) + " of stage " + std::to_string(st) + " is missing");
      if (input && !done.count({st, m, 'W'}))
        throw bad(r, std::to_string(st) + "I" + std::to_string(m) + " has no W (" + std::to_string(st) + "W" +
                         std::to_string(m) + " is missing)");
    }
}

std::vector<std::vector<Action>> with_communication(const Schedule& s) {
  const int S = s.num_stages();
  std::vector<std::vector<Action>> out(static_cast<size_t>(s.pp));
  std::vector<std::set<std::tuple<int, int, ActionType>>> held(static_cast<size_t>(s.pp));
  std::vector<size_t> next(static_cast<size_t>(s.pp), 0);
  auto holds = [&](int r, int st, ActionType t, int m) { return held[r].count({st, m, t}) > 0; };
  auto emit = [&](int r, const Action& a) {
    out[r].push_back(a);
    held[r].insert({a.stage, a.microbatch, a.type});
  };
  size_t left = 0;
  for (const auto& c : s.compute) left += c.size();
  while (left > 0) {
    bool progress = false;
    for (int r = 0; r < s.pp; ++r) {
      if (next[r] >= s.compute[r].size()) continue;
      const Action& a = s.compute[r][next[r]];
      const int st = a.stage, m = a.microbatch;
      bool ready = true;
      if (a.type == ActionType::Forward && st > 0)
        ready = holds(r, st, ActionType::RecvF, m) || holds(r, st - 1, ActionType::Forward, m);
      if ((a.type == ActionType::FullBackward || a.type == ActionType::BackwardInput) && st < S - 1)
        ready = holds(r, st, ActionType::RecvB, m) || holds(r, st + 1, ActionType::BackwardInput, m) ||
                holds(r, st + 1, ActionType::FullBackward, m);
      if (!ready) continue;
      emit(r, a);
      if (a.type == ActionType::Forward && st < S - 1 && s.rank_of_stage(st + 1) != r) {
        emit(r, {st, ActionType::SendF, m});
        emit(s.rank_of_stage(st + 1), {st + 1, ActionType::RecvF, m});
      }
      if ((a.type == ActionType::FullBackward || a.type == ActionType::BackwardInput) && st > 0 &&
          s.rank_of_stage(st - 1) != r) {
        emit(r, {st, ActionType::SendB, m});
        emit(s.rank_of_stage(st - 1), {st - 1, ActionType::RecvB, m});
      }
      ++next[r];
      --left;
      progress = true;
    }
    if (!progress) {
      std::string waiting;
      for (int r = 0; r < s.pp; ++r)
        if (next[r] < s.compute[r].size())
          waiting += " rank " + std::to_string(r) + " waits at " + to_string(s.compute[r][next[r]]) + ";";
      throw Error("the pipeline schedule " + s.name + " cannot run: every rank waits for another (" +
                      waiting.substr(1) + ")",
                  "order each rank's actions so that a forward comes after the previous stage's and a backward "
                  "after the next stage's");
    }
  }
  return out;
}

Schedule forward_only_schedule(int pp, int stages_per_rank, int microbatches, Placement placement) {
  Schedule s;
  s.name = "forward-only";
  s.pp = pp;
  s.stages_per_rank = stages_per_rank;
  s.microbatches = microbatches;
  s.placement = placement;
  s.compute.assign(static_cast<size_t>(pp), {});
  for (int r = 0; r < pp; ++r)
    for (int st : s.stages_of_rank(r))
      for (int m = 0; m < microbatches; ++m) s.compute[static_cast<size_t>(r)].push_back({st, ActionType::Forward, m});
  return s;
}

Timeline simulate(const Schedule& s) {
  const int S = s.num_stages();
  auto cost = [](ActionType t) { return t == ActionType::FullBackward ? 2.0 : 1.0; };
  std::map<std::tuple<int, int, char>, double> end;  // (stage, microbatch, kind) -> end time
  auto finished = [&](int st, int m, char k) -> std::optional<double> {
    auto it = end.find({st, m, k});
    if (it == end.end()) return std::nullopt;
    return it->second;
  };
  Timeline t;
  t.ranks.assign(static_cast<size_t>(s.pp), {});
  std::vector<double> free_at(static_cast<size_t>(s.pp), 0);
  std::vector<size_t> next(static_cast<size_t>(s.pp), 0);
  size_t left = 0;
  for (const auto& c : s.compute) left += c.size();
  while (left > 0) {
    bool progress = false;
    for (int r = 0; r < s.pp; ++r) {
      while (next[r] < s.compute[r].size()) {
        const Action& a = s.compute[r][next[r]];
        double ready = free_at[r];
        bool known = true;
        auto need = [&](int st, int m, std::initializer_list<char> kinds) {
          for (char k : kinds)
            if (auto e = finished(st, m, k)) {
              ready = std::max(ready, *e);
              return;
            }
          known = false;
        };
        switch (a.type) {
          case ActionType::Forward:
            if (a.stage > 0) need(a.stage - 1, a.microbatch, {'F'});
            break;
          case ActionType::FullBackward:
          case ActionType::BackwardInput:
            need(a.stage, a.microbatch, {'F'});
            if (a.stage < S - 1) need(a.stage + 1, a.microbatch, {'I', 'B'});
            break;
          case ActionType::BackwardWeight:
            need(a.stage, a.microbatch, {'I'});
            break;
          default:
            break;
        }
        if (!known) break;
        const double e = ready + cost(a.type);
        t.ranks[r].push_back({a, ready, e});
        end[{a.stage, a.microbatch, code_of(a.type)[0]}] = e;
        free_at[r] = e;
        ++next[r];
        --left;
        progress = true;
      }
    }
    if (!progress) throw Error("the pipeline schedule " + s.name + " cannot run: every rank waits for another");
  }
  double busy = 0;
  for (int r = 0; r < s.pp; ++r) {
    t.makespan = std::max(t.makespan, free_at[r]);
    for (const auto& slot : t.ranks[r]) busy += slot.end - slot.start;
  }
  t.bubble_fraction = t.makespan > 0 ? 1.0 - busy / (s.pp * t.makespan) : 0;
  return t;
}

std::optional<double> bubble_formula(const Schedule& s) {
  // Per rank the work is 3 units per microbatch and stage (F + B, or F + I + W). The fill and drain
  // of the pipe idle each rank (p - 1) x 3 units, or (p - 1) x 1 when W fills the gaps (zero bubble).
  const double p = s.pp, m = s.microbatches, v = s.stages_per_rank;
  const int P = s.pp, M = s.microbatches;
  if (s.name == "GPipe" || s.name == "1F1B") return (p - 1) / (m + p - 1);
  if (s.name == "Interleaved1F1B" && M % P == 0) return (p - 1) / (v * m + p - 1);
  if (s.name == "LoopedBFS" && M >= P) return (p - 1) / (v * m + p - 1);
  if (s.name == "InterleavedZeroBubble" && M % P == 0) return (p - 1) / (3 * v * m + p - 1);
  if (s.name == "ZBVZeroBubble" && M >= 2 * P - 1) return (p - 1) / (3 * v * m + p - 1);
  return std::nullopt;
}

std::string render_timeline(const Schedule& s, const Timeline& t) {
  const int width = static_cast<int>(t.makespan + 0.5);
  std::vector<std::vector<std::string>> rows(static_cast<size_t>(s.pp),
                                             std::vector<std::string>(static_cast<size_t>(width), "."));
  size_t cell = 1;
  for (int r = 0; r < s.pp; ++r)
    for (const auto& slot : t.ranks[r]) {
      const std::string label = to_string(slot.action);
      cell = std::max(cell, label.size());
      for (int u = static_cast<int>(slot.start + 0.5); u < static_cast<int>(slot.end + 0.5) && u < width; ++u)
        rows[r][static_cast<size_t>(u)] = label;
    }
  std::string out;
  for (int r = 0; r < s.pp; ++r) {
    double busy = 0;
    for (const auto& slot : t.ranks[r]) busy += slot.end - slot.start;
    char head[32];
    std::snprintf(head, sizeof head, "rank %-3d|", r);
    out += head;
    for (const auto& c : rows[r]) out += " " + c + std::string(cell - c.size(), ' ');
    char tail[64];
    std::snprintf(tail, sizeof tail, " | idle %.1f%%\n", 100.0 * (1.0 - busy / std::max(t.makespan, 1e-9)));
    out += tail;
  }
  return out;
}

}  // namespace titan::distributed::pp
