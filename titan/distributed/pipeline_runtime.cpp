#include "titan/distributed/pipeline_runtime.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan::distributed::pp {

std::string describe(const Boundary& b) {
  std::string s = "[";
  for (size_t i = 0; i < b.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(b.shape[i]);
  return s + "] " + c10::toString(b.dtype);
}

namespace {

using torch::autograd::Edge;
using torch::autograd::Node;
using torch::autograd::variable_list;

// The backward of one stage split in two (zero-bubble schedules), as PyTorch's pipelining does it.
// The nodes where a weight's gradient path meets the input's ("intermediates": a matmul, a norm's
// multiply, a checkpointed block) are found in the graph. The input backward (I) computes the
// input gradient only, and keeps the gradients that arrive at those nodes. The weight backward
// (W) then runs each of them again for its weight-side outputs only, and passes what they give
// down to the weights in one go (so that a node feeding several weights, e.g. data
// parallelism's gather, runs once). No input-gradient work is repeated.
struct SplitBackward {
  struct Captured {
    std::shared_ptr<Node> node;
    variable_list grads;              // what arrived at the node in the input backward
    std::vector<uint32_t> weight_edges;  // the node's next edges that lead to weights only
  };
  std::vector<Captured> captured;
  std::shared_ptr<bool> active = std::make_shared<bool>(true);
};

class CaptureGrads final : public torch::autograd::FunctionPreHook {
 public:
  CaptureGrads(std::shared_ptr<bool> active, variable_list* into) : active_(std::move(active)), into_(into) {}
  variable_list operator()(const variable_list& grads) override {
    if (*active_) *into_ = grads;
    return grads;
  }

 private:
  std::shared_ptr<bool> active_;
  variable_list* into_;
};

// The input backward: returns the gradient of `input`, and fills `split` for the weight backward.
at::Tensor backward_input(const at::Tensor& output, const at::Tensor& grad, const at::Tensor& input,
                          const std::vector<at::Tensor>& weights, SplitBackward& split) {
  // The graph from the output, with each node's consumers.
  std::unordered_map<Node*, std::vector<Node*>> consumers;
  std::unordered_map<Node*, std::shared_ptr<Node>> owned;
  std::vector<Node*> todo;
  if (const auto root = output.grad_fn()) {
    owned[root.get()] = root;
    todo.push_back(root.get());
  }
  while (!todo.empty()) {
    Node* n = todo.back();
    todo.pop_back();
    for (const Edge& e : n->next_edges()) {
      if (!e.is_valid()) continue;
      Node* c = e.function.get();
      consumers[c].push_back(n);
      if (owned.emplace(c, e.function).second) todo.push_back(c);
    }
  }
  auto upward = [&](Node* start, const std::unordered_set<Node*>& stop, std::unordered_set<Node*>& seen,
                    std::unordered_set<Node*>* hit) {
    std::vector<Node*> stack{start};
    seen.insert(start);
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (Node* p : consumers[n]) {
        if (stop.count(p)) {
          hit->insert(p);
          continue;
        }
        if (seen.insert(p).second) stack.push_back(p);
      }
    }
  };
  // Nodes whose output depends on the input; then, going up from each weight, the first of them.
  std::unordered_set<Node*> depends_on_input, none, weight_side, intermediates;
  const Edge input_edge = torch::autograd::impl::gradient_edge(input);
  if (owned.count(input_edge.function.get())) upward(input_edge.function.get(), none, depends_on_input, &intermediates);
  intermediates.clear();
  for (const auto& w : weights) {
    const Edge e = torch::autograd::impl::gradient_edge(w);
    if (!owned.count(e.function.get()) || weight_side.count(e.function.get())) continue;
    upward(e.function.get(), depends_on_input, weight_side, &intermediates);
  }
  split.captured.reserve(intermediates.size());  // the hooks keep pointers into it
  for (Node* n : intermediates) {
    SplitBackward::Captured c;
    c.node = owned[n];
    for (uint32_t i = 0; i < n->next_edges().size(); ++i) {
      const Edge& e = n->next_edge(i);
      if (e.is_valid() && weight_side.count(e.function.get())) c.weight_edges.push_back(i);
    }
    split.captured.push_back(std::move(c));
  }
  for (auto& c : split.captured) c.node->add_pre_hook(std::make_unique<CaptureGrads>(split.active, &c.grads));
  auto g = torch::autograd::grad({output}, {input}, {grad}, /*retain_graph=*/true, /*create_graph=*/false,
                                 /*allow_unused=*/true);
  *split.active = false;
  return g[0].defined() ? g[0] : at::zeros_like(input);
}

// The weight backward: the intermediates' weight-side outputs, then everything below them at once.
void backward_weight(SplitBackward& split, const std::vector<at::Tensor>& weights) {
  auto& engine = torch::autograd::Engine::get_default_engine();
  torch::autograd::edge_list roots;
  variable_list root_grads;
  for (auto& c : split.captured) {
    torch::autograd::edge_list from, to;
    variable_list grads;
    for (uint32_t i = 0; i < c.grads.size(); ++i)
      if (c.grads[i].defined()) {
        from.emplace_back(c.node, i);
        grads.push_back(c.grads[i]);
      }
    if (from.empty() || c.weight_edges.empty()) continue;
    for (uint32_t i : c.weight_edges) to.push_back(c.node->next_edge(i));
    const variable_list got = engine.execute(from, grads, /*keep_graph=*/true, /*create_graph=*/false,
                                             /*accumulate_grad=*/false, to);
    for (size_t k = 0; k < to.size(); ++k)
      if (got[k].defined()) {
        roots.push_back(to[k]);
        root_grads.push_back(got[k]);
      }
    c.grads.clear();
  }
  if (roots.empty()) return;
  torch::autograd::edge_list leaves;
  for (const auto& w : weights) leaves.push_back(torch::autograd::impl::gradient_edge(w));
  engine.execute(roots, root_grads, /*keep_graph=*/false, /*create_graph=*/false, /*accumulate_grad=*/true, leaves);
}

}  // namespace

