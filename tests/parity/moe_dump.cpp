// Writes titan.cpp's side of the MoE parity check: for each case (router and expert settings
// torchtitan's MoE flavors use, plus the edge cases), random weights and input, what
// MoeLayer::forward gives for the output, the gradients of the input and of every weight, the
// tokens each expert counted, and the expert bias after one load-balancing update.
// tests/parity/test_moe_parity.py runs the PyTorch reference (moe_ref.py) on the same tensors.
// usage: moe_dump --out FILE
#include <torch/serialize.h>

#include <cstdio>
#include <string>
#include <vector>

#include "titan/models/common/moe.h"

using titan::models::common::MoeArgs;
using titan::models::common::MoeLayer;

namespace {

struct Case {
  std::string name;
  MoeArgs args;
  int64_t dim, hidden, tokens;
  bool one_expert = false;  // an expert bias that sends every token to expert 3 (top_k 1)
  bool fused = false;       // the fused kernels (compile.enable): the grouped SwiGLU experts
};

MoeArgs make(int64_t experts, int64_t shared, int64_t k, const char* score, bool norm, double scale, bool before) {
  MoeArgs a;
  a.num_experts = experts;
  a.num_shared_experts = shared;
  a.top_k = k;
  a.score_func = score;
  a.route_norm = norm;
  a.route_scale = scale;
  a.score_before_experts = before;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out") {
    std::fprintf(stderr, "usage: moe_dump --out FILE\n");
    return 2;
  }
  std::vector<Case> cases;
  // Qwen3-MoE's router: softmax, normalised top-k, the gate applied to the experts' outputs.
  cases.push_back({"qwen3", make(16, 0, 4, "softmax", true, 1.0, false), 32, 48, 40});
  // DeepSeek-V3's: sigmoid, normalised and scaled, shared experts, node-limited groups.
  {
    MoeArgs a = make(16, 2, 4, "sigmoid", true, 2.5, false);
    a.num_expert_groups = 4;
    a.num_limited_groups = 2;
    cases.push_back({"deepseek_v3", a, 32, 24, 40});
  }
  // torchtitan's MoEArgs defaults: sigmoid, one shared expert, the gate on the experts' inputs.
  cases.push_back({"defaults_gate_bias", make(8, 1, 1, "sigmoid", false, 1.0, true), 32, 32, 24});
  cases.back().args.gate_bias = true;
  // Every token to one expert; the others get none.
  cases.push_back({"one_expert", make(8, 0, 1, "sigmoid", false, 1.0, true), 32, 32, 24, true});
  // The loop over experts instead of grouped GEMMs, and sizes grouped GEMMs cannot take.
  cases.push_back({"loop", make(8, 1, 2, "softmax", true, 1.0, false), 32, 32, 24});
  cases.back().args.use_grouped_mm = false;
  cases.push_back({"odd_sizes", make(6, 1, 2, "softmax", false, 1.0, true), 30, 22, 17});
  // debug.moe_force_load_balance: round-robin.
  cases.push_back({"force_load_balance", make(8, 0, 2, "softmax", true, 1.0, false), 32, 32, 24});
  cases.back().args.force_load_balance = true;
  // The fused grouped SwiGLU experts (and fused shared experts), on DeepSeek-V3's router and
  // with every token on one expert.
  cases.push_back(cases[1]);
  cases.back().name = "deepseek_v3_fused";
  cases.back().fused = true;
  cases.push_back(cases[3]);
  cases.back().name = "one_expert_fused";
  cases.back().fused = true;
  // No load balancing: no expert bias.
  cases.push_back({"no_load_balance", make(8, 0, 2, "softmax", true, 1.0, false), 32, 32, 24});
  cases.back().args.load_balance_coeff = std::nullopt;

  c10::Dict<std::string, at::Tensor> dict;
  int64_t seed = 0;
  for (const Case& c : cases) {
    at::manual_seed(++seed);
    const MoeArgs& a = c.args;
    const int64_t E = a.num_experts, D = c.dim, H = c.hidden;
    MoeLayer m;
    m.args = a;
    m.fused = c.fused;
    auto param = [](at::Tensor t) { return t.requires_grad_(true); };
    m.gate = param(at::randn({E, D}) * 0.2);
    if (a.gate_bias) m.gate_bias = param(at::randn({E}) * 0.1);
    m.w1 = param(at::randn({E, H, D}) * 0.1);
    m.w2 = param(at::randn({E, D, H}) * 0.1);
    m.w3 = param(at::randn({E, H, D}) * 0.1);
    if (a.num_shared_experts > 0) {
      m.shared_w1 = param(at::randn({H * a.num_shared_experts, D}) * 0.1);
      m.shared_w2 = param(at::randn({D, H * a.num_shared_experts}) * 0.1);
      m.shared_w3 = param(at::randn({H * a.num_shared_experts, D}) * 0.1);
    }
    m.expert_bias = at::randn({E}) * 0.01;
    if (c.one_expert) m.expert_bias[3] = 100.0;
    m.tokens_per_expert = at::zeros({E});
    const at::Tensor x = param(at::randn({2, c.tokens / 2, D}));
    const at::Tensor go = at::randn({2, c.tokens / 2, D});
    const std::string p = c.name + "/";
    // The settings, for the reference: E, shared, k, softmax, route_norm, route_scale,
    // score_before, groups, limited groups, grouped_mm, coeff (0: none), force, gate_bias, H.
    dict.insert(p + "args", at::tensor({static_cast<double>(E), static_cast<double>(a.num_shared_experts),
                                        static_cast<double>(a.top_k), a.score_func == "softmax" ? 1.0 : 0.0,
                                        a.route_norm ? 1.0 : 0.0, a.route_scale, a.score_before_experts ? 1.0 : 0.0,
                                        static_cast<double>(a.num_expert_groups.value_or(0)),
                                        static_cast<double>(a.num_limited_groups.value_or(0)),
                                        a.use_grouped_mm ? 1.0 : 0.0, a.load_balance_coeff.value_or(0.0),
                                        a.force_load_balance ? 1.0 : 0.0, a.gate_bias ? 1.0 : 0.0,
                                        static_cast<double>(H)},
                                       at::kDouble));
    std::vector<std::pair<std::string, at::Tensor>> weights = {{"gate", m.gate}, {"w1", m.w1}, {"w2", m.w2}, {"w3", m.w3}};
    if (m.gate_bias.defined()) weights.push_back({"gate_bias", m.gate_bias});
    if (m.shared_w1.defined())
      weights.insert(weights.end(), {{"shared_w1", m.shared_w1}, {"shared_w2", m.shared_w2}, {"shared_w3", m.shared_w3}});
    dict.insert(p + "x", x.detach().clone());
    dict.insert(p + "go", go.clone());
    dict.insert(p + "expert_bias", m.expert_bias.clone());
    for (const auto& [name, w] : weights) dict.insert(p + name, w.detach().clone());
    const at::Tensor out = m.forward(x);
    out.backward(go);
    dict.insert(p + "out", out.detach().clone());
    dict.insert(p + "grad_x", x.grad().clone());
    for (const auto& [name, w] : weights) dict.insert(p + "grad_" + name, w.grad().clone());
    dict.insert(p + "tokens_per_expert", m.tokens_per_expert.clone());
    titan::models::common::update_expert_bias(m, m.tokens_per_expert.clone());
    dict.insert(p + "expert_bias_after", m.expert_bias.clone());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  FILE* f = std::fopen(argv[2], "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "moe_dump: cannot write %s\n", argv[2]);
    return 1;
  }
  return 0;
}
