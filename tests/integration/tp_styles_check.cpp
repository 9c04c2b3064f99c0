// Each tensor-parallel style on 2 CPU processes against the unsharded computation, forward and
// backward: row-wise linear (reduce-scatter to sequence shards), the sequence gather at a module
// input, the row-wise embedding, and the output head with the loss vocab-parallel and with the
// logits gathered. Run as 2 ranks (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
// tests/integration/test_tensor_parallel.py launches it. Prints PASS/FAIL lines; exit 1 on a failure.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "titan/config/job_config.h"
#include "titan/distributed/device_mesh.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/kernels/linear_cross_entropy.h"

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
  auto dims = distributed::ParallelDims::from_config(cfg, env.world_size);
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
  return failures ? 1 : 0;
}
