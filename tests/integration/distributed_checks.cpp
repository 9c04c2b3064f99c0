// Checks that need 2 CPU processes but not a whole training run. Each tensor-parallel style
// against the unsharded computation, forward and backward: row-wise linear (reduce-scatter to
// sequence shards), the sequence gather at a module input, the row-wise embedding, and the output
// head with the loss vocab-parallel and with the logits gathered. FSDP with two microbatches'
// graphs alive at once (both forwards, then both backwards in reverse, as a pipeline schedule
// runs them) against one after the other. Run as 2 ranks (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT); tests/integration/test_tensor_parallel.py launches it. Prints PASS/FAIL lines;
// exit 1 on a failure.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "titan/train/options.h"
#include "titan/config/job_config.h"
#include "titan/distributed/data_parallel.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/kernels/linear_cross_entropy.h"
#include "titan/models/llama3/parallelize.h"

using namespace titan;
namespace tp = titan::distributed::tp;

namespace {

int failures = 0;

void expect(const std::string& what, const at::Tensor& got, const at::Tensor& want, double tol = 1e-5) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  const double diff = got.sizes() == want.sizes() ? (got - want).abs().max().item<double>() : 1e30;
  const bool ok = diff <= tol * scale;
  if (!ok) ++failures;
  std::printf("%s %s (max diff %.2e)\n", ok ? "PASS" : "FAIL", what.c_str(), diff);
}

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

}  // namespace

