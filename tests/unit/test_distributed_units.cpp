// The device mesh, placements and the launcher environment, without starting any process.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "titan/train/options.h"
#include "titan/common/error.h"
#include "titan/components/device/device.h"
#include "titan/config/job_config.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/distributed/placement.h"
#include "titan/distributed/process_group.h"

using titan::distributed::ParallelDims;

namespace {

ParallelDims dims(std::vector<std::string> args, int world) {
  return ParallelDims::from_degrees(titan::train::parallel_degrees(titan::config::load_config(args)), world);
}

// Sets environment variables for one test and restores them after.
class EnvScope {
 public:
  explicit EnvScope(std::vector<std::pair<std::string, std::string>> vars) {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                             "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                             "SLURM_TASKS_PER_NODE", "SLURM_LAUNCH_NODE_IPADDR", "PMI_RANK", "PMI_SIZE",
                             "TORCHELASTIC_RUN_ID"}) {
      if (const char* v = std::getenv(name)) saved_.emplace_back(name, v);
      unsetenv(name);
    }
    for (auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
    set_ = std::move(vars);
  }
  ~EnvScope() {
    for (auto& [k, v] : set_) unsetenv(k.c_str());
    for (auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_, set_;
};

}  // namespace

TEST(ParallelDims, ShardDegreeMinusOneTakesTheRest) {
  auto d = dims({"--parallelism.data_parallel_replicate_degree", "2"}, 8);
  EXPECT_EQ(d.dp_replicate, 2);
  EXPECT_EQ(d.dp_shard, 4);
  EXPECT_TRUE(d.fsdp_enabled());
  EXPECT_EQ(d.dp_degree(), 8);
}

TEST(ParallelDims, DegreesThatDoNotMultiplyToTheWorldAreRefused) {
  try {
    dims({"--parallelism.data_parallel_shard_degree", "3"}, 4);
    FAIL();
  } catch (const titan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiply to 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("but there are 4 processes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dims({"--parallelism.tensor_parallel_degree", "3"}, 4), titan::Error);  // 3 does not divide 4
}

TEST(ParallelDims, GroupsFollowTheMeshOrder) {
  // pp=1, dp_replicate=2, dp_shard=2, cp=1, tp=2 on 8 ranks: tp fastest, then dp_shard.
  auto d = dims({"--parallelism.data_parallel_replicate_degree", "2", "--parallelism.tensor_parallel_degree", "2"}, 8);
  EXPECT_EQ(d.group_of(0, {"tp"}), (std::vector<int>{0, 1}));
  EXPECT_EQ(d.group_of(5, {"dp_shard"}), (std::vector<int>{5, 7}));
  EXPECT_EQ(d.group_of(5, {"dp_replicate"}), (std::vector<int>{1, 5}));
  EXPECT_EQ(d.group_of(2, {"dp_replicate", "dp_shard"}), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(d.all_groups({"dp_shard"}).size(), 4u);
  EXPECT_EQ(d.coordinate(6, "dp_replicate"), 1);
  EXPECT_EQ(d.coordinate(6, "dp_shard"), 1);
}

TEST(DistEnv, Torchrun) {
  EnvScope e({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
              {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "1234"}, {"TORCHELASTIC_RUN_ID", "x"}});
  auto env = titan::distributed::read_dist_env();
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 1234);
  EXPECT_EQ(env.launcher, "torchrun");
}

TEST(DistEnv, MpirunAndSrun) {
  {
    EnvScope e({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
    auto env = titan::distributed::read_dist_env();
    EXPECT_EQ(env.launcher, "mpirun");
    EXPECT_EQ(env.rank, 2);
    EXPECT_EQ(env.world_size, 4);
    EXPECT_EQ(env.master_addr, "127.0.0.1");  // one node: loopback
  }
  {
    EnvScope e({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_TASKS_PER_NODE", "4(x2)"},
                {"MASTER_ADDR", "10.1.2.3"}});
    auto env = titan::distributed::read_dist_env();
    EXPECT_EQ(env.launcher, "srun");
    EXPECT_EQ(env.rank, 5);
    EXPECT_EQ(env.local_world_size, 4);
    EXPECT_EQ(env.master_addr, "10.1.2.3");
  }
  {
    // Several nodes and no MASTER_ADDR: the launch node may be a login node, so ask for it.
    EnvScope e({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_TASKS_PER_NODE", "4(x2)"},
                {"SLURM_LAUNCH_NODE_IPADDR", "10.9.9.9"}});
    EXPECT_THROW(titan::distributed::read_dist_env(), titan::Error);
  }
}

TEST(DistEnv, InconsistentOrIncompleteEnvironmentsAreClearErrors) {
  {
    EnvScope e({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
    EXPECT_THROW(titan::distributed::read_dist_env(), titan::Error);
  }
  {
    EnvScope e({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
    try {
      titan::distributed::read_dist_env();
      FAIL();
    } catch (const titan::Error& err) {
      EXPECT_NE(std::string(err.what()).find("MASTER_ADDR"), std::string::npos);
    }
  }
  {
    EnvScope e({});
    auto env = titan::distributed::read_dist_env();
    EXPECT_EQ(env.world_size, 1);
    EXPECT_EQ(env.launcher, "none");
  }
}

// ---- placements -------------------------------------------------------------------------------

namespace {

using titan::distributed::Box;
using titan::distributed::ParamLayout;
using titan::distributed::Placement;

// Coordinates on a mesh of named sizes for one rank index per name.
titan::distributed::MeshCoordinate coords(std::map<std::string, std::pair<int, int>> c) {
  return [c](const std::string& mesh) { return c.count(mesh) ? c.at(mesh) : std::pair<int, int>{0, 1}; };
}

}  // namespace

TEST(Placement, BoxesOfOneShardWithPadding) {
  // 10 rows over 4 ranks: pieces of ceil(10/4) = 3 rows; the last rank has 1.
  ParamLayout l{"w", {10, 6}, {{"dp_shard_cp", Placement::shard(0)}}};
  std::vector<int64_t> got;
  for (int r = 0; r < 4; ++r) {
    Box b = titan::distributed::local_box(l, coords({{"dp_shard_cp", {r, 4}}}));
    EXPECT_EQ(b.offsets, (std::vector<int64_t>{3 * r, 0})) << r;
    EXPECT_EQ(b.sizes[1], 6);
    got.push_back(b.sizes[0]);
  }
  EXPECT_EQ(got, (std::vector<int64_t>{3, 3, 3, 1}));
  // 2 rows over 4 ranks: the last two hold nothing (their offsets stop at the end).
  ParamLayout small{"n", {2}, {{"dp_shard_cp", Placement::shard(0)}}};
  Box last = titan::distributed::local_box(small, coords({{"dp_shard_cp", {3, 4}}}));
  EXPECT_EQ(last.sizes, (std::vector<int64_t>{0}));
  EXPECT_EQ(last.offsets, (std::vector<int64_t>{2}));
  EXPECT_EQ(titan::distributed::piece_rows(10, 4), 3);
}

TEST(Placement, TensorParallelThenFsdpNestTheirSplits) {
  // Row-wise (Shard(1)) over tp 2, then FSDP's Shard(0) over 3 ranks of each share.
  ParamLayout l{"layers.0.attention.wo.weight", {7, 8},
                {{"tp", Placement::shard(1)}, {"dp_shard_cp", Placement::shard(0)}}};
  Box b = titan::distributed::local_box(l, coords({{"tp", {1, 2}}, {"dp_shard_cp", {2, 3}}}));
  EXPECT_EQ(b.offsets, (std::vector<int64_t>{6, 4}));
  EXPECT_EQ(b.sizes, (std::vector<int64_t>{1, 4}));
  // Before FSDP's split: the tp share, what FSDP gathers.
  Box share = titan::distributed::local_box(l, coords({{"tp", {1, 2}}, {"dp_shard_cp", {2, 3}}}), 1);
  EXPECT_EQ(share.offsets, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(share.sizes, (std::vector<int64_t>{7, 4}));
  EXPECT_EQ(l.on("tp").dim, 1);
  EXPECT_TRUE(l.sharded_on("dp_shard_cp"));
  EXPECT_EQ(l.on("dp_replicate").kind, Placement::Kind::Replicate);
  EXPECT_EQ(l.describe(), "layers.0.attention.wo.weight [7, 8]: tp Shard(1), dp_shard_cp Shard(0)");
}

TEST(Placement, FullToShardsToFullRoundTrips) {
  // Every rank's box of a 2-D mesh (tp 2 x dp 3), taken from the full tensor and put back,
  // rebuilds it exactly, and no element is held twice.
  for (int dim : {0, 1}) {
    ParamLayout l{"x", {9, 10}, {{"tp", Placement::shard(dim)}, {"dp_shard_cp", Placement::shard(0)}}};
    at::Tensor full = at::arange(90, at::kFloat).view({9, 10});
    at::Tensor rebuilt = at::zeros_like(full), count = at::zeros_like(full);
    for (int t = 0; t < 2; ++t)
      for (int d = 0; d < 3; ++d) {
        Box b = titan::distributed::local_box(l, coords({{"tp", {t, 2}}, {"dp_shard_cp", {d, 3}}}));
        at::Tensor piece = full.narrow(0, b.offsets[0], b.sizes[0]).narrow(1, b.offsets[1], b.sizes[1]).clone();
        rebuilt.narrow(0, b.offsets[0], b.sizes[0]).narrow(1, b.offsets[1], b.sizes[1]).copy_(piece);
        count.narrow(0, b.offsets[0], b.sizes[0]).narrow(1, b.offsets[1], b.sizes[1]).add_(1);
      }
    EXPECT_TRUE(at::equal(rebuilt, full)) << dim;
    EXPECT_TRUE(at::equal(count, at::ones_like(count))) << dim;
  }
}

TEST(DeviceMesh, FlattenedMeshesCoverTheirDimensions) {
  using titan::distributed::DeviceMesh;
  EXPECT_EQ(DeviceMesh::dims_of("dp"), (std::vector<std::string>{"dp_replicate", "dp_shard"}));
  EXPECT_EQ(DeviceMesh::dims_of("dp_shard_cp"), (std::vector<std::string>{"dp_shard", "cp"}));
  EXPECT_EQ(DeviceMesh::dims_of("loss"), (std::vector<std::string>{"dp_replicate", "dp_shard", "cp"}));
  EXPECT_THROW(DeviceMesh::dims_of("ep"), std::logic_error);
  // The data loader's degree leaves context parallelism out; the loss mesh has it.
  auto d = dims({"--parallelism.data_parallel_replicate_degree", "2"}, 4);
  EXPECT_EQ(d.dp_degree(), 4);
  EXPECT_EQ(d.group_of(3, DeviceMesh::dims_of("loss")), (std::vector<int>{0, 1, 2, 3}));
}

// Expert parallelism carves each FSDP group into efsdp x ep, ep inner (torchtitan's sparse mesh).
TEST(DeviceMesh, ExpertGroupsSplitFsdpEpInner) {
  // 8 ranks: dp_replicate 2 x dp_shard 4, ep 2: FSDP groups {0..3}, {4..7}.
  auto d = dims({"--parallelism.data_parallel_replicate_degree", "2", "--parallelism.expert_parallel_degree", "2"}, 8);
  EXPECT_EQ(d.efsdp(), 2);
  EXPECT_EQ(d.expert_groups(true), (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(d.expert_groups(false), (std::vector<std::vector<int>>{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  // With tp 2 and etp 2 the FSDP groups are {0,2,4,6} and {1,3,5,7}: ep groups keep one tp coordinate.
  auto t = dims({"--parallelism.tensor_parallel_degree", "2", "--parallelism.expert_parallel_degree", "2",
                 "--parallelism.expert_tensor_parallel_degree", "2"},
                8);
  EXPECT_FALSE(t.ep_borrows_tp());
  EXPECT_EQ(t.expert_groups(true), (std::vector<std::vector<int>>{{0, 2}, {4, 6}, {1, 3}, {5, 7}}));
  EXPECT_EQ(t.expert_groups(false), (std::vector<std::vector<int>>{{0, 4}, {2, 6}, {1, 5}, {3, 7}}));
  // etp 1 (torchtitan's default): ep borrows the tp ranks, carved from dp_shard x cp x tp = all 8,
  // tp fastest: ep 2 gives the tp pairs, ep 4 the first and last four ranks.
  auto b = dims({"--parallelism.tensor_parallel_degree", "2", "--parallelism.expert_parallel_degree", "2"}, 8);
  EXPECT_TRUE(b.ep_borrows_tp());
  EXPECT_EQ(b.efsdp(), 4);
  EXPECT_EQ(b.expert_groups(true), (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(b.expert_groups(false), (std::vector<std::vector<int>>{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  auto b4 = dims({"--parallelism.tensor_parallel_degree", "2", "--parallelism.expert_parallel_degree", "4"}, 8);
  EXPECT_EQ(b4.expert_groups(true), (std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(b4.expert_groups(false), (std::vector<std::vector<int>>{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  // ep must divide dp_shard x cp x tp; ep under tp without FSDP (the experts sharded over tp ranks alone) is refused.
  EXPECT_THROW(dims({"--parallelism.tensor_parallel_degree", "2", "--parallelism.expert_parallel_degree", "3"}, 8),
               titan::Error);
  EXPECT_THROW(dims({"--parallelism.tensor_parallel_degree", "4", "--parallelism.expert_parallel_degree", "2"}, 4),
               titan::Error);
  // ep = dp_shard x cp: one ep group per FSDP group, efsdp trivial.
  auto whole = dims({"--parallelism.expert_parallel_degree", "4"}, 4);
  EXPECT_EQ(whole.efsdp(), 1);
  EXPECT_EQ(whole.expert_groups(true), (std::vector<std::vector<int>>{{0, 1, 2, 3}}));
  // ep must divide dp_shard x cp.
  EXPECT_THROW(dims({"--parallelism.expert_parallel_degree", "3"}, 4), titan::Error);
}

// Device selection makes cuda:LOCAL_RANK the current device (through the same GpuSelector the
// trainer uses, here a stand-in that records the calls), and refuses a rank without a GPU.
TEST(DeviceSelection, LocalRankBecomesTheCurrentGpu) {
  struct Recorder final : titan::components::GpuSelector {
    int gpus = 0;
    mutable std::vector<int> set;
    int count() const override { return gpus; }
    void set_current(int index) const override { set.push_back(index); }
  };
  Recorder eight;
  eight.gpus = 8;
  EXPECT_EQ(titan::components::pick_device(3, eight), at::Device(at::kCUDA, 3));
  EXPECT_EQ(eight.set, std::vector<int>{3});
  EXPECT_THROW(titan::components::pick_device(8, eight), titan::Error);
  EXPECT_EQ(eight.set, std::vector<int>{3});  // nothing set for a rank that has no GPU
  Recorder none;
  EXPECT_EQ(titan::components::pick_device(5, none), at::Device(at::kCPU));
  EXPECT_TRUE(none.set.empty());
}

TEST(Gpu, LocalRankIsTheCurrentCudaDevice) {
  if (titan::components::cuda_selector().count() == 0) GTEST_SKIP() << "no CUDA device";
  const int last = titan::components::cuda_selector().count() - 1;
  const at::Device d = titan::components::pick_device(last);
  EXPECT_EQ(d, at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(last)));
  // A tensor made without naming a device index lands on the current device.
  EXPECT_EQ(at::empty({1}, at::TensorOptions().device(at::kCUDA)).device().index(), last);
  titan::components::pick_device(0);
}
