// Activation checkpointing of one transformer block: full and op-level give the gradients of a
// run without checkpointing, bit for bit on the CPU.
#include <gtest/gtest.h>

#include "titan/distributed/activation_checkpoint.h"
#include "titan/kernels/ops.h"
#include "titan/models/llama3/model.h"

using namespace titan;
using models::llama3::Transformer;

namespace {

struct Grads {
  at::Tensor out, dx;
  std::vector<at::Tensor> dw;
};

using Runner = at::Tensor (*)(const titan::BlockFn&, const at::Tensor&, const titan::BlockContext&,
                              const std::vector<at::Tensor*>&);

Grads run_block(Transformer& model, const at::Tensor& x0, const at::Tensor& g, Runner runner,
                const titan::BlockContext& context = {}) {
  auto& block = model.layers()[0];
  auto slots = block.weight_slots();
  for (auto* w : slots) w->mutable_grad() = at::Tensor();
  at::Tensor x = x0.clone().requires_grad_(true);
  models::llama3::RopeTable rope = models::llama3::rope_table(model.args(), at::TensorOptions());
  titan::BlockFn fn = [&](const at::Tensor& in, const titan::BlockContext& c) {
    return block.forward(in, rope, c.doc_starts);
  };
  at::Tensor out = runner ? runner(fn, x, context, slots) : fn(x, context);
  out.backward(g);
  Grads r{out.detach(), x.grad(), {}};
  for (auto* w : slots) r.dw.push_back(w->grad());
  return r;
}

}  // namespace

TEST(Checkpointing, FullAndOpLevelGiveTheGradientsOfNoCheckpointing) {
  auto args = models::llama3::flavor("debugmodel");
  args.n_layers = 1;
  args.n_kv_heads = 4;  // grouped-query attention too
  args.max_seq_len = 32;
  for (bool fused : {false, true}) {
    Transformer model(args, at::TensorOptions());
    model.init_weights(5);
    model.set_fused_kernels(fused, false);
    at::manual_seed(0);
    at::Tensor x = at::randn({2, 32, args.dim}), g = at::randn({2, 32, args.dim});
    // Causal, and block-causal with documents at 0-9, 10-31 (row 0) and 0-3, 4-4, 5-31 (row 1):
    // the recompute gets the forward's documents back.
    at::Tensor tokens = at::zeros({2, 32}, at::kLong);
    tokens[0][9] = tokens[1][3] = tokens[1][4] = 1;
    for (const titan::BlockContext& context : {titan::BlockContext{}, titan::BlockContext{kernels::document_starts(tokens, 1)}})
    for (Runner runner : {&distributed::checkpoint_block, &distributed::op_checkpoint_block}) {
      Grads none = run_block(model, x, g, nullptr, context);
      Grads ac = run_block(model, x, g, runner, context);
      const bool op = runner == &distributed::op_checkpoint_block;
      EXPECT_TRUE(at::equal(ac.out, none.out)) << "fused " << fused << " op " << op;
      EXPECT_TRUE(at::equal(ac.dx, none.dx)) << "fused " << fused << " op " << op << " max diff "
                                             << (ac.dx - none.dx).abs().max().item<double>();
      for (size_t i = 0; i < none.dw.size(); ++i)
        EXPECT_TRUE(at::equal(ac.dw[i], none.dw[i])) << "fused " << fused << " op " << op << " weight " << i
                                                     << " max diff " << (ac.dw[i] - none.dw[i]).abs().max().item<double>();
    }
  }
}