// The tensors of one (stage, microbatch) while its forward's graph is alive.
struct Runtime::Slot {
  at::Tensor input;        // the stage's input leaf (not on stage 0)
  at::Tensor output;       // what forward returned
  at::Tensor grad_output;  // the gradient of output, from the next stage (not on the last)
  at::Tensor grad_input;   // the gradient of input, for the previous stage
  Pending recv_input, recv_grad;
  bool input_posted = false, grad_posted = false;
  std::unique_ptr<SplitBackward> split;  // between I and W
};

namespace {

constexpr int kDescribed = 8;  // dtype, rank, up to 6 sizes

void put(const Boundary& b, int64_t* row) {
  row[0] = static_cast<int64_t>(b.dtype);
  row[1] = static_cast<int64_t>(b.shape.size());
  for (size_t i = 0; i < b.shape.size() && i < kDescribed - 2; ++i) row[2 + i] = b.shape[i];
}

Boundary get(const int64_t* row) {
  Boundary b;
  b.dtype = static_cast<at::ScalarType>(row[0]);
  for (int64_t i = 0; i < row[1] && i < kDescribed - 2; ++i) b.shape.push_back(row[2 + i]);
  return b;
}

// A tag per (stage that sends, microbatch, direction), unique within a step.
int tag_of(int stage, int microbatch, bool gradient, int num_stages) {
  return ((microbatch * num_stages + stage) << 1) | (gradient ? 1 : 0);
}

// The flight recorder's name for the messages between two stages (validation's apart: its
// messages are numbered on their own).
std::string channel(int from, int to, bool gradient, bool training) {
  return std::string(training ? "pp " : "pp validation ") + (gradient ? "gradients stage " : "activations stage ") +
         std::to_string(from) + " -> stage " + std::to_string(to);
}

}  // namespace

Runtime::Runtime(Schedule schedule, std::vector<Stage> stages, Group& group, at::Device device, bool training,
                 RuntimeHooks hooks)
    : schedule_(std::move(schedule)), stages_(std::move(stages)), group_(group), device_(device), training_(training),
      hooks_(std::move(hooks)) {
  actions_ = with_communication(schedule_)[static_cast<size_t>(group_.rank())];
  const auto mine = schedule_.stages_of_rank(group_.rank());
  if (mine.size() != stages_.size())
    throw std::logic_error("pipeline runtime: rank " + std::to_string(group_.rank()) + " holds " +
                           std::to_string(stages_.size()) + " stages, the schedule places " + std::to_string(mine.size()));
  for (size_t i = 0; i < mine.size(); ++i)
    if (stages_[i].index != mine[i])
      throw std::logic_error("pipeline runtime: stage " + std::to_string(stages_[i].index) + " is not the schedule's");
  last_weight_action_.assign(stages_.size(), -1);
  for (size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    if (a.type != ActionType::FullBackward && a.type != ActionType::BackwardWeight) continue;
    for (size_t k = 0; k < stages_.size(); ++k)
      if (stages_[k].index == a.stage) last_weight_action_[k] = static_cast<int>(i);
  }
  exchange_boundaries();
}

