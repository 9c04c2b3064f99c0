#include "titan/distributed/flight_recorder.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <algorithm>

#include "titan/common/error.h"

namespace titan::distributed {

namespace {

std::mutex g_mutex;

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

extern "C" void on_fatal_signal(int sig) {
  FlightRecorder::instance().dump_from_signal(std::string("fatal signal ") + std::to_string(sig));
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

FlightRecorder& FlightRecorder::instance() {
  static FlightRecorder r;
  return r;
}

void FlightRecorder::configure(size_t capacity, int rank, int world_size, const std::string& file_path,
                               int64_t run_id) {
  std::lock_guard<std::mutex> lock(g_mutex);
  run_id_ = run_id;
  std::error_code ec;
  std::filesystem::remove(file_path, ec);  // a dump of an earlier run must not be mistaken for ours
  capacity_ = capacity;
  ring_.assign(capacity, Record{});
  next_ = 0;
  total_ = 0;
  rank_ = rank;
  world_ = world_size;
  path_ = file_path;
}

int64_t FlightRecorder::started(const std::string& group, int64_t seq, const char* op, const at::Tensor& t) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (capacity_ == 0) return -1;
  poll_locked();
  const int64_t slot = total_++;
  Record& r = ring_[slot % capacity_];
  r.group = group;
  r.seq = seq;
  r.op = op;
  r.numel = t.defined() ? t.numel() : 0;
  r.dtype = t.defined() ? std::string(c10::toString(t.scalar_type())) : "";
  r.start = now_seconds();
  r.end = -1;
  r.failed = false;
  return slot;
}

void FlightRecorder::finished(int64_t slot) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || total_ - slot > static_cast<int64_t>(capacity_)) return;  // overwritten already
  ring_[slot % capacity_].end = now_seconds();
}

void FlightRecorder::finished_when(int64_t slot, std::function<bool()> done) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || capacity_ == 0) return;
  watched_.emplace_back(slot, std::move(done));
  poll_locked();
}

void FlightRecorder::poll_locked() {
  std::erase_if(watched_, [&](auto& w) {
    if (total_ - w.first > static_cast<int64_t>(capacity_)) return true;  // overwritten already
    if (!w.second()) return false;
    ring_[w.first % capacity_].end = now_seconds();
    return true;
  });
}

void FlightRecorder::failed(int64_t slot) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (slot < 0 || total_ - slot > static_cast<int64_t>(capacity_)) return;
  ring_[slot % capacity_].failed = true;
}

void FlightRecorder::dump(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mutex);
  write_locked(reason);
}

void FlightRecorder::dump_from_signal(const std::string& reason) {
  std::unique_lock<std::mutex> lock(g_mutex, std::try_to_lock);
  if (lock.owns_lock()) write_locked(reason);
}

void FlightRecorder::write_locked(const std::string& reason) {
  if (path_.empty() || capacity_ == 0) return;
  poll_locked();
  nlohmann::json j;
  j["rank"] = rank_;
  j["world_size"] = world_;
  j["reason"] = reason;
  j["run_id"] = run_id_;
  j["dumped_at"] = now_seconds();
  j["entries"] = nlohmann::json::array();
  const int64_t first = std::max<int64_t>(0, total_ - static_cast<int64_t>(capacity_));
  for (int64_t i = first; i < total_; ++i) {
    const Record& r = ring_[i % capacity_];
    j["entries"].push_back({{"group", r.group}, {"seq", r.seq}, {"op", r.op}, {"numel", r.numel}, {"dtype", r.dtype},
                            {"start", r.start}, {"end", r.end < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.end)},
                            {"state", r.failed ? "failed" : r.end < 0 ? "pending" : "completed"}});
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream f(tmp);
    f << j.dump(1) << "\n";
  }
  std::filesystem::rename(tmp, path_, ec);
}

void FlightRecorder::install_fatal_signal_dump() {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, on_fatal_signal);
}

