// Mixture of experts as torchtitan v0.2.2's models/moe defines it (MoEArgs): a token-choice
// top-k router (softmax or sigmoid scores in float32, optional node-limited routing), routed
// experts stored as [E, ...] tensors and run as grouped GEMMs with no token dropped, optional
// shared experts, and auxiliary-loss-free load balancing: an expert bias that steers which
// experts are chosen, never the gate values, updated from the tokens each expert received.
// ATen ops throughout, so autograd differentiates it. A decoder block holds one in place of its
// feed-forward (titan/models/common/decoder.h).
#pragma once

#include <ATen/ATen.h>

#include "titan/common/module.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace titan::models::common {

struct MoeArgs {
  int64_t num_experts = 8;
  int64_t num_shared_experts = 1;
  std::string score_func = "sigmoid";  // "softmax" or "sigmoid", computed in float32
  bool route_norm = false;             // divide the k gate values by their sum
  double route_scale = 1.0;
  bool gate_bias = false;              // the router's linear has a bias
  bool score_before_experts = true;    // scale the expert's input by its gate value, else its output
  int64_t top_k = 1;
  // Node-limited routing: experts in num_expert_groups groups, each token choosing among the
  // num_limited_groups groups whose two best scores sum highest.
  std::optional<int64_t> num_expert_groups, num_limited_groups;
  bool use_grouped_mm = true;                       // at::_grouped_mm, else a loop over experts
  std::optional<double> load_balance_coeff = 1e-3;  // unset: no expert bias
  bool force_load_balance = false;                  // debug.moe_force_load_balance: round-robin routing
};

// As torchtitan's start-up log prints MoEArgs: "MoEArgs(num_experts=8, ...)".
std::string describe(const MoeArgs& m);
// What checkpoints record of it, and back (nlohmann::json::exception when malformed; the expert
// groups may be absent, as checkpoints written before they were recorded have them).
nlohmann::json to_json(const MoeArgs& m);
MoeArgs moe_args_from_json(const nlohmann::json& j);
// Python's repr of a bool and of a float ("True", "1.0", "0.001"), for such lines.
std::string py_bool(bool b);
std::string py_float(double v);

// What the router chose for N tokens: the gate values (N, k) float32 (normalised and scaled),
// the experts (N, k) int64, and how many tokens each expert got (E) float32.
struct Routing {
  at::Tensor scores, experts, counts;
};

// x (N, D) -> the routing. `gate` (E, D) and `gate_bias` (E, or undefined) are the router's
// linear; `expert_bias` (E float32, or undefined) is added to the scores for the choice only.
Routing route(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& gate_bias, const at::Tensor& expert_bias,
              const MoeArgs& args);

// The routed experts on tokens sorted by expert: x (M, D), `counts` (E) tokens per expert in
// order (summing to M); w1, w3 (E, H, D), w2 (E, D, H) -> (M, D): w2_e (silu(w1_e x) * w3_e x).
// fused (compile.enable): titan.cpp's grouped SwiGLU kernel where it runs (kernels::grouped_swiglu,
// the CPU); else at::_grouped_mm where the shapes allow, or one expert at a time.
at::Tensor run_experts(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3,
                       const at::Tensor& counts, bool grouped_mm, bool fused = false);

struct MoeLayer {
  MoeArgs args;
  at::Tensor gate, gate_bias;                  // router.gate.weight (E, D), router.gate.bias (E)
  at::Tensor w1, w2, w3;                       // experts.w1 (E, H, D), experts.w2 (E, D, H), experts.w3
  at::Tensor shared_w1, shared_w2, shared_w3;  // shared_experts.w1 (S*H, D), .w2 (D, S*H), .w3: S = num_shared_experts
  at::Tensor expert_bias;                      // (E) float32, a persistent buffer (load balancing)
  at::Tensor tokens_per_expert;                // (E) float32, counted by every forward until the update
  // Expert parallelism: w1 w2 w3 hold this rank's experts, and the rows travel to theirs.
  ExpertDispatch* dispatch = nullptr;
  bool fused = false;  // the experts through the fused grouped SwiGLU kernel (run_experts)
  // Tensor parallelism (set together): the experts and shared experts hold their share of the
  // hidden dimension (w1 w3 rows, w2 columns) and compute partial sums; the router is repeated on
  // every tp rank. The sequence-parallel input is gathered (prepare_input), the router's input
  // gradient counted once (router_input), the scores' gradient summed (scores), and the output
  // reduce-scattered back to sequence shards (finish_output).
  InputStyle prepare_input, router_input, scores, finish_output;
  // Expert parallelism borrowing the tp ranks (torchtitan's ETP = 1): the experts are whole, and
  // tp rank `first` of `of` routes the gathered tokens [first * N / of, (first + 1) * N / of) only;
  // the others' rows of its output are zero before the reduce-scatter sums them.
  struct TokenShare {
    int64_t first = 0, of = 1;
  } token_share;

  // x (B, T, D) -> (B, T, D); adds the routing's counts to tokens_per_expert, except while an
  // activation checkpoint recomputes the block (those tokens were counted in its forward).
  at::Tensor forward(const at::Tensor& x) const;
};

// The parameters of one layer, as torchtitan counts them: the router's, the shared experts' and
// the routed experts'.
struct MoeParams {
  int64_t router = 0, shared = 0, experts = 0;
  int64_t total() const { return router + shared + experts; }
};
MoeParams moe_params(const MoeArgs& args, int64_t dim, int64_t hidden_dim);

// The load-balancing step before an optimizer step: `tokens` (E) the tokens each expert received
// since the last one (summed over the data-parallel ranks by the caller); the bias moves by
// coeff toward the experts below the mean and away from those above, centred so that it sums
// to what it did; tokens_per_expert is zeroed.
void update_expert_bias(MoeLayer& layer, const at::Tensor& tokens);
// The same step on a bias alone: bias += delta - mean(delta), delta = coeff * sign(mean - tokens).
void update_expert_bias(at::Tensor& bias, const at::Tensor& tokens, double coeff);

}  // namespace titan::models::common
