#include "titan/distributed/ring.h"

#include <map>
#include <mutex>

namespace titan::distributed {

int64_t next_ring_seq(const Group* g) {
  static std::mutex mutex;
  static std::map<const Group*, int64_t> seqs;
  std::lock_guard<std::mutex> lock(mutex);
  return seqs[g]++;
}

RingStep::RingStep(Group& g, const at::Tensor& out, at::Tensor& in, int to, int from, int tag, const char* channel,
                   int64_t seq, Collective kind) {
  comm_stats().bytes[static_cast<size_t>(kind)] += static_cast<double>(out.numel() * out.element_size());
  g.begin_p2p_batch();
  sent_ = g.send(out, to, tag, channel, seq);
  got_ = g.recv(in, from, tag, channel, seq);
  batch_ = g.end_p2p_batch();
}

void RingStep::wait() {
  if (batch_.valid()) {
    batch_.wait();
    return;
  }
  sent_.wait();
  got_.wait();
}

}  // namespace titan::distributed