std::string comm_report(const std::string& folder, const std::string& prefix) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(folder))
    throw Error("comm report: \"" + folder + "\" is not a folder", "pass <dump_folder>/<comm.save_traces_folder>");
  struct Entry {
    std::string op, dtype, state;
    int64_t numel;
  };
  std::map<int, std::map<std::string, std::map<int64_t, Entry>>> by_rank;  // rank -> group -> seq -> entry
  std::map<int, std::string> reasons;
  int world = 0;
  std::vector<nlohmann::json> dumps;
  for (const auto& f : fs::directory_iterator(folder)) {
    const std::string name = f.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    try {
      std::ifstream in(f.path());
      dumps.push_back(nlohmann::json::parse(in));
    } catch (const std::exception& e) {
      throw Error("comm report: " + f.path().string() + " is not a flight-recorder file (" + e.what() + ")");
    }
  }
  // Only the run that dumped last: files of earlier runs may share the folder.
  int64_t latest_run = 0;
  double latest = -1;
  for (const auto& j : dumps)
    if (j.value("dumped_at", 0.0) > latest) latest = j.value("dumped_at", 0.0), latest_run = j.value("run_id", int64_t{0});
  for (const auto& j : dumps) {
    if (j.value("run_id", int64_t{0}) != latest_run) continue;
    const int rank = j["rank"].get<int>();
    world = std::max(world, j["world_size"].get<int>());
    reasons[rank] = j["reason"].get<std::string>();
    for (const auto& e : j["entries"])
      by_rank[rank][e["group"].get<std::string>()][e["seq"].get<int64_t>()] =
          Entry{e["op"].get<std::string>(), e["dtype"].get<std::string>(), e["state"].get<std::string>(),
                e["numel"].get<int64_t>()};
  }
  if (by_rank.empty()) throw Error("comm report: no " + prefix + "* files in " + folder);
  std::string out = "flight recorder: " + std::to_string(by_rank.size()) + " of " + std::to_string(world) +
                    " ranks dumped their last collectives\n";
  for (const auto& [rank, reason] : reasons) out += "  rank " + std::to_string(rank) + ": " + reason + "\n";
  for (int r = 0; r < world; ++r)
    if (!by_rank.count(r)) out += "  rank " + std::to_string(r) + " wrote nothing (it may have died or still be running)\n";

  auto describe = [](const Entry& e) { return e.op + "(" + std::to_string(e.numel) + " x " + e.dtype + ")"; };
  auto list = [](const std::vector<int>& v) {
    std::string s = v.size() > 1 ? "ranks " : "rank ";
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += ",";
      s += std::to_string(v[i]);
    }
    return s;
  };
  // Groups with a collective that did not complete come first: that is where the run stopped.
  std::vector<std::string> groups;
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& [rank, g] : by_rank)
      for (const auto& [name, seqs] : g) {
        bool stuck = false;
        for (const auto& [seq, e] : seqs) stuck |= e.state != "completed";
        if ((pass == 0) == stuck && std::find(groups.begin(), groups.end(), name) == groups.end()) groups.push_back(name);
      }
  bool found = false;
  for (const auto& group : groups) {
    std::vector<int> members;
    int64_t lo = INT64_MAX, hi = -1;
    for (const auto& [rank, g] : by_rank) {
      auto it = g.find(group);
      if (it == g.end() || it->second.empty()) continue;
      members.push_back(rank);
      lo = std::min(lo, it->second.begin()->first);
      hi = std::max(hi, it->second.rbegin()->first);
    }
    if (members.size() < 2) continue;
    // 1. The first collective where the ranks entered different operations.
    for (int64_t seq = lo; seq <= hi && !found; ++seq) {
      std::map<std::string, std::vector<int>> variants;
      for (int rank : members) {
        const auto& seqs = by_rank[rank][group];
        if (auto it = seqs.find(seq); it != seqs.end()) variants[describe(it->second)].push_back(rank);
      }
      if (variants.size() <= 1) continue;
      std::string majority;
      bool tie = false;
      for (const auto& [d, ranks] : variants) {
        if (majority.empty() || ranks.size() > variants[majority].size()) majority = d, tie = false;
        else if (ranks.size() == variants[majority].size()) tie = true;
      }
      if (tie) {
        // No majority (e.g. two ranks): a rank whose #seq is the others' #seq+1 skipped one.
        out += "DIVERGED at collective #" + std::to_string(seq) + " of group '" + group + "':";
        for (const auto& [d, ranks] : variants) {
          out += " ";
          out += list(ranks) + " entered " + d + ";";
        }
        out += "\n";
        for (const auto& [d, ranks] : variants)
          for (const auto& [d2, ranks2] : variants) {
            if (d == d2) continue;
            const auto& next = by_rank[ranks2.front()][group];
            if (auto it = next.find(seq + 1); it != next.end() && describe(it->second) == d)
              out += "  " + list(ranks) + " skipped the collective " + list(ranks2) + " entered (" + d2 + ")\n";
          }
        found = true;
        continue;
      }
      for (const auto& [d, ranks] : variants) {
        if (d == majority) continue;
        out += "DIVERGED: " + list(ranks) + " entered " + d + " as collective #" + std::to_string(seq) + " of group '" +
               group + "', where " + list(variants[majority]) + " entered " + majority + ": " + list(ranks) +
               " skipped or reordered a collective before it\n";
      }
      found = true;
    }
    if (found) break;
    // 2. Ranks that issued fewer (fell behind) or more (skipped one the others wait in) collectives.
    std::map<int64_t, std::vector<int>> by_last;
    for (int rank : members) by_last[by_rank[rank][group].rbegin()->first].push_back(rank);
    if (by_last.size() <= 1) continue;
    int64_t common = by_last.rbegin()->first;  // without a strict majority: the ones furthest on
    for (const auto& [last, ranks] : by_last)
      if (ranks.size() > by_last[common].size()) common = last;
    const std::vector<int>& majority = by_last[common];
    const Entry& waiting = by_rank[majority.front()][group].rbegin()->second;
    for (const auto& [last, ranks] : by_last) {
      if (last == common) continue;
      const Entry& theirs = by_rank[ranks.front()][group].rbegin()->second;
      if (last < common) {
        out += "BEHIND: " + list(ranks) + " fell behind in group '" + group + "': last entered collective #" +
               std::to_string(last) + " (" + describe(theirs) + ", " + theirs.state + "), while " + list(majority) +
               " reached #" + std::to_string(common) + " (" + describe(waiting) + ", " + waiting.state + ")\n";
      } else {
        out += "AHEAD: " + list(ranks) + " issued collective #" + std::to_string(last) + " (" + describe(theirs) +
               ") of group '" + group + "' that " + list(majority) + " never issued: " + list(ranks) +
               " skipped a collective; the others are waiting in #" + std::to_string(common) + " (" +
               describe(waiting) + ", " + waiting.state + ")\n";
      }
    }
    found = true;
    break;
  }
  if (!found) {
    // Everyone agrees: name the collective still pending, if any.
    for (const auto& [rank, g] : by_rank)
      for (const auto& [group, seqs] : g)
        for (const auto& [seq, e] : seqs)
          if (e.state != "completed" && !found) {
            out += "PENDING: collective #" + std::to_string(seq) + " of group '" + group + "' (" + describe(e) +
                   ") did not complete on rank " + std::to_string(rank) + "; no rank fell behind in the records\n";
            found = true;
          }
  }
  if (!found) out += "all ranks agree and every recorded collective completed\n";
  return out;
}

}  // namespace titan::distributed
