// Point-to-point rings over a group: one step of a ring (a send to one neighbour and a receive
// from the other, started together), for the collectives titan.cpp pipelines with compute
// (async tensor parallelism, context parallelism's ring attention).
#pragma once

#include <ATen/ATen.h>

#include "titan/distributed/process_group.h"

namespace titan::distributed {

// The number of a group's next ring, the same on every member (each runs its rings in the same
// order): it names the messages in the flight recorder.
int64_t next_ring_seq(const Group* g);

// A send of `out` to member `to` and a receive into `in` from member `from`, started together;
// wait() finishes both. Counted in the communication statistics as `kind`, the collective the
// ring stands for (a ring's sends add up to the (W-1)/W of the whole that the collective moves).
// `tag` keeps one user's messages apart from another's on the same group.
class RingStep {
 public:
  RingStep(Group& g, const at::Tensor& out, at::Tensor& in, int to, int from, int tag, const char* channel,
           int64_t seq, Collective kind);
  void wait();

 private:
  Pending sent_, got_, batch_;
};

}  // namespace titan::distributed
