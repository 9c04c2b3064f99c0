// TensorBoard event files written directly: TFRecord framing (length, masked CRC32C of the
// length, data, masked CRC32C of the data) around Event protocol buffers holding scalar
// summaries. No TensorFlow or protobuf library is needed; the real TensorBoard reads them.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace titan::components {

// CRC-32C (Castagnoli), and TFRecord's masked form of it.
uint32_t crc32c(std::string_view data);
uint32_t masked_crc32c(std::string_view data);

class TensorBoardWriter {
 public:
  // Creates `log_dir` and one events.out.tfevents.<seconds>.<host> file in it.
  explicit TensorBoardWriter(const std::string& log_dir);
  // One event holding every (tag, value) as a scalar summary at `step`.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);
  void flush();
  bool ok() const { return static_cast<bool>(out_); }  // false once a write failed (a full disk)
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

}  // namespace titan::components
