// Pieces of observability that need no run: CRC-32C, the TensorBoard record framing, and the
// flight-recorder report on hand-written dumps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "titan/common/error.h"
#include "titan/components/metrics/tensorboard.h"
#include "titan/distributed/flight_recorder.h"

using titan::components::crc32c;
using titan::components::masked_crc32c;

TEST(TensorBoard, Crc32cKnownVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the standard check value of CRC-32C
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4
}

TEST(TensorBoard, RecordsAreFramedWithMaskedCrcs) {
  const auto dir = std::filesystem::temp_directory_path() / ("titan_tb_unit_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  titan::components::TensorBoardWriter w(dir.string());
  w.add_scalars(7, {{"loss", 1.5}});
  w.flush();
  std::ifstream in(w.path(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  int records = 0;
  while (pos < bytes.size()) {
    ASSERT_LE(pos + 12, bytes.size());
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[pos + i])) << (8 * i);
    uint32_t len_crc = 0, data_crc = 0;
    for (int i = 0; i < 4; ++i) len_crc |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[pos + 8 + i])) << (8 * i);
    EXPECT_EQ(len_crc, masked_crc32c(std::string_view(bytes).substr(pos, 8)));
    const std::string_view data = std::string_view(bytes).substr(pos + 12, len);
    for (int i = 0; i < 4; ++i)
      data_crc |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[pos + 12 + len + i])) << (8 * i);
    EXPECT_EQ(data_crc, masked_crc32c(data));
    pos += 12 + len + 4;
    ++records;
  }
  EXPECT_EQ(records, 2);  // the file-version event and one summary
  EXPECT_NE(bytes.find("brain.Event:2"), std::string::npos);
  EXPECT_NE(bytes.find("loss"), std::string::npos);
}

namespace {

// Writes a recorder file for `rank` with entries (op, numel, state) of one group from seq 0.
void write_dump(const std::filesystem::path& dir, int rank, int world,
                const std::vector<std::tuple<std::string, int64_t, std::string>>& entries) {
  nlohmann::json j{{"rank", rank}, {"world_size", world}, {"reason", "test"}, {"dumped_at", 0.0}};
  j["entries"] = nlohmann::json::array();
  int64_t seq = 0;
  for (const auto& [op, numel, state] : entries)
    j["entries"].push_back({{"group", "dp[0,1,2]"}, {"seq", seq++}, {"op", op}, {"numel", numel}, {"dtype", "Float"},
                            {"start", 0.0}, {"end", nullptr}, {"state", state}});
  std::ofstream(dir / ("rank_" + std::to_string(rank))) << j.dump();
}

// A folder of this process's own (two test runs at once never share one).
std::filesystem::path fresh_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / (name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace

TEST(FlightRecorder, ReportNamesTheRankThatFellBehind) {
  auto dir = fresh_dir("titan_fr_behind");
  write_dump(dir, 0, 3, {{"all_gather", 8, "completed"}, {"all_reduce", 1, "failed"}});
  write_dump(dir, 1, 3, {{"all_gather", 8, "completed"}});
  write_dump(dir, 2, 3, {{"all_gather", 8, "completed"}, {"all_reduce", 1, "failed"}});
  const std::string r = titan::distributed::comm_report(dir.string());
  EXPECT_NE(r.find("BEHIND: rank 1 fell behind"), std::string::npos) << r;
  EXPECT_NE(r.find("#1 (all_reduce(1 x Float), failed)"), std::string::npos) << r;
}

TEST(FlightRecorder, ReportNamesTheRankThatSkippedACollective) {
  auto dir = fresh_dir("titan_fr_skip");
  write_dump(dir, 0, 3, {{"all_gather", 8, "completed"}, {"reduce_scatter", 16, "pending"}});
  write_dump(dir, 1, 3, {{"reduce_scatter", 16, "completed"}, {"all_reduce", 1, "pending"}});
  write_dump(dir, 2, 3, {{"all_gather", 8, "completed"}, {"reduce_scatter", 16, "pending"}});
  const std::string r = titan::distributed::comm_report(dir.string());
  EXPECT_NE(r.find("DIVERGED: rank 1 entered reduce_scatter(16 x Float) as collective #0"), std::string::npos) << r;
}

TEST(FlightRecorder, TwoRanksWithoutMajorityBlameTheOneThatStopped) {
  auto dir = fresh_dir("titan_fr_two");
  write_dump(dir, 0, 2, {{"all_gather", 8, "completed"}, {"all_reduce", 1, "failed"}});
  write_dump(dir, 1, 2, {{"all_gather", 8, "completed"}});
  const std::string r = titan::distributed::comm_report(dir.string());
  EXPECT_NE(r.find("BEHIND: rank 1 fell behind"), std::string::npos) << r;
  EXPECT_EQ(r.find("AHEAD"), std::string::npos) << r;
}

TEST(FlightRecorder, ReportReadsOnlyTheLatestRun) {
  auto dir = fresh_dir("titan_fr_runs");
  write_dump(dir, 0, 2, {{"all_gather", 8, "completed"}});
  write_dump(dir, 1, 2, {{"all_gather", 8, "completed"}});
  nlohmann::json old{{"rank", 7}, {"world_size", 8}, {"reason", "old"}, {"dumped_at", -5.0}, {"run_id", 99}};
  old["entries"] = nlohmann::json::array();
  std::ofstream(dir / "rank_7") << old.dump();
  const std::string r = titan::distributed::comm_report(dir.string());
  EXPECT_NE(r.find("2 of 2 ranks"), std::string::npos) << r;
  EXPECT_EQ(r.find("rank 7"), std::string::npos) << r;
}

TEST(FlightRecorder, ReportOnAFolderWithoutDumpsIsAClearError) {
  auto dir = fresh_dir("titan_fr_empty");
  EXPECT_THROW(titan::distributed::comm_report(dir.string()), titan::Error);
  EXPECT_THROW(titan::distributed::comm_report((dir / "missing").string()), titan::Error);
}
