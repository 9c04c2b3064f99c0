// The pipeline runtime in one process: a tiny model cut into two stages that both sit on one rank
// (a group of one), run by every schedule that places stages so, against one forward and backward
// of the whole model: the same loss and gradients. The split backward (I, then W) computes the
// weight gradients without running the input-gradient chain a second time.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/custom_function.h>

#include "titan/distributed/pipeline_runtime.h"
#include "titan/models/llama3/model.h"

namespace pp = titan::distributed::pp;
using titan::models::llama3::ModelArgs;
using titan::models::llama3::Transformer;

namespace {

int g_chain_backwards = 0;

// An identity that counts its backwards, put on the second stage's input-gradient chain between
// its blocks: a weight backward that walked down from the stage's output would run it again.
struct CountBackward : public torch::autograd::Function<CountBackward> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x) { return x.view_as(x); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list g) {
    ++g_chain_backwards;
    return g;
  }
};

ModelArgs tiny() {
  ModelArgs a;
  a.dim = 32;
  a.n_layers = 4;
  a.n_heads = 4;
  a.n_kv_heads = 2;
  a.vocab_size = 64;
  a.multiple_of = 16;
  a.max_seq_len = 8;
  return a;
}

struct Result {
  double loss = 0;
  std::vector<at::Tensor> grads;
};

Result reference(const at::Tensor& tokens, const at::Tensor& labels) {
  Transformer model(tiny(), at::TensorOptions().dtype(at::kFloat));
  model.init_weights(3);
  at::Tensor loss = model.forward_loss(tokens, labels).sum() / static_cast<double>(labels.numel());
  loss.backward();
  Result r{loss.item<double>(), {}};
  for (auto& p : model.parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

Result pipelined(const std::string& schedule_name, const at::Tensor& tokens, const at::Tensor& labels) {
  Transformer model(tiny(), at::TensorOptions().dtype(at::kFloat));
  model.init_weights(3);
  const int M = static_cast<int>(tokens.size(0));
  const pp::Schedule schedule = pp::make_schedule(schedule_name, 1, 2, M);
  const size_t cut = 3, end = model.num_parts();  // stage 0: embedding, layers 0-1; stage 1: the rest
  double loss = 0;
  std::vector<pp::Stage> stages;
  for (int st = 0; st < 2; ++st) {
    pp::Stage s;
    s.index = st;
    s.input = s.output = pp::Boundary{{1, tokens.size(1), tiny().dim}, at::kFloat};
    const size_t first = st == 0 ? 0 : cut, last = st == 0 ? cut : end;
    auto parts = model.parts();
    for (size_t i = first; i < last; ++i)
      for (auto& p : parts[i].params) s.weights.push_back(*p.tensor);
    s.forward = [&, first, last](int m, const at::Tensor& input) {
      const at::Tensor mb_tokens = tokens.narrow(0, m, 1), mb_labels = labels.narrow(0, m, 1);
      if (first == 0) return model.forward_parts(mb_tokens, nullptr, first, last);
      // The counter sits between the stage's two blocks: above the first block's weights.
      const at::Tensor h = CountBackward::apply(model.forward_parts(input, nullptr, first, first + 1));
      at::Tensor per_token = model.forward_parts(h, &mb_labels, first + 1, last);
      loss += per_token.sum().item<double>() / static_cast<double>(labels.numel());
      return per_token.sum() / static_cast<double>(labels.numel());
    };
    stages.push_back(std::move(s));
  }
  titan::distributed::Group one;
  pp::Runtime runtime(schedule, std::move(stages), one, at::kCPU, /*training=*/true);
  runtime.run_step();
  Result r{loss, {}};
  for (auto& p : model.parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

}  // namespace

TEST(PipelineRuntime, EverySchedulesGradientsEqualOneBackward) {
  at::manual_seed(0);
  const at::Tensor tokens = at::randint(0, 64, {4, 8}, at::kLong), labels = at::randint(0, 64, {4, 8}, at::kLong);
  const Result want = reference(tokens, labels);
  for (const std::string name : {"Interleaved1F1B", "LoopedBFS", "InterleavedZeroBubble", "ZBVZeroBubble"}) {
    g_chain_backwards = 0;
    const Result got = pipelined(name, tokens, labels);
    EXPECT_NEAR(got.loss, want.loss, 1e-6 * want.loss) << name;
    ASSERT_EQ(got.grads.size(), want.grads.size());
    for (size_t i = 0; i < want.grads.size(); ++i)
      EXPECT_TRUE(at::allclose(got.grads[i], want.grads[i], 1e-5, 1e-7)) << name << " gradient " << i;
    // Each microbatch's input-gradient chain ran once: W did not repeat it.
    EXPECT_EQ(g_chain_backwards, 4) << name;
  }
}

TEST(PipelineRuntime, StagesThatDisagreeOnTheirBoundaryAreRefusedNamingBoth) {
  const pp::Schedule schedule = pp::make_schedule("Interleaved1F1B", 1, 2, 2);
  std::vector<pp::Stage> stages(2);
  stages[0].index = 0;
  stages[0].output = pp::Boundary{{1, 8, 32}, at::kFloat};
  stages[1].index = 1;
  stages[1].input = pp::Boundary{{1, 8, 32}, at::kBFloat16};
  titan::distributed::Group one;
  try {
    pp::Runtime runtime(schedule, std::move(stages), one, at::kCPU, true);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("stage 0 (rank 0) sends activations of [1, 8, 32] Float"), std::string::npos) << what;
    EXPECT_NE(what.find("stage 1 (rank 0) expects [1, 8, 32] BFloat16"), std::string::npos) << what;
  }
}