Stage& Runtime::local(int stage) {
  for (auto& s : stages_)
    if (s.index == stage) return s;
  throw std::logic_error("pipeline runtime: stage " + std::to_string(stage) + " is not on this rank");
}

void Runtime::exchange_boundaries() {
  const int S = schedule_.num_stages();
  // Per stage: what it expects (row 0) and what it sends (row 1); -1 where another rank says.
  at::Tensor table = at::full({S, 2, kDescribed}, -1, at::kLong);
  for (const auto& st : stages_) {
    at::Tensor in = table[st.index][0], out = table[st.index][1];
    in.fill_(0);
    out.fill_(0);
    if (st.index > 0) put(st.input, in.data_ptr<int64_t>());
    if (st.index < S - 1) put(st.output, out.data_ptr<int64_t>());
  }
  if (!group_.trivial()) {
    // Gloo and NCCL reduce on the group's device: bring the table there and back.
    at::Tensor t = table.to(device_);
    group_.all_reduce(t, /*max=*/true).wait();
    table = t.cpu();
  }
  const int64_t* v = table.data_ptr<int64_t>();
  for (int s = 0; s + 1 < S; ++s) {
    const Boundary sends = get(v + (s * 2 + 1) * kDescribed), expects = get(v + ((s + 1) * 2) * kDescribed);
    if (!(sends == expects))
      throw Error("pipeline stage " + std::to_string(s) + " (rank " + std::to_string(schedule_.rank_of_stage(s)) +
                      ") sends activations of " + describe(sends) + " but stage " + std::to_string(s + 1) + " (rank " +
                      std::to_string(schedule_.rank_of_stage(s + 1)) + ") expects " + describe(expects),
                  "launch every rank with the same config (training.seq_len, local_batch_size, "
                  "pipeline_parallel_microbatch_size, model flavor and dtype)");
  }
}

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

