// PyTorch distributed checkpoints (torch.distributed.checkpoint, "DCP") as torchtitan writes
// them: a step folder with `.metadata` (a pickled index: per key the global shape, dtype and
// chunks, and where each chunk's bytes lie) and `__<rank>_<n>.distcp` files (each chunk a
// torch.save archive). torchtitan's keys: the model's FQNs at the top level,
// "optimizer.state.<fqn>.exp_avg" / ".exp_avg_sq" / ".step", "train_state.step",
// "train_state.ntokens_seen", "lr_scheduler.last_epoch", "dataloader.*".
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "titan/components/checkpoint/checkpoint.h"

namespace titan::components {

class DcpReader final : public StateReader {
 public:
  explicit DcpReader(const std::string& step_dir);
  const std::string& path() const override { return dir_; }
  bool has(const std::string& key) const override;
  std::vector<int64_t> global_shape(const std::string& key) const override;
  void read_into(const std::string& key, const Box& box, at::Tensor out) override;
  bool holds_full_state() const override;
  int64_t step() const override;
  nlohmann::json scalars() override;
  std::string describe() const override { return "a PyTorch distributed checkpoint (torchtitan)"; }
  std::string model_flavor() const override { return "unknown (torchtitan)"; }
  uint64_t bytes_read() const override { return bytes_; }

  std::vector<std::string> keys() const override;  // DCP's tensor keys
  at::ScalarType dtype(const std::string& key) const;
  // DCP's key for one of ours ("model.x" -> "x", "optimizer.x.exp_avg" -> "optimizer.state.x.exp_avg").
  static std::string dcp_key(const std::string& key);

 private:
  struct Chunk {
    std::vector<int64_t> offsets, sizes;
    std::string file;
    uint64_t offset = 0, length = 0;
  };
  struct Tensor {
    std::vector<int64_t> shape;
    at::ScalarType dtype = at::kFloat;
    std::vector<Chunk> chunks;
  };
  std::vector<char> read_bytes(const std::string& file, uint64_t offset, uint64_t length, const std::string& key);
  std::optional<int64_t> read_int(const std::string& dcp_key);

  std::string dir_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, Chunk> bytes_items_;
  uint64_t bytes_ = 0;
};

}  // namespace titan::components