int main() {
  const auto env = distributed::read_dist_env();
  distributed::World world(env, at::Device(at::kCPU), std::chrono::seconds(60));
  auto cfg = config::load_config({"--parallelism.tensor_parallel_degree", "2"});
  auto dims = distributed::ParallelDims::from_degrees(train::parallel_degrees(cfg), env.world_size);
  distributed::DeviceMesh mesh(world, dims);
  auto& g = mesh.group("tp");
  const int r = g.rank(), W = g.size();
  at::manual_seed(0);  // the same global tensors on both ranks
  const int64_t B = 2, T = 6, D = 8, F = 10, V = 14, t = T / W;
  auto seq = [&](const at::Tensor& x) { return x.narrow(1, r * t, t); };

  {  // row-wise linear: x (B,T,F) split on features, W (D,F) split on its columns
    at::Tensor x = at::randn({B, T, F}), w = at::randn({D, F}), gy = at::randn({B, T, D});
    at::Tensor xr = leaf(x), wr = leaf(w);
    at::Tensor yr = at::linear(xr, wr);
    yr.backward(gy);
    const int64_t f = F / W;
    at::Tensor xl = leaf(x.narrow(2, r * f, f)), wl = leaf(w.narrow(1, r * f, f));
    at::Tensor yl = tp::rowwise_linear(g)(xl, wl);
    yl.backward(seq(gy));
    expect("rowwise linear forward", yl, seq(yr.detach()));
    expect("rowwise linear dx", xl.grad(), xr.grad().narrow(2, r * f, f));
    expect("rowwise linear dW", wl.grad(), wr.grad().narrow(1, r * f, f));
  }
  {  // the sequence gather at a module input: each rank's gradient of the whole adds up
    at::Tensor x = at::randn({B, T, D}), gy = at::randn({B, T, D});
    at::Tensor xl = leaf(seq(x));
    at::Tensor yl = tp::gather_input(g)(xl);
    yl.backward(gy * (r + 1));
    expect("sequence gather forward", yl, x);
    expect("sequence gather backward (sum over ranks)", xl.grad(), seq(gy) * 3.0);
  }
  {  // row-wise embedding over the vocabulary
    at::Tensor tokens = at::randint(0, V, {B, T}, at::kLong), w = at::randn({V, D}), gy = at::randn({B, T, D});
    at::Tensor wr = leaf(w);
    at::Tensor er = at::embedding(wr, tokens);
    er.backward(gy);
    const int64_t v = V / W;
    at::Tensor wl = leaf(w.narrow(0, r * v, v));
    at::Tensor el = tp::rowwise_embedding(g, r * v)(tokens, wl);
    el.backward(seq(gy));
    expect("rowwise embedding forward", el, seq(er.detach()));
    expect("rowwise embedding dW", wl.grad(), wr.grad().narrow(0, r * v, v));
  }
  for (bool loss_parallel : {true, false}) {  // output head + loss, vocabulary split
    const std::string name = loss_parallel ? "vocab-parallel loss" : "loss on gathered logits";
    at::Tensor h = at::randn({B, T, D}), w = at::randn({V, D}) * 0.5, gl = at::rand({B, T});
    at::Tensor labels = at::randint(0, V, {B, T}, at::kLong);
    labels[0][1] = kernels::kIgnoreIndex;
    at::Tensor hr = leaf(h), wr = leaf(w);
    at::Tensor lr = kernels::linear_cross_entropy_reference(hr, wr, labels);
    lr.backward(gl);
    const int64_t v = V / W;
    at::Tensor hl = leaf(seq(h)), wl = leaf(w.narrow(0, r * v, v));
    at::Tensor ll = tp::vocab_parallel_head_loss(g, r * v, loss_parallel)(hl, wl, labels);
    ll.backward(gl);
    expect(name + " forward", ll, lr.detach());
    expect(name + " dh", hl.grad(), seq(hr.grad()));
    expect(name + " dW", wl.grad(), wr.grad().narrow(0, r * v, v));
  }
  {  // FSDP(2): two microbatches' graphs alive at once
    auto cfg2 = config::load_config({});
    auto dims2 = distributed::ParallelDims::from_degrees(train::parallel_degrees(cfg2), env.world_size);  // dp_shard 2
    distributed::DeviceMesh mesh2(world, dims2);
    auto args = models::llama3::flavor("debugmodel");
    args.n_layers = 2;
    args.vocab_size = 64;
    args.max_seq_len = 16;
    models::llama3::Transformer model(args, at::TensorOptions().device(at::kMeta));
    distributed::DataParallelOptions o;
    o.reshard_after_forward = {true, true, true, false};
    distributed::DataParallel dp(
        model.parts(), models::llama3::param_layouts(model, dims2),
        [&](const std::string& fqn, at::IntArrayRef shape, at::IntArrayRef offsets, at::Tensor& out) {
          models::llama3::init_value_into(args, fqn, shape, 3, offsets, out);
        },
        [&](ForwardHooks* h) { model.set_forward_hooks(h); }, mesh2, at::Device(at::kCPU), o);
    model.init_buffers(at::TensorOptions());
    at::manual_seed(10 + r);  // each rank its own data
    at::Tensor x1 = at::randint(0, 64, {2, 16}, at::kLong), x2 = at::randint(0, 64, {2, 16}, at::kLong);
    auto grads = [&](bool interleaved) {
      for (auto& p : dp.parameters()) p.mutable_grad() = at::Tensor();
      if (interleaved) {
        at::Tensor l1 = model.forward_loss(x1, x1).sum(), l2 = model.forward_loss(x2, x2).sum();
        l2.backward();
        dp.finish_backward();
        l1.backward();
        dp.finish_backward();
      } else {
        for (const auto& x : {x1, x2}) {
          model.forward_loss(x, x).sum().backward();
          dp.finish_backward();
        }
      }
      std::vector<at::Tensor> out;
      for (auto& p : dp.parameters()) out.push_back(p.grad().clone());
      return out;
    };
    auto one_by_one = grads(false), together = grads(true);
    double worst = 0;
    for (size_t i = 0; i < one_by_one.size(); ++i)
      worst = std::max(worst, ((together[i] - one_by_one[i]).abs().max() /
                               one_by_one[i].abs().max().clamp_min(1e-12)).item<double>());
    const bool ok = one_by_one.size() == together.size() && worst < 1e-5;
    if (!ok) ++failures;
    std::printf("%s FSDP(2) with two microbatch graphs alive gives the gradients of one after the other (worst %.1e)\n",
                ok ? "PASS" : "FAIL", worst);
  }
  return failures ? 1 : 0;
}