void Runtime::run_step() {
  ++step_;
  stats_ = {};
  const auto step_start = Clock::now();
  int in_flight = 0;
  const int S = schedule_.num_stages(), M = schedule_.microbatches;
  std::map<std::pair<int, int>, Slot> slots;  // (stage, microbatch)
  std::vector<std::pair<Pending, at::Tensor>> sends;  // kept alive until they are done
  int64_t seq_base = (step_ - 1) * M;  // the flight recorder's message number: step-major
  auto peer = [&](int stage) { return schedule_.rank_of_stage(stage); };
  auto timed_wait = [&](Pending& p) {
    const auto t = Clock::now();
    if (hooks_.around_wait) hooks_.around_wait(true);
    p.wait();
    if (hooks_.around_wait) hooks_.around_wait(false);
    stats_.wait_seconds += since(t);
  };
  if (hooks_.around_step) hooks_.around_step(true);
  auto wait_input = [&](Slot& sl) {
    if (sl.input_posted) {
      timed_wait(sl.recv_input);
      sl.input_posted = false;
    }
  };
  auto wait_grad = [&](Slot& sl) {
    if (sl.grad_posted) {
      timed_wait(sl.recv_grad);
      sl.grad_posted = false;
    }
  };
  // Consecutive communication actions start together (one NCCL group). On NCCL the group's work
  // stands for its transfers: waiting on it orders the compute after them (the host goes on).
  bool in_batch = false;
  auto end_batch = [&] {
    if (!in_batch) return;
    Pending batch = group_.end_p2p_batch();
    timed_wait(batch);
    in_batch = false;
  };
  for (size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    const int st = a.stage, m = a.microbatch;
    Slot& sl = slots[{st, m}];
    const bool comm = !is_compute(a.type);
    if (comm && !in_batch) {
      group_.begin_p2p_batch();
      in_batch = true;
    }
    if (!comm) end_batch();
    switch (a.type) {
      case ActionType::RecvF: {
        const Stage& s = local(st);
        sl.input = at::empty(s.input.shape, at::TensorOptions().dtype(s.input.dtype).device(device_));
        sl.recv_input = group_.recv(sl.input, peer(st - 1), tag_of(st - 1, m, false, S),
                                    channel(st - 1, st, false, training_), seq_base + m);
        sl.input_posted = true;
        break;
      }
      case ActionType::SendF: {
        at::Tensor out = sl.output.detach().contiguous();
        sends.emplace_back(group_.send(out, peer(st + 1), tag_of(st, m, false, S),
                                       channel(st, st + 1, false, training_), seq_base + m),
                           out);
        if (!training_) sl.output = at::Tensor();
        break;
      }
      case ActionType::RecvB: {
        const Stage& s = local(st);
        sl.grad_output = at::empty(s.output.shape, at::TensorOptions().dtype(s.output.dtype).device(device_));
        sl.recv_grad = group_.recv(sl.grad_output, peer(st + 1), tag_of(st + 1, m, true, S),
                                   channel(st + 1, st, true, training_), seq_base + m);
        sl.grad_posted = true;
        break;
      }
      case ActionType::SendB: {
        at::Tensor g = sl.grad_input.contiguous();
        sends.emplace_back(group_.send(g, peer(st - 1), tag_of(st, m, true, S), channel(st, st - 1, true, training_),
                                       seq_base + m),
                           g);
        sl.grad_input = at::Tensor();
        break;
      }
      case ActionType::Forward: {
        Stage& s = local(st);
        at::Tensor input;
        if (st > 0) {
          wait_input(sl);
          if (!sl.input.defined())
            throw std::logic_error("pipeline runtime: no input for " + to_string(a));
          if (training_) sl.input.requires_grad_(true);
          input = sl.input;
        }
        const auto t = Clock::now();
        at::Tensor out = s.forward(m, input);
        stats_.compute_seconds += since(t);
        if (training_) stats_.max_in_flight = std::max(stats_.max_in_flight, ++in_flight);
        if (st < S - 1) {
          const Boundary got{out.sizes().vec(), out.scalar_type()};
          if (!(got == s.output))
            throw std::logic_error("pipeline stage " + std::to_string(st) + " produced " + describe(got) +
                                   " where it declared " + describe(s.output));
          // The next stage on this rank (a V's turn) takes it as its input directly.
          if (peer(st + 1) == group_.rank()) slots[{st + 1, m}].input = out.detach();
        }
        sl.output = out;
        if (!training_) sl.input = at::Tensor();
        if (!training_ && (st == S - 1 || peer(st + 1) == group_.rank())) sl.output = at::Tensor();
        break;
      }
      case ActionType::FullBackward:
      case ActionType::BackwardInput:
      case ActionType::BackwardWeight: {
        if (!training_) throw std::logic_error("pipeline runtime: a backward in a forward-only schedule");
        Stage& s = local(st);
        at::Tensor grad;
        if (st < S - 1) {
          wait_grad(sl);
          grad = sl.grad_output;
          if (!grad.defined()) throw std::logic_error("pipeline runtime: no output gradient for " + to_string(a));
        }
        const std::vector<at::Tensor> outputs{sl.output};
        const std::vector<at::Tensor> grads{grad};  // undefined: the loss (a scalar) starts at 1
        size_t local_index = 0;
        while (stages_[local_index].index != st) ++local_index;
        const bool last = last_weight_action_[local_index] == static_cast<int>(i);
        const auto t = Clock::now();
        if (a.type == ActionType::BackwardInput) {
          if (st > 0) {
            sl.split = std::make_unique<SplitBackward>();
            sl.grad_input = backward_input(sl.output, grad, sl.input, s.weights, *sl.split);
          }
        } else {
          if (hooks_.before_weight_gradients) hooks_.before_weight_gradients(st, last);
          if (a.type == ActionType::FullBackward) {
            torch::autograd::backward(outputs, grads);
            if (st > 0) sl.grad_input = sl.input.grad().defined() ? sl.input.grad() : at::zeros_like(sl.input);
          } else if (sl.split) {  // after an I: the weight-side work only
            backward_weight(*sl.split, s.weights);
            sl.split.reset();
          } else {  // the first stage has no input gradient: its W is the whole backward
            torch::autograd::backward(outputs, grads, /*keep_graph=*/false, /*create_graph=*/false, s.weights);
          }
          if (hooks_.after_weight_gradients) hooks_.after_weight_gradients();
          --in_flight;
          sl.output = at::Tensor();
          sl.grad_output = at::Tensor();
          if (a.type == ActionType::BackwardWeight || st == 0) sl.input = at::Tensor();
        }
        stats_.compute_seconds += since(t);
        if (st > 0 && a.type != ActionType::BackwardWeight && peer(st - 1) == group_.rank()) {
          slots[{st - 1, m}].grad_output = sl.grad_input;
          sl.grad_input = at::Tensor();
        }
        break;
      }
    }
  }
  end_batch();
  for (auto& [p, sent] : sends) timed_wait(p);
  if (hooks_.around_step) hooks_.around_step(false);
  stats_.wall_seconds = since(step_start);
}

}  // namespace titan::distributed::pp