TEST(Checkpointing, RecomputeUsesTheWeightsOfItsForward) {
  // Data parallelism may put another microbatch's gathered weights into the slots before this
  // microbatch's backward: the recompute still uses (and differentiates against) its own.
  auto args = models::llama3::flavor("debugmodel");
  args.n_layers = 1;
  args.max_seq_len = 16;
  Transformer model(args, at::TensorOptions());
  model.init_weights(6);
  at::manual_seed(1);
  at::Tensor x = at::randn({1, 16, args.dim}), g = at::randn({1, 16, args.dim});
  Grads want = run_block(model, x, g, nullptr);
  auto& block = model.layers()[0];
  auto slots = block.weight_slots();
  for (auto* w : slots) w->mutable_grad() = at::Tensor();
  models::llama3::RopeTable rope = models::llama3::rope_table(model.args(), at::TensorOptions());
  titan::BlockFn fn = [&](const at::Tensor& in, const titan::BlockContext&) { return block.forward(in, rope); };
  at::Tensor xi = x.clone().requires_grad_(true);
  at::Tensor out = distributed::checkpoint_block(fn, xi, {}, slots);
  std::vector<at::Tensor> mine;
  for (auto* w : slots) {
    mine.push_back(*w);
    *w = at::zeros_like(*w).requires_grad_(true);  // someone else's weights now
  }
  out.backward(g);
  EXPECT_TRUE(at::equal(xi.grad(), want.dx));
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(at::equal(mine[i].grad(), want.dw[i])) << i;
  EXPECT_FALSE(slots[0]->grad().defined());  // the stand-ins got nothing
}

TEST(Checkpointing, ReplayedOpsMatchTheirAtenGraphs) {
  at::manual_seed(1);
  at::Tensor x0 = at::randn({2, 5, 8}), w0 = at::randn({6, 8}), g = at::randn({2, 5, 6});
  auto grads = [&](bool replay) {
    at::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    std::vector<at::Tensor> kept;
    at::Tensor y;
    if (replay) {
      {
        at::NoGradGuard no_grad;
        titan::kernels::OpCheckpointScope rec(titan::kernels::OpCheckpointScope::Mode::Record, kept);
        titan::kernels::linear(x, w);
      }
      titan::kernels::OpCheckpointScope rep(titan::kernels::OpCheckpointScope::Mode::Replay, kept);
      y = titan::kernels::linear(x, w);
      rep.finish();
    } else {
      y = titan::kernels::linear(x, w);
    }
    y.backward(g);
    return std::make_tuple(y.detach(), x.grad(), w.grad());
  };
  auto [y0, dx0, dw0] = grads(false);
  auto [y1, dx1, dw1] = grads(true);
  EXPECT_TRUE(at::equal(y0, y1));
  EXPECT_TRUE(at::equal(dx0, dx1)) << (dx0 - dx1).abs().max().item<double>();
  EXPECT_TRUE(at::equal(dw0, dw1)) << (dw0 - dw1).abs().max().item<double>();
}

TEST(Checkpointing, ReplayedAttentionMatchesItsAtenGraph) {
  at::manual_seed(2);
  at::Tensor q0 = at::randn({2, 4, 16, 8}), k0 = at::randn({2, 2, 16, 8}), v0 = at::randn({2, 2, 16, 8});
  at::Tensor g = at::randn({2, 4, 16, 8});
  auto grads = [&](bool replay) {
    at::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
               v = v0.clone().requires_grad_(true);
    std::vector<at::Tensor> kept;
    at::Tensor y;
    if (replay) {
      {
        at::NoGradGuard no_grad;
        titan::kernels::OpCheckpointScope rec(titan::kernels::OpCheckpointScope::Mode::Record, kept);
        titan::kernels::attention(q, k, v, 0.3);
      }
      titan::kernels::OpCheckpointScope rep(titan::kernels::OpCheckpointScope::Mode::Replay, kept);
      y = titan::kernels::attention(q, k, v, 0.3);
      rep.finish();
    } else {
      y = titan::kernels::attention(q, k, v, 0.3);
    }
    y.backward(g);
    return std::make_tuple(y.detach(), q.grad(), k.grad(), v.grad());
  };
  auto [y0, dq0, dk0, dv0] = grads(false);
  auto [y1, dq1, dk1, dv1] = grads(true);
  EXPECT_TRUE(at::equal(y0, y1));
  EXPECT_TRUE(at::equal(dq0, dq1)) << (dq0 - dq1).abs().max().item<double>();
  EXPECT_TRUE(at::equal(dk0, dk1)) << (dk0 - dk1).abs().max().item<double>();
  EXPECT_TRUE(at::equal(dv0, dv1)) << (dv0 - dv1).abs().max().item<double>();
}
