#include "titan/models/common/moe.h"

#include "titan/common/log.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "titan/common/module.h"
#include "titan/kernels/fused_ops.h"

#include <limits>
#include <vector>

namespace titan::models::common {

std::string py_bool(bool b) { return b ? "True" : "False"; }

std::string py_float(double v) {
  std::string s = log::format("%g", v);
  return s.find_first_of(".en") == std::string::npos ? s + ".0" : s;
}

std::string describe(const MoeArgs& m) {
  auto opt = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("None"); };
  return "MoEArgs(num_experts=" + std::to_string(m.num_experts) +
         ", num_shared_experts=" + std::to_string(m.num_shared_experts) + ", score_func='" + m.score_func +
         "', route_norm=" + py_bool(m.route_norm) + ", route_scale=" + py_float(m.route_scale) +
         ", score_before_experts=" + py_bool(m.score_before_experts) + ", top_k=" + std::to_string(m.top_k) +
         ", use_grouped_mm=" + py_bool(m.use_grouped_mm) +
         ", load_balance_coeff=" + (m.load_balance_coeff ? py_float(*m.load_balance_coeff) : "None") +
         ", num_expert_groups=" + opt(m.num_expert_groups) + ", num_limited_groups=" + opt(m.num_limited_groups) +
         ", _debug_force_load_balance=" + py_bool(m.force_load_balance) + ")";
}

