#include "titan/distributed/comm_report.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "titan/common/error.h"

namespace titan::distributed {

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
  std::vector<std::pair<std::string, nlohmann::json>> dumps;  // file, contents
  for (const auto& f : fs::directory_iterator(folder)) {
    const std::string name = f.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    std::ifstream in(f.path());
    auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object())
      throw Error("comm report: " + f.path().string() + " is not a flight-recorder file (not a JSON object)",
                  "remove it, or pass the folder the run wrote (<dump_folder>/<comm.save_traces_folder>)");
    dumps.emplace_back(f.path().string(), std::move(j));
  }
  // Only the run that dumped last: files of earlier runs may share the folder.
  int64_t latest_run = 0;
  double latest = -1;
  for (const auto& [file, j] : dumps) {
    const auto at = j.find("dumped_at"), run = j.find("run_id");
    const double when = at != j.end() && at->is_number() ? at->get<double>() : 0.0;
    if (when > latest) latest = when, latest_run = run != j.end() && run->is_number_integer() ? run->get<int64_t>() : 0;
  }
  for (const auto& [file, j] : dumps) {
    try {
      const auto run = j.find("run_id");
      if ((run != j.end() && run->is_number_integer() ? run->get<int64_t>() : 0) != latest_run) continue;
      // Integers only: nlohmann would truncate 0.5 to rank 0.
      auto integer = [](const nlohmann::json& o, const char* key) {
        const auto& v = o.at(key);
        if (!v.is_number_integer()) throw Error(std::string("\"") + key + "\" is not an integer: " + v.dump());
        return v.get<int64_t>();
      };
      const int64_t rank64 = integer(j, "rank"), world64 = integer(j, "world_size");
      if (world64 < 1 || world64 > (1 << 20) || rank64 < 0 || rank64 >= world64)
        throw Error("rank " + std::to_string(rank64) + " of world size " + std::to_string(world64) + " is impossible");
      const int rank = static_cast<int>(rank64), world_size = static_cast<int>(world64);
      world = std::max(world, world_size);
      reasons[rank] = j.at("reason").get<std::string>();
      for (const auto& e : j.at("entries"))
        by_rank[rank][e.at("group").get<std::string>()][integer(e, "seq")] =
            Entry{e.at("op").get<std::string>(), e.at("dtype").get<std::string>(), e.at("state").get<std::string>(),
                  integer(e, "numel")};
    } catch (const std::exception& e) {
      throw Error("comm report: " + file + " is not a flight-recorder file (" + e.what() + ")",
                  "remove it, or pass the folder the run wrote (<dump_folder>/<comm.save_traces_folder>)");
    }
  }
  if (by_rank.empty()) throw Error("comm report: no " + prefix + "* files in " + folder);
  std::string out = "flight recorder: " + std::to_string(by_rank.size()) + " of " + std::to_string(world) +
                    " ranks dumped their last collectives\n";
  for (const auto& [rank, reason] : reasons) out += "  rank " + std::to_string(rank) + ": " + reason + "\n";
  std::vector<int> silent;
  for (int r = 0; r < world; ++r)
    if (!by_rank.count(r)) silent.push_back(r);
  for (size_t i = 0; i < silent.size() && i < 16; ++i)
    out += "  rank " + std::to_string(silent[i]) + " wrote nothing (it may have died or still be running)\n";
  if (silent.size() > 16) out += "  ... and " + std::to_string(silent.size() - 16) + " more ranks wrote nothing\n";

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
    std::set<int64_t> seqs_seen;  // every collective number some member recorded
    for (const auto& [rank, g] : by_rank) {
      auto it = g.find(group);
      if (it == g.end() || it->second.empty()) continue;
      members.push_back(rank);
      for (const auto& [seq, e] : it->second) seqs_seen.insert(seq);
    }
    if (members.size() < 2) continue;
    // 1. The first collective where the ranks entered different operations.
    for (auto seq_it = seqs_seen.begin(); seq_it != seqs_seen.end() && !found; ++seq_it) {
      const int64_t seq = *seq_it;
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
            if (auto it = seq < INT64_MAX ? next.find(seq + 1) : next.end(); it != next.end() && describe(it->second) == d)
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
