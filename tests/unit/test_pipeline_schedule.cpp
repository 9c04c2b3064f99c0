// Pipeline schedules as data: the orders each built-in schedule gives (checked against PyTorch's
// for the same counts), the bubble fraction of the timeline against each schedule's formula,
// the checks on user CSVs, and the sends/receives added between ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>

#include "titan/common/error.h"
#include "titan/distributed/pipeline_schedule.h"
#include "titan/distributed/pipeline_split.h"

namespace pp = titan::distributed::pp;

namespace {

std::string order(const pp::Schedule& s, int rank) {
  std::string out;
  for (const auto& a : s.compute[rank]) {
    if (!out.empty()) out += ' ';
    out += pp::to_string(a);
  }
  return out;
}

std::string write_csv(const std::string& name, const std::string& body) {
  const auto path = std::filesystem::temp_directory_path() / ("titan_pp_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << body;
  return path.string();
}

std::string csv_of(const pp::Schedule& s) {
  std::string body;
  for (int r = 0; r < s.pp; ++r) {
    std::string row;
    for (const auto& a : s.compute[r]) {
      if (!row.empty()) row += ',';
      row += pp::to_string(a);
    }
    body += row + "\n";
  }
  return body;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const titan::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(PipelineSchedule, OrdersMatchPyTorchs) {
  // Orders PyTorch 2.11's schedule classes give for these counts (idle slots left out).
  const auto f1b = pp::make_schedule("1F1B", 3, 1, 4);
  EXPECT_EQ(order(f1b, 0), "0F0 0F1 0F2 0B0 0F3 0B1 0B2 0B3");
  EXPECT_EQ(order(f1b, 1), "1F0 1F1 1B0 1F2 1B1 1F3 1B2 1B3");
  EXPECT_EQ(order(f1b, 2), "2F0 2B0 2F1 2B1 2F2 2B2 2F3 2B3");
  EXPECT_EQ(order(pp::make_schedule("LoopedBFS", 2, 2, 3), 0), "0F0 0F1 0F2 2F0 2F1 2F2 2B2 2B1 2B0 0B2 0B1 0B0");
  EXPECT_EQ(order(pp::make_schedule("Interleaved1F1B", 4, 2, 4), 3),
            "3F0 3F1 3F2 3F3 7F0 7B0 7F1 7B1 7F2 7B2 7F3 7B3 3B0 3B1 3B2 3B3");
  EXPECT_EQ(order(pp::make_schedule("InterleavedZeroBubble", 4, 2, 4), 1),
            "1F0 1F1 1F2 1F3 5F0 5F1 5F2 5I0 5F3 5I1 5W0 5I2 5W1 5I3 5W2 1I0 5W3 1I1 1W0 1I2 1W1 1I3 1W2 1W3");
  const auto zbv = pp::make_schedule("ZBVZeroBubble", 2, 2, 4);
  EXPECT_EQ(order(zbv, 0), "0F0 0F1 0F2 3F0 3I0 3W0 3F1 3I1 3W1 0F3 0I0 0W0 3F2 3I2 3W2 0I1 0W1 3F3 3I3 3W3 0I2 0W2 0I3 0W3");
  EXPECT_EQ(order(zbv, 1), "1F0 2F0 1F1 2F1 2I0 2W0 1F2 1I0 1W0 2F2 2I1 2W1 1F3 1I1 1W1 2F3 2I2 2W2 1I2 2I3 1I3 1W2 2W3 1W3");
  EXPECT_EQ(zbv.stages_of_rank(0), (std::vector<int>{0, 3}));
  EXPECT_EQ(zbv.stages_of_rank(1), (std::vector<int>{1, 2}));
}

TEST(PipelineSchedule, BubbleFractionEqualsEachSchedulesFormula) {
  int compared = 0;
  for (const std::string& name : pp::schedule_names())
    for (int v : {1, 2, 3})
      for (int ranks : {2, 3, 4, 8})
        for (int m : {1, 2, 3, 4, 6, 7, 8, 12, 16, 32}) {
          if (pp::single_stage_schedule(name) != (v == 1) || (name == "ZBVZeroBubble" && v != 2)) continue;
          if (name == "1F1B" && m < ranks) continue;
          if ((name == "Interleaved1F1B" || name == "InterleavedZeroBubble") && m >= ranks && m % (m / ranks) != 0)
            continue;
          const auto s = pp::make_schedule(name, ranks, v, m);
          const auto t = pp::simulate(s);
          const auto f = pp::bubble_formula(s);
          if (!f) continue;
          EXPECT_NEAR(t.bubble_fraction, *f, 1e-12) << name << " pp=" << ranks << " v=" << v << " m=" << m;
          ++compared;
        }
  EXPECT_GT(compared, 150);
  // The formulas themselves, at one point each: (p-1)/(m+p-1), (p-1)/(vm+p-1), (p-1)/(3vm+p-1).
  EXPECT_NEAR(*pp::bubble_formula(pp::make_schedule("1F1B", 4, 1, 8)), 3.0 / 11, 1e-15);
  EXPECT_NEAR(*pp::bubble_formula(pp::make_schedule("Interleaved1F1B", 4, 2, 8)), 3.0 / 19, 1e-15);
  EXPECT_NEAR(*pp::bubble_formula(pp::make_schedule("ZBVZeroBubble", 4, 2, 8)), 3.0 / 51, 1e-15);
  // Zero bubble idles a third of what interleaved 1F1B idles, at the same counts.
  const double interleaved = pp::simulate(pp::make_schedule("Interleaved1F1B", 4, 2, 8)).bubble_fraction;
  const double zb = pp::simulate(pp::make_schedule("InterleavedZeroBubble", 4, 2, 8)).bubble_fraction;
  EXPECT_LT(zb, interleaved / 2.5);
}

TEST(PipelineSchedule, CountsAScheduleCannotRunAreClearErrors) {
  EXPECT_NE(error_of([] { pp::make_schedule("1F1B", 4, 1, 2); }).find("2 microbatches are fewer than the 4 stages"),
            std::string::npos);
  EXPECT_NE(error_of([] { pp::make_schedule("Interleaved1F1B", 4, 2, 9); }).find("do not split into 2 rounds"),
            std::string::npos);
  EXPECT_NE(error_of([] { pp::make_schedule("ZBVZeroBubble", 2, 3, 4); }).find("exactly 2 stages per rank"),
            std::string::npos);
  EXPECT_NE(error_of([] { pp::make_schedule("GPipe", 2, 2, 4); }).find("one stage per rank"), std::string::npos);
  EXPECT_NE(error_of([] { pp::make_schedule("Zigzag", 2, 1, 4); }).find("is not a schedule"), std::string::npos);
  EXPECT_NE(error_of([] { pp::make_schedule("DualPipeV", 2, 2, 4); }).find("not supported yet"), std::string::npos);
  EXPECT_EQ(pp::canonical_schedule_name("interleaved1f1b"), "Interleaved1F1B");
}

TEST(PipelineSchedule, ActionTextRoundTripsAndRejectsTheRest) {
  for (const char* t : {"0F1", "12B3", "1I0", "2W7", "3SEND_F1", "1RECV_B0"})
    EXPECT_EQ(pp::to_string(pp::parse_action(t, "x")), t);
  EXPECT_EQ(pp::to_string(pp::parse_action("  0F1 ", "x")), "0F1");
  for (const char* t : {"F1", "0X1", "0F", "0F1x", "-1F0", "0 F1", "99999999F1"})
    EXPECT_THROW(pp::parse_action(t, "x"), titan::Error) << t;
}

TEST(PipelineSchedule, CsvOfABuiltInScheduleLoadsToTheSameSchedule) {
  for (const std::string name : {"1F1B", "Interleaved1F1B", "ZBVZeroBubble"}) {
    const int v = pp::single_stage_schedule(name) ? 1 : 2;
    const auto s = pp::make_schedule(name, 2, v, 4);
    const auto path = write_csv(name + ".csv", csv_of(s));
    const auto loaded = pp::load_schedule_csv(path, 2, v, 4, pp::schedule_placement(name));
    EXPECT_EQ(loaded.compute, s.compute) << name;
    EXPECT_EQ(pp::simulate(loaded).bubble_fraction, pp::simulate(s).bubble_fraction);
  }
  // Idle cells are allowed (and skipped), as PyTorch writes them.
  const auto idle = write_csv("idle.csv", "0F0,,0F1,0B0,,0B1\n,1F0,1B0,1F1,1B1\n");
  EXPECT_EQ(pp::load_schedule_csv(idle, 2, 1, 2, pp::Placement::Loop).compute[0].size(), 4u);
}

TEST(PipelineSchedule, BadCsvsNameTheRankAndTheAction) {
  auto load = [](const std::string& name, const std::string& body, int ranks = 2) {
    return error_of([&] { pp::load_schedule_csv(write_csv(name, body), ranks, 1, 2, pp::Placement::Loop); });
  };
  EXPECT_NE(load("nopair.csv", "0F0,0F1,0I0,0W0,0I1\n1F0,1F1,1B0,1B1\n").find("0I1 has no W"), std::string::npos);
  EXPECT_NE(load("early.csv", "0F0,0B0,0F1,0B1\n1B0,1F0,1F1,1B1\n").find("rank 1: 1B0 before 1F0"),
            std::string::npos);
  EXPECT_NE(load("missing.csv", "0F0,0B0\n1F0,1B0\n").find("0F1 is missing"), std::string::npos);
  EXPECT_NE(load("wrongrank.csv", "0F0,0F1,0B0,0B1,1F0\n1F1,1B0,1B1\n").find("stage 1 is on rank 1"),
            std::string::npos);
  EXPECT_NE(load("rows.csv", "0F0,0F1,0B0,0B1\n").find("1 rows for 2 pipeline ranks"), std::string::npos);
  EXPECT_NE(load("comm.csv", "0F0,0SEND_F0\n1F0\n").find("communication action"), std::string::npos);
  EXPECT_NE(load("twice.csv", "0F0,0F0,0F1,0B0,0B1\n1F0,1F1,1B0,1B1\n").find("0F0 appears twice"),
            std::string::npos);
  EXPECT_NE(load("garbage.csv", "0F0,hello\n").find(":1:2: \"hello\" is not an action"), std::string::npos);
  EXPECT_NE(error_of([] { pp::load_schedule_csv("/nonexistent/s.csv", 2, 1, 2, pp::Placement::Loop); })
                .find("is not there"),
            std::string::npos);
  EXPECT_NE(error_of([] { pp::load_schedule_csv("/tmp", 2, 1, 2, pp::Placement::Loop); }).find("not a file (a folder?)"),
            std::string::npos);
}

TEST(PipelineSchedule, SendsAndReceivesPairUpAcrossRanks) {
  for (const std::string& name : pp::schedule_names()) {
    const int v = pp::single_stage_schedule(name) ? 1 : 2;
    const auto s = pp::make_schedule(name, 4, v, 8);
    const auto all = pp::with_communication(s);
    std::map<std::tuple<int, int, int>, int> sends, recvs;  // (to stage, mb, direction) -> count
    for (int r = 0; r < s.pp; ++r)
      for (const auto& a : all[r]) {
        if (a.type == pp::ActionType::SendF) ++sends[{a.stage + 1, a.microbatch, 0}];
        if (a.type == pp::ActionType::SendB) ++sends[{a.stage - 1, a.microbatch, 1}];
        if (a.type == pp::ActionType::RecvF || a.type == pp::ActionType::RecvB) {
          EXPECT_EQ(s.rank_of_stage(a.stage), r) << name << " " << pp::to_string(a);
          ++recvs[{a.stage, a.microbatch, a.type == pp::ActionType::RecvB}];
        }
      }
    EXPECT_EQ(sends, recvs) << name;
    // Every boundary between stages on different ranks carries each microbatch both ways.
    int boundaries = 0;
    for (int st = 0; st + 1 < s.num_stages(); ++st) boundaries += s.rank_of_stage(st) != s.rank_of_stage(st + 1);
    EXPECT_EQ(sends.size(), static_cast<size_t>(2 * boundaries * 8)) << name;
  }
  // A table where rank 0 waits for a gradient before sending the activation it depends on.
  const auto dead = pp::load_schedule_csv(write_csv("dead.csv", "0F0,0B0,0F1,0B1\n1F1,1B1,1F0,1B0\n"), 2, 1, 2,
                                          pp::Placement::Loop);
  EXPECT_NE(error_of([&] { pp::with_communication(dead); }).find("every rank waits for another"), std::string::npos);
}

TEST(PipelineSchedule, ForwardOnlyScheduleRunsEveryStageInOrderOnEitherPlacement) {
  for (const auto placement : {pp::Placement::Loop, pp::Placement::V}) {
    const auto s = pp::forward_only_schedule(3, 2, 4, placement);
    const auto all = pp::with_communication(s);  // no deadlock
    int forwards = 0, sends = 0;
    for (int r = 0; r < s.pp; ++r)
      for (const auto& a : all[r]) {
        forwards += a.type == pp::ActionType::Forward;
        sends += a.type == pp::ActionType::SendF;
        EXPECT_NE(a.type, pp::ActionType::SendB);
      }
    EXPECT_EQ(forwards, 6 * 4);
    int boundaries = 0;
    for (int st = 0; st + 1 < s.num_stages(); ++st) boundaries += s.rank_of_stage(st) != s.rank_of_stage(st + 1);
    EXPECT_EQ(sends, boundaries * 4);
  }
}

TEST(PipelineSplit, LayersSplitAsTorchtitanSplitsThem) {
  pp::SplitOptions o;
  o.schedule = "Interleaved1F1B";
  o.pp = 4;
  o.n_layers = 16;
  const auto s = pp::split_stages(o);  // 2 stages per rank by default: 8 stages of 18 weights
  ASSERT_EQ(s.num_stages(), 8);
  EXPECT_EQ(s.stages_per_rank, 2);
  EXPECT_EQ(s.modules[0], (std::vector<std::string>{"tok_embeddings", "layers.0", "layers.1"}));
  EXPECT_EQ(s.modules[1], (std::vector<std::string>{"layers.2", "layers.3", "layers.4"}));
  EXPECT_EQ(s.modules[2], (std::vector<std::string>{"layers.5", "layers.6"}));
  EXPECT_EQ(s.modules[7], (std::vector<std::string>{"layers.15", "norm", "output"}));
  o.schedule = "1F1B";
  o.pp = 2;
  o.n_layers = 8;
  const auto one = pp::split_stages(o);
  ASSERT_EQ(one.num_stages(), 2);
  EXPECT_EQ(one.modules[0].size(), 5u);  // tok_embeddings + 4 layers (weights 5 and 5)
  EXPECT_EQ(one.modules[1].back(), "output");
  o.layers_per_stage = 5;  // (8 + 1 + 1) / 5 = 2 stages: one per rank
  EXPECT_EQ(pp::split_stages(o).num_stages(), 2);
}

TEST(PipelineSplit, SplitsThatCannotBeMadeAreClearErrors) {
  pp::SplitOptions o;
  o.pp = 2;
  o.n_layers = 8;
  o.layers_per_stage = 2;  // 5 stages for 2 ranks
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("5 pipeline stages do not divide"), std::string::npos);
  o.layers_per_stage = 3;  // 4 stages, 2 per rank, for 1F1B
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("runs one stage per rank"), std::string::npos);
  o.schedule = "ZBVZeroBubble";
  o.layers_per_stage = 1;  // 10 stages, 5 per rank
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("exactly 2 stages per rank"), std::string::npos);
  o.schedule = "Interleaved1F1B";
  o.layers_per_stage = 5;  // 2 stages: 1 per rank
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("runs several stages per rank"), std::string::npos);
  o.layers_per_stage.reset();
  o.module_fqns_per_model_part = {{"tok_embeddings", "layers.0", "layers.1", "layers.2"},
                                  {"layers.3", "layers.4"},
                                  {"layers.6", "layers.5", "layers.7"},
                                  {"norm", "output"}};
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("\"layers.6\" is out of place"), std::string::npos);
  o.module_fqns_per_model_part[2] = {"layers.5", "layers.6", "layers.7", "layers.8"};
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("\"layers.8\" is not a module"), std::string::npos);
  o.module_fqns_per_model_part[2] = {"layers.5", "layers.6", "layers.7"};
  EXPECT_EQ(pp::split_stages(o).modules[2].size(), 3u);
  o.module_fqns_per_model_part[3] = {"norm"};
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("\"output\" and the modules after it are in no stage"),
            std::string::npos);
  o.module_fqns_per_model_part.clear();
  o.n_layers = 2;
  o.pp = 4;  // 8 stages for 2 layers + 2 weights
  EXPECT_NE(error_of([&] { pp::split_stages(o); }).find("more than the model's 2 layers"), std::string::npos);
  EXPECT_EQ(pp::microbatch_count(8, 2), 4);
  EXPECT_NE(error_of([] { pp::microbatch_count(8, 3); }).find("not a multiple"), std::string::npos);
}