nlohmann::json to_json(const MoeArgs& m) {
  auto opt = [](const std::optional<int64_t>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
  nlohmann::json j = {{"num_experts", m.num_experts},
                      {"num_shared_experts", m.num_shared_experts},
                      {"score_func", m.score_func},
                      {"route_norm", m.route_norm},
                      {"route_scale", m.route_scale},
                      {"gate_bias", m.gate_bias},
                      {"score_before_experts", m.score_before_experts},
                      {"top_k", m.top_k},
                      {"load_balance_coeff", m.load_balance_coeff ? nlohmann::json(*m.load_balance_coeff) : nlohmann::json()}};
  if (m.num_expert_groups) {
    j["num_expert_groups"] = opt(m.num_expert_groups);
    j["num_limited_groups"] = opt(m.num_limited_groups);
  }
  return j;
}

MoeArgs moe_args_from_json(const nlohmann::json& j) {
  MoeArgs m;
  m.num_experts = j.at("num_experts").get<int64_t>();
  m.num_shared_experts = j.at("num_shared_experts").get<int64_t>();
  m.score_func = j.at("score_func").get<std::string>();
  m.route_norm = j.at("route_norm").get<bool>();
  m.route_scale = j.at("route_scale").get<double>();
  m.gate_bias = j.at("gate_bias").get<bool>();
  m.score_before_experts = j.at("score_before_experts").get<bool>();
  m.top_k = j.at("top_k").get<int64_t>();
  if (j.at("load_balance_coeff").is_null()) m.load_balance_coeff.reset();
  else m.load_balance_coeff = j.at("load_balance_coeff").get<double>();
  if (j.contains("num_expert_groups") && !j["num_expert_groups"].is_null()) {
    m.num_expert_groups = j["num_expert_groups"].get<int64_t>();
    m.num_limited_groups = j.at("num_limited_groups").get<int64_t>();
  }
  return m;
}


namespace {

// at::_grouped_mm wants every stride in multiples of 16 bytes (CPU), and on CUDA bf16.
bool grouped_mm_fits(const at::Tensor& x, const at::Tensor& w1) {
  const int64_t per16 = 16 / static_cast<int64_t>(x.element_size());
  const bool aligned = x.size(1) % per16 == 0 && w1.size(1) % per16 == 0;
  return aligned && (x.is_cpu() ? (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16)
                                : x.scalar_type() == at::kBFloat16);
}

// Rows of x in the order `index`: a permutation of x's rows (copies 1), or each row `copies`
// times (the token of every (token, expert) pair). Backward gathers where index_select's would
// scatter-add: the gradient's rows in the order `back` (the inverse permutation of the pairs),
// summed over each row's copies.
struct GatherRowsFunction : public torch::autograd::Function<GatherRowsFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& index,
                            const at::Tensor& back, int64_t copies) {
    ctx->saved_data["back"] = back;
    ctx->saved_data["copies"] = copies;
    return x.index_select(0, index);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t copies = ctx->saved_data["copies"].toInt();
    at::Tensor g = grads[0].index_select(0, ctx->saved_data["back"].toTensor());
    if (copies > 1) {
      std::vector<int64_t> shape{g.size(0) / copies, copies};
      for (int64_t i = 1; i < g.dim(); ++i) shape.push_back(g.size(i));
      g = g.view(shape).sum(1);
    }
    return {g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// w2 (silu(w1 x) * w3 x); fused: the SwiGLU through titan.cpp's kernel (compile.enable).
at::Tensor swiglu_ffn(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3,
                      bool fused = false) {
  const at::Tensor a = at::linear(x, w1), b = at::linear(x, w3);
  return at::linear(fused ? kernels::swiglu(a, b) : kernels::swiglu_reference(a, b), w2);
}

}  // namespace

Routing route(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& gate_bias, const at::Tensor& expert_bias,
              const MoeArgs& a) {
  const int64_t E = gate.size(0), k = a.top_k, N = x.size(0);
  const at::Tensor logits = at::linear(x, gate, gate_bias.defined() ? std::optional<at::Tensor>(gate_bias) : std::nullopt);
  const at::Tensor scores = a.score_func == "sigmoid" ? at::sigmoid(logits.to(at::kFloat)) : at::softmax(logits.to(at::kFloat), 1);
  at::Tensor experts;
  {
    at::NoGradGuard no_grad;  // the choice is not differentiated; the gate values are
    at::Tensor choice = expert_bias.defined() ? scores + expert_bias : scores;
    if (a.num_expert_groups) {
      const int64_t G = *a.num_expert_groups;
      const at::Tensor grouped = choice.view({N, G, E / G});
      const at::Tensor group_scores = std::get<0>(grouped.topk(2, -1)).sum(-1);  // (N, G): each group's best two
      const at::Tensor kept = std::get<1>(group_scores.topk(*a.num_limited_groups, -1, true, /*sorted=*/false));
      const at::Tensor dropped = at::ones_like(group_scores, at::kBool).scatter_(1, kept, false);
      choice = grouped.masked_fill(dropped.unsqueeze(-1), -std::numeric_limits<double>::infinity()).view({N, E});
    }
    experts = std::get<1>(choice.topk(k, -1, /*largest=*/true, /*sorted=*/false));
    if (a.force_load_balance)  // round-robin: every expert gets the same number of tokens
      experts = at::arange(N * k, x.options().dtype(at::kLong)).view({N, k}).remainder(E);
  }
  at::Tensor top = scores.gather(1, experts);
  if (a.route_norm) top = top / (top.sum(-1, /*keepdim=*/true) + 1e-20);
  top = top * a.route_scale;
  const at::Tensor counts = at::bincount(experts.view(-1), {}, E).to(at::kFloat);
  return {top, experts, counts};
}

at::Tensor run_experts(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3,
                       const at::Tensor& counts, bool grouped_mm, bool fused) {
  if (x.size(0) == 0) return swiglu_ffn(x, w1[0], w2[0], w3[0]);  // no rows (expert parallelism): (0, D)
  if (fused && kernels::grouped_swiglu_fusable(x, w1, w2, w3)) {
    const at::Tensor host = counts.to(at::kCPU, at::kLong).contiguous();
    return kernels::grouped_swiglu(x, w1, w2, w3, {host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()});
  }
  if (grouped_mm && grouped_mm_fits(x, w1)) {
    const at::Tensor offsets = at::cumsum(counts, 0).to(at::kInt);
    const at::Tensor h = at::silu(at::_grouped_mm(x, w1.transpose(-2, -1), offsets)) *
                         at::_grouped_mm(x, w3.transpose(-2, -1), offsets);
    return at::_grouped_mm(h, w2.transpose(-2, -1), offsets);
  }
  // One expert at a time (the counts come to the host). unbind, not w[e]: its backward stacks
  // the experts' gradients once, where each w[e] would add a whole-tensor gradient per expert.
  const at::Tensor host = counts.to(at::kCPU, at::kLong);
  const int64_t* n = host.data_ptr<int64_t>();
  const auto w1s = w1.unbind(0), w2s = w2.unbind(0), w3s = w3.unbind(0);
  std::vector<at::Tensor> outs;
  int64_t first = 0;
  for (int64_t e = 0; e < counts.size(0); ++e) {
    outs.push_back(swiglu_ffn(x.narrow(0, first, n[e]), w1s[e], w2s[e], w3s[e]));
    first += n[e];
  }
  return at::cat(outs, 0);
}

MoeParams moe_params(const MoeArgs& a, int64_t dim, int64_t hidden) {
  return {a.num_experts * dim + (a.gate_bias ? a.num_experts : 0), 3 * a.num_shared_experts * hidden * dim,
          3 * a.num_experts * hidden * dim};
}

at::Tensor MoeLayer::forward(const at::Tensor& x_local) const {
  const at::Tensor x_in = prepare_input ? prepare_input(x_local) : x_local;
  const int64_t D = x_in.size(-1), k = args.top_k;
  const at::Tensor x = x_in.reshape({-1, D});
  const int64_t N = x.size(0);
  Routing r = route(router_input ? router_input(x) : x, gate, gate_bias,
                    args.load_balance_coeff ? expert_bias : at::Tensor(), args);
  if (scores) r.scores = scores(r.scores);
  if (!recomputing()) {
    at::NoGradGuard no_grad;
    tokens_per_expert.add_(r.counts);
  }
  // Expert parallelism borrowing the tp ranks: this rank's share of the tokens, n of N from `first`.
  const int64_t n = N / token_share.of, first = token_share.first * n;
  TORCH_CHECK(n * token_share.of == N, "MoE: ", N, " tokens do not split over ", token_share.of, " tp ranks");
  const bool split = token_share.of > 1;
  const at::Tensor xs = split ? x.narrow(0, first, n) : x;
  const at::Tensor scores_s = split ? r.scores.narrow(0, first, n) : r.scores;
  const at::Tensor experts_s = split ? r.experts.narrow(0, first, n) : r.experts;
  const at::Tensor counts_s =
      split ? at::bincount(experts_s.reshape(-1), {}, r.counts.size(0)).to(at::kFloat) : r.counts;
  // The n*k (token, expert) pairs sorted by expert, ties in token order; `inverse` takes them back.
  const at::Tensor order = at::argsort(experts_s.reshape(-1), /*stable=*/true);
  const at::Tensor inverse = at::empty_like(order).scatter_(0, order, at::arange(n * k, order.options()));
  at::Tensor routed = GatherRowsFunction::apply(xs, at::div(order, k, "floor"), inverse, k);
  if (args.score_before_experts)
    routed = (routed.to(at::kFloat) * GatherRowsFunction::apply(scores_s.reshape(-1), order, inverse, 1).unsqueeze(1))
                 .to(x.scalar_type());
  const bool grouped = args.use_grouped_mm;
  const at::Tensor out_sorted =
      dispatch ? dispatch->run(routed, counts_s,
                               [&](const at::Tensor& rows, const at::Tensor& counts) {
                                 return run_experts(rows, w1, w2, w3, counts, grouped, fused);
                               })
               : run_experts(routed, w1, w2, w3, counts_s, grouped, fused);
  const at::Tensor pairs = GatherRowsFunction::apply(out_sorted, inverse, order, 1).view({n, k, D});
  at::Tensor experts_out =
      args.score_before_experts
          ? pairs.sum(1)
          : at::bmm(scores_s.reshape({n, 1, k}), pairs.to(at::kFloat)).to(x.scalar_type()).squeeze(1);
  if (split) experts_out = at::constant_pad_nd(experts_out, {0, 0, first, N - first - n});
  at::Tensor out = experts_out;
  if (shared_w1.defined())
    out = swiglu_ffn(x, shared_w1, shared_w2, shared_w3, fused) + experts_out;
  return finish_output ? finish_output(out.view(x_in.sizes())) : out.view(x_in.sizes());
}

void update_expert_bias(at::Tensor& bias, const at::Tensor& tokens, double coeff) {
  at::NoGradGuard no_grad;
  const at::Tensor delta = coeff * at::sign(tokens.mean() - tokens);
  bias.add_(delta - delta.mean());
}

void update_expert_bias(MoeLayer& layer, const at::Tensor& tokens) {
  if (layer.args.load_balance_coeff) update_expert_bias(layer.expert_bias, tokens, *layer.args.load_balance_coeff);
  at::NoGradGuard no_grad;
  layer.tokens_per_expert.zero_();
}

}  // namespace titan::models::common
