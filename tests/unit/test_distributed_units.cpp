// The device mesh and the launcher environment, without starting any process.
#include <gtest/gtest.h>

#include <cstdlib>

#include "titan/common/error.h"
#include "titan/config/job_config.h"
#include "titan/distributed/parallel_dims.h"
#include "titan/distributed/process_group.h"

using titan::distributed::ParallelDims;

namespace {

ParallelDims dims(std::vector<std::string> args, int world) {
  return ParallelDims::from_config(titan::config::load_config(args), world);
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
    EXPECT_NE(std::string(e.what()).find("world size is 4"), std::string::npos);
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
