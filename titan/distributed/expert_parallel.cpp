#include "titan/distributed/expert_parallel.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <numeric>

namespace titan::distributed {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows to and from every member of a group: forward sends in_splits[j] rows to member j and
// receives out_splits[j] from it; backward sends the gradients back the other way.
struct AllToAllFunction : public torch::autograd::Function<AllToAllFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* group, std::vector<int64_t> out_splits,
                            std::vector<int64_t> in_splits) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);  // the plan's, alive for the whole run
    ctx->saved_data["out"] = out_splits;
    ctx->saved_data["in"] = in_splits;
    return exchange(*group, x, out_splits, in_splits);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* group = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    const auto out = ctx->saved_data["out"].toIntVector(), in = ctx->saved_data["in"].toIntVector();
    return {exchange(*group, grads[0], in, out), at::Tensor(), at::Tensor(), at::Tensor()};
  }
  static at::Tensor exchange(Group& group, const at::Tensor& x, const std::vector<int64_t>& out_splits,
                             const std::vector<int64_t>& in_splits) {
    RECORD_FUNCTION("expert_parallel_all_to_all", std::vector<c10::IValue>());
    const int64_t rows = std::accumulate(out_splits.begin(), out_splits.end(), int64_t{0});
    at::Tensor out = at::empty({rows, x.size(1)}, x.options());
    group.all_to_all(out, x.contiguous(), out_splits, in_splits).wait();
    return out;
  }
};

}  // namespace

at::Tensor ExpertParallel::run(const at::Tensor& x, const at::Tensor& counts, const LocalExperts& experts) {
  const int W = group_.size();
  const int64_t E = counts.size(0), L = E / W;
  TORCH_CHECK(E % W == 0, "expert parallelism: ", E, " experts over ", W, " ranks");
  // 2. Each rank's counts for this rank's experts: (W, L), on the host (the splits are host sizes).
  const at::Tensor mine = counts.to(at::kLong).contiguous();
  at::Tensor theirs = at::empty({W * L}, mine.options());
  group_.all_to_all(theirs, mine, std::vector<int64_t>(W, L), std::vector<int64_t>(W, L)).wait();
  const at::Tensor send_host = mine.to(at::kCPU).view({W, L}), recv_host = theirs.to(at::kCPU).view({W, L});
  const at::Tensor send_rows = send_host.sum(1), recv_rows = recv_host.sum(1);
  const std::vector<int64_t> in_splits(send_rows.data_ptr<int64_t>(), send_rows.data_ptr<int64_t>() + W);
  const std::vector<int64_t> out_splits(recv_rows.data_ptr<int64_t>(), recv_rows.data_ptr<int64_t>() + W);
  // 3. The rows, received member-major ([source][local expert]), put in local expert order.
  const at::Tensor received = AllToAllFunction::apply(x, &group_, out_splits, in_splits);
  const int64_t* n = recv_host.data_ptr<int64_t>();
  std::vector<int64_t> start(static_cast<size_t>(W * L));
  for (int64_t i = 0, row = 0; i < W * L; ++i) {
    start[static_cast<size_t>(i)] = row;
    row += n[i];
  }
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(received.size(0)));
  for (int64_t e = 0; e < L; ++e)
    for (int64_t j = 0; j < W; ++j)
      for (int64_t r = 0; r < n[j * L + e]; ++r) order.push_back(start[static_cast<size_t>(j * L + e)] + r);
  const at::Tensor index = at::tensor(order, at::kLong).to(x.device());
  const at::Tensor local_counts = recv_host.sum(0).to(x.device());  // (L): rows per local expert
  const at::Tensor out_local = experts(received.index_select(0, index), local_counts);
  // 4. Back in the received order, and home.
  const at::Tensor back = at::zeros_like(out_local).index_copy(0, index, out_local);
  return AllToAllFunction::apply(back, &group_, in_splits, out_splits);
}

}  // namespace titan::distributed
