#include "titan/models/common/decoder_parallelize.h"

#include <algorithm>
#include <map>

#include "titan/common/error.h"
#include "titan/common/test_hooks.h"
#include "titan/components/device/device.h"
#include "titan/distributed/activation_checkpoint.h"
#include "titan/distributed/expert_parallel.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/kernels/float8.h"
#include "titan/kernels/ops.h"

namespace titan::models::common {

using distributed::ParamLayout;
using distributed::Placement;

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// torchtitan's TP plan for one parameter: the tensor dimension split over tp, or Partial for
// the norms (replicated weights whose gradients, from sequence shards, are partial sums).
Placement tp_placement(const std::string& fqn) {
  // MoE: the routed experts (E, H, D) / (E, D, H) split on their hidden dimension, the shared
  // experts as a feed-forward, the router repeated on every rank (the same gradient on each).
  if (ends_with(fqn, "moe.experts.w1") || ends_with(fqn, "moe.experts.w3")) return Placement::shard(1);
  if (ends_with(fqn, "moe.experts.w2")) return Placement::shard(2);
  if (ends_with(fqn, "moe.router.gate.weight") || ends_with(fqn, "moe.router.gate.bias")) return Placement::replicate();
  // Multi-head latent attention: wq (or wq_b) and wkv_b split by heads; wq_a, q_norm, wkv_a and
  // kv_norm, before the heads, repeated on every rank with partial gradients (the default below).
  for (const char* colwise : {"wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight", "wq_b.weight",
                              "wkv_b.weight"})
    if (ends_with(fqn, colwise)) return Placement::shard(0);
  if (ends_with(fqn, "wo.weight") || ends_with(fqn, "w2.weight")) return Placement::shard(1);
  if (fqn == "tok_embeddings.weight" || fqn == "output.weight") return Placement::shard(0);  // vocabulary rows
  return Placement::partial();  // attention_norm, ffn_norm, norm
}

// A module's column-wise projections through one all-gather of its input: async TP's ring, or a
// float8 all-gather.
ProjectStyle gathered_projections(std::vector<const Linear*> linears, distributed::Group& tp, bool async,
                                  bool float8_gather) {
  auto float8 = std::make_shared<std::vector<const kernels::Float8Config*>>();
  for (const Linear* l : linears) float8->push_back(l->float8.get());
  return [linears = std::move(linears), float8, &tp, async, float8_gather](const at::Tensor& x) {
    std::vector<at::Tensor> weights;  // read at each call: data parallelism swaps them
    for (const Linear* l : linears) weights.push_back(l->weight);
    return distributed::tp::all_gather_linears(x, weights, *float8, tp, async, float8_gather);
  };
}

// Returns how many modules gather their input in float8.
int apply_tensor_parallel(Decoder& model, distributed::DeviceMesh& mesh, bool loss_parallel, bool async) {
  auto& tp = mesh.group("tp");
  const int64_t rows = model.decoder_args().vocab_size / tp.size(), first = tp.rank() * rows;
  model.tok_embeddings().style = distributed::tp::rowwise_embedding(tp, first);
  int float8_gathers = 0;
  for (auto& block : model.layers()) {
    auto& a = block.attention;
    auto& f = block.feed_forward;
    a.prepare_input = distributed::tp::gather_input(tp);
    f.prepare_input = distributed::tp::gather_input(tp);
    if (auto& m = block.moe) {
      m->prepare_input = distributed::tp::gather_input(tp);
      m->router_input = distributed::tp::gradient_once(tp);
      m->scores = distributed::tp::sum_gradient(tp);
      m->finish_output = distributed::tp::reduce_scatter_output(tp);
      // Expert parallelism borrowing the tp ranks: each routes its share of the gathered tokens.
      if (mesh.dims().ep_borrows_tp()) m->token_share = {tp.rank(), tp.size()};
    }
    for (auto [project, linears] : {std::pair<ProjectStyle*, std::vector<const Linear*>>{&a.project, {&a.wq, &a.wk, &a.wv}},
                                    {&f.project, {&f.w1, &f.w3}}}) {
      std::vector<const kernels::Float8Config*> float8;
      for (const Linear* l : linears) float8.push_back(l->float8.get());
      // As torchtitan's float8 TP plan: the input of float8 tensorwise projections is gathered in
      // float8 (a test hook keeps it in high precision, to compare).
      const bool f8 = distributed::tp::gathers_float8(float8) && !TestHooks::get().tp_gather_high_precision;
      float8_gathers += f8;
      if (async || f8) *project = gathered_projections(std::move(linears), tp, async, f8);
    }
    for (Linear* rowwise : {&block.attention.wo, &block.feed_forward.w2}) {
      if (async) {
        rowwise->style = [f8 = rowwise->float8, &tp](const at::Tensor& x, const at::Tensor& w) {
          return distributed::tp::linear_reduce_scatter(x, w, f8.get(), tp);
        };
        continue;
      }
      LinearStyle local;  // a float8 or MX layer's own product before the reduce-scatter
      if (auto f8 = rowwise->float8)
        local = [f8](const at::Tensor& x, const at::Tensor& w) { return Linear::local(x, w, f8.get()); };
      if (auto mx = rowwise->mx)
        local = [mode = *mx](const at::Tensor& x, const at::Tensor& w) {
          return kernels::mx_linear(kernels::autocast_matmul_input(x), w, mode);
        };
      rowwise->style = distributed::tp::rowwise_linear(tp, std::move(local));
    }
  }
  model.set_head_loss_style(distributed::tp::vocab_parallel_head_loss(tp, first, loss_parallel));
  return float8_gathers;
}

// Every linear layer of the blocks, with its FQN ("layers.3.attention.wq"): what the float8 and
// MX conversions consider.
std::vector<std::pair<std::string, Linear*>> block_linears(Decoder& model) {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& block : model.layers()) {
    const std::string prefix = "layers." + std::to_string(block.layer_id) + ".";
    auto& a = block.attention;
    auto& f = block.feed_forward;
    Mla* m = a.mla ? &*a.mla : nullptr;
    for (auto [name, linear] : {std::pair<const char*, Linear*>{"attention.wq", &a.wq}, {"attention.wk", &a.wk},
                                {"attention.wv", &a.wv}, {"attention.wq_a", m ? &m->wq_a : nullptr},
                                {"attention.wq_b", m ? &m->wq_b : nullptr}, {"attention.wkv_a", m ? &m->wkv_a : nullptr},
                                {"attention.wkv_b", m ? &m->wkv_b : nullptr}, {"attention.wo", &a.wo},
                                {"feed_forward.w1", &f.w1}, {"feed_forward.w2", &f.w2}, {"feed_forward.w3", &f.w3}})
      // a MoE block has no feed_forward, MLA no wk wv (nor wq with a query latent)
      if (linear && linear->weight.defined()) out.emplace_back(prefix + name, linear);
  }
  return out;
}

// The log lines of a conversion: what it converted, then each reason layers were kept in high
// precision (the first four named).
std::vector<std::string> conversion_lines(const std::string& headline, const std::string& tag,
                                          const std::map<std::string, std::vector<std::string>>& skipped) {
  std::vector<std::string> lines{headline};
  for (const auto& [why, layers] : skipped) {
    std::string list;
    for (size_t i = 0; i < layers.size() && i < 4; ++i) list += (i ? ", " : "") + layers[i];
    if (layers.size() > 4) list += " and " + std::to_string(layers.size() - 4) + " more";
    lines.push_back(tag + ": kept in high precision (" + why + "): " + list);
  }
  return lines;
}

// model.converters = ["float8"]: every linear layer of the blocks that torchtitan's filters take
// runs its GEMMs in float8 (kernels/float8.h); the log lists what was converted and what not.
// Under tensor parallelism the column-wise and row-wise layers reduce the amaxes of their split
// operands over tp. The converted weights' FQNs go to `converted`.
std::vector<std::string> apply_float8(Decoder& model, const ParallelizeOptions& o, at::Device device,
                                      distributed::DeviceMesh& mesh, std::vector<std::string>& converted_weights) {
  if (!o.float8) return {};
  const auto recipe = kernels::float8_recipe(o.float8_recipe);
  if (!recipe)
    throw Error("quantize.linear.float8.recipe_name = \"" + o.float8_recipe + "\" is not a float8 recipe",
                "use \"tensorwise\", \"rowwise\" or \"rowwise_with_gw_hp\" (unset: tensorwise)");
  std::string where;
  bool emulate = o.float8_emulate;
  if (!device.is_cuda()) {
    emulate = true;
    where = "emulated in float32: the CPU has no float8 GEMMs";
  } else {
    const auto [major, minor] = components::cuda::compute_capability(device.index());
    if (major * 10 + minor < 89 && !emulate)
      throw Error("float8 training needs a GPU of compute capability 8.9 or newer (H100, L4, ...); " +
                      components::cuda::device_name(device.index()) + " has " + std::to_string(major) + "." +
                      std::to_string(minor),
                  "remove \"float8\" from model.converters, or set quantize.linear.float8.emulate = true (the float8 "
                  "numbers, computed in float32)");
    where = emulate ? "emulated in float32 (quantize.linear.float8.emulate)" : "float8 GEMMs (at::_scaled_mm)";
  }
  auto config = std::make_shared<kernels::Float8Config>();
  config->recipe = *recipe;
  config->emulate = emulate;
  const int64_t tp = mesh.dims().tp;
  std::shared_ptr<kernels::Float8Config> split[2];  // column-wise (output features split), row-wise (input)
  if (tp > 1) {
    auto& group = mesh.group("tp");
    for (int d = 0; d < 2; ++d) {
      split[d] = std::make_shared<kernels::Float8Config>(*config);
      split[d]->split.weight_dim = d;
      split[d]->split.max_over_group = [&group](at::Tensor& t) {
        at::Tensor flat = t.view({-1});
        group.all_reduce(flat, /*max=*/true).wait();
      };
    }
  }
  int converted = 0;
  std::map<std::string, std::vector<std::string>> skipped;  // reason -> layers
  for (auto& [fqn, linear] : block_linears(model)) {
    std::string why = kernels::float8_skip_reason(fqn, linear->weight.size(0), linear->weight.size(1),
                                                  o.float8_filter_fqns, *recipe);
    // wo and w2 are row-wise (their input features split over tp), the others column-wise.
    const int d = ends_with(fqn, "wo") || ends_with(fqn, "w2") ? 1 : 0;
    if (why.empty() && tp > 1 && (linear->weight.size(d) / tp) % 16 != 0)
      why = "the tensor-parallel share of its " + std::string(d ? "input" : "output") + " features (" +
            std::to_string(linear->weight.size(d) / tp) + ") is not a multiple of 16";
    if (why.empty()) {
      linear->float8 = tp > 1 ? split[d] : config;
      converted_weights.push_back(fqn + ".weight");
      ++converted;
    } else {
      skipped[why].push_back(fqn);
    }
  }
  // The output head runs fused with the loss (compile "loss") or as one matmul with it: kept in
  // high precision, as every torchtitan preset keeps it (filter_fqns = ["output"]).
  const std::string head_why = kernels::float8_skip_reason("output", model.decoder_args().vocab_size,
                                                           model.decoder_args().dim, o.float8_filter_fqns, *recipe);
  skipped[head_why.empty() ? "titan.cpp keeps the output head, which runs with the loss, in high precision" : head_why]
      .push_back("output");
  return conversion_lines("Float8 training active with recipe " + std::string(kernels::float8_recipe_name(*recipe)) +
                              " (" + where + "): " + std::to_string(converted) + " linear layers converted" +
                              (tp > 1 ? "; the amaxes of operands split over tensor parallelism are reduced over tp" : ""),
                          "Float8", skipped);
}

// model.converters = ["quantize.linear.mx"]: the blocks' linear layers in mxfp8 (kernels/mx.h),
// emulated; the log lists what was converted and what not.
std::vector<std::string> apply_mx(Decoder& model, const ParallelizeOptions& o, at::Device device, int64_t tp) {
  if (!o.mx) return {};
  const auto mode = kernels::mx_recipe(o.mx_recipe);
  if (!mode)
    throw Error("quantize.linear.mx.recipe_name = \"" + o.mx_recipe + "\" is not an MX recipe",
                "use \"mxfp8_cublas\" (floor scales) or \"mxfp8_cublas_rceil\"");
  std::string where = "emulated: the CPU has no MX GEMMs";
  if (device.is_cuda()) {
    const auto [major, minor] = components::cuda::compute_capability(device.index());
    if (major < 10)
      throw Error("MX (mxfp8) training needs a GPU of compute capability 10.0 or newer (B200, ...); " +
                      components::cuda::device_name(device.index()) + " has " + std::to_string(major) + "." +
                      std::to_string(minor),
                  "remove \"quantize.linear.mx\" from model.converters, or use \"float8\"");
    where = "emulated: titan.cpp's block-scaled GEMMs are not built yet";
  }
  int converted = 0;
  std::map<std::string, std::vector<std::string>> skipped;
  for (auto& [fqn, linear] : block_linears(model)) {
    std::string why = kernels::mx_skip_reason(fqn, linear->weight.size(0), linear->weight.size(1), o.mx_filter_fqns);
    // Under TP every block of 32 along a contraction lies within one rank's share: no scale
    // spans the split when the share is a multiple of 32.
    const int d = ends_with(fqn, "wo") || ends_with(fqn, "w2") ? 1 : 0;
    if (why.empty() && tp > 1 && (linear->weight.size(d) / tp) % 32 != 0)
      why = "the tensor-parallel share of its " + std::string(d ? "input" : "output") + " features (" +
            std::to_string(linear->weight.size(d) / tp) + ") is not a multiple of 32";
    if (why.empty()) {
      linear->mx = *mode;
      ++converted;
    } else {
      skipped[why].push_back(fqn);
    }
  }
  const std::string head_why = kernels::mx_skip_reason("output", model.decoder_args().vocab_size,
                                                       model.decoder_args().dim, o.mx_filter_fqns);
  skipped[head_why.empty() ? "titan.cpp keeps the output head, which runs with the loss, in high precision" : head_why]
      .push_back("output");
  return conversion_lines("MX training active with recipe " + o.mx_recipe +
                              " (mxfp8: e4m3 in blocks of 32 with e8m0 scales, " + where + "): " +
                              std::to_string(converted) + " linear layers converted",
                          "MX", skipped);
}

std::string apply_compile(Decoder& model, const ParallelizeOptions& o) {
  if (!o.compile) return "";
  const auto& parts = o.compile_components;
  auto has = [&](const char* c) { return std::find(parts.begin(), parts.end(), c) != parts.end(); };
  model.set_fused_kernels(has("model"), has("loss"));
  std::string what;
  if (has("model")) what = "RMSNorm with the residual add, RoPE on q and k, SwiGLU in every block";
  if (has("loss")) what += std::string(what.empty() ? "" : "; ") + "the output head with the loss, chunked over tokens";
  return "Compiling the model with fused kernels: " + (what.empty() ? "nothing (compile.components names neither)" : what);
}

std::string apply_activation_checkpointing(Decoder& model, const ParallelizeOptions& o) {
  const std::string& mode = o.ac_mode;
  if (mode == "none") return "";
  const std::string& option = o.ac_option;
  const size_t n = model.layers().size();
  if (mode == "selective" && option == "op") {
    for (size_t i = 0; i < n; ++i) model.set_block_runner(i, distributed::op_checkpoint_block);
    return "Applied selective activation checkpointing to the model (op policy: attention and every second matmul "
           "kept, the rest recomputed, in all " + std::to_string(n) + " blocks)";
  }
  const int64_t every = mode == "selective" ? std::stoll(option) : 1;  // full: every block
  int count = 0;
  for (size_t i = 0; i < n; ++i) {
    // torchtitan counts blocks from 1 and checkpoints those divisible by N (N = 0: all).
    if (every == 0 || (static_cast<int64_t>(i) + 1) % every == 0) {
      model.set_block_runner(i, distributed::checkpoint_block);
      ++count;
    }
  }
  return "Applied " + mode + " activation checkpointing to the model (" + std::to_string(count) + " of " +
         std::to_string(n) + " blocks)";
}

// Pipeline parallelism: the model numbers its parts globally, data parallelism holds only this
// rank's; this passes each call on with the part's index among those held.
class PartMap final : public ForwardHooks {
 public:
  explicit PartMap(const std::vector<size_t>& held) {
    for (size_t i = 0; i < held.size(); ++i) local_[held[i]] = i;
  }
  ForwardHooks* inner = nullptr;
  void before(size_t part, const std::string& name) override { inner->before(local_.at(part), name); }
  at::Tensor after(size_t part, const std::string& name, const at::Tensor& out) override {
    return inner->after(local_.at(part), name, out);
  }

 private:
  std::map<size_t, size_t> local_;
};

}  // namespace

std::vector<ParamLayout> param_layouts(Decoder& model, const distributed::ParallelDims& dims) {
  std::vector<ParamLayout> layouts;
  for (const auto& part : model.parts())
    for (const auto& p : part.params) {
      ParamLayout l{p.name, p.tensor->sizes().vec(), {}};
      const bool routed = p.name.find(".moe.experts.w") != std::string::npos;
      // Experts whole on every tp rank when expert parallelism borrows the tp ranks (the ep split covers them).
      if (dims.tp > 1 && !(routed && dims.ep_borrows_tp())) l.placements.emplace_back("tp", tp_placement(p.name));
      if (dims.ep > 1 && routed) {
        // Expert parallelism: ep ranks split the experts, the efsdp ranks holding the same ones shard them again.
        l.placements.emplace_back("ep", Placement::shard(0));
        l.placements.emplace_back("efsdp", Placement::shard(0));
      } else if (dims.fsdp_enabled()) {
        l.placements.emplace_back("dp_shard_cp", Placement::shard(0));
      }
      layouts.push_back(std::move(l));
    }
  return layouts;
}

void validate_plan(const DecoderArgs& args, const PlanCheck& check, const distributed::ParallelDims& dims) {
  if (dims.ep > 1) {
    const std::string deg = "parallelism.expert_parallel_degree = " + std::to_string(dims.ep);
    if (!args.moe)
      throw Error(deg + " with flavor " + check.flavor + ", which has no mixture-of-experts layers",
                  "use a MoE flavor (qwen3 debugmodel_moe, 30B-A3B, 235B-A22B; deepseek_v3) or expert_parallel_degree = 1");
    if (args.moe->num_experts % dims.ep != 0)
      throw Error(deg + " does not divide the " + std::to_string(args.moe->num_experts) + " experts of flavor " +
                      check.flavor,
                  "choose an expert_parallel_degree that divides " + std::to_string(args.moe->num_experts));
  }
  if (dims.cp > 1) {
    // Each rank holds cp_chunks / cp chunks of every sequence; sequence parallelism splits its part by tp.
    const int64_t chunks = check.cp_headtail ? 2 * dims.cp : dims.cp, unit = chunks * dims.tp;
    const std::string why = "parallelism.context_parallel_degree = " + std::to_string(dims.cp) + " cuts each sequence in " +
                            std::to_string(chunks) + " chunks" +
                            (check.cp_headtail ? " (load balancer headtail: 2 per rank)" : "") +
                            (dims.tp > 1 ? ", each rank's part split again by tensor_parallel_degree " +
                                               std::to_string(dims.tp)
                                         : "");
    auto need = [&](int64_t n, const std::string& key) {
      if (n % unit != 0)
        throw Error(key + " = " + std::to_string(n) + " is not a multiple of " + std::to_string(unit) + ": " + why,
                    "use a " + key + " that is a multiple of " + std::to_string(unit));
    };
    need(check.seq_len, "training.seq_len");
    if (check.validation_seq_len) need(*check.validation_seq_len, "validation.seq_len");
  }
  if (dims.tp <= 1) return;
  const int64_t tp = dims.tp;
  const std::string deg = "parallelism.tensor_parallel_degree = " + std::to_string(tp);
  auto need = [&](int64_t n, const std::string& what, const std::string& fix) {
    if (n % tp != 0)
      throw Error(deg + " does not divide " + what + " (" + std::to_string(n) + ")", fix);
  };
  const std::string pick = "choose a tensor_parallel_degree that divides it";
  if (args.moe) {
    if (!dims.ep_borrows_tp()) need(args.moe_inter_dim, "moe_inter_dim, the experts' hidden dimension", pick);
    if (args.moe->num_shared_experts > 0)
      need(args.moe->num_shared_experts * args.moe_inter_dim, "the shared experts' hidden dimension", pick);
  }
  need(args.n_heads, "the model's attention heads, n_heads of flavor " + check.flavor, pick);
  need(args.n_kv_heads, "the model's key/value heads, n_kv_heads of flavor " + check.flavor, pick);
  need(check.seq_len, "training.seq_len, which sequence parallelism splits",
       "use a training.seq_len that is a multiple of " + std::to_string(tp));
  if (check.validation_seq_len)
    need(*check.validation_seq_len, "validation.seq_len, which sequence parallelism splits",
         "use a validation.seq_len that is a multiple of " + std::to_string(tp));
  need(args.vocab_size, "the vocabulary (model.vocab_size), which the embedding and the output head split",
       "use a model.vocab_size that is a multiple of " + std::to_string(tp));
  need(args.ffn_hidden_dim, "the feed-forward hidden size", pick);
}

ParallelPlan parallelize(Decoder& model, const ParallelizeOptions& options, distributed::DeviceMesh& mesh,
                         at::Device device, at::ScalarType compute_dtype, uint64_t seed,
                         const std::vector<size_t>& parts_held) {
  ParallelPlan plan;
  const auto& dims = mesh.dims();
  auto note = [&](const std::string& line) {
    if (!line.empty()) plan.applied.push_back(line);
  };
  std::vector<std::string> float8_weights;
  for (const auto& line : apply_float8(model, options, device, mesh, float8_weights)) note(line);
  for (const auto& line : apply_mx(model, options, device, dims.tp)) note(line);
  const bool loss_parallel = options.loss_parallel;
  if (dims.tp > 1) {
    const int float8_gathers = apply_tensor_parallel(model, mesh, loss_parallel, options.async_tp);
    note("Applied Tensor Parallelism to the model (degree " + std::to_string(dims.tp) +
         ": column-wise wq wk wv w1 w3, row-wise wo w2 and embedding, sequence-parallel norms, output " +
         (loss_parallel ? "column-wise with loss parallel)" : "column-wise, logits gathered for the loss)"));
    if (options.async_tp)
      note("Async TP is enabled: the sequence all-gather before wq wk wv and w1 w3, and the reduce-scatter after wo "
           "and w2, pass around the tp group in " + std::to_string(dims.tp) +
           " blocks, each block's matmuls running while the next block is in flight");
    if (float8_gathers)
      note("Float8: " + std::to_string(float8_gathers) + " of " + std::to_string(2 * model.layers().size()) +
           " modules (attention, feed_forward) all-gather their input in float8 (e4m3, the whole sequence's scale) "
           "for their float8 tensorwise wq wk wv / w1 w3");
  } else if (options.async_tp) {
    note("Async TP: parallelism.enable_async_tensor_parallel has nothing to overlap without tensor parallelism");
  }
  std::vector<std::string> local_experts;  // expert parallelism: the experts each rank keeps
  if (dims.ep > 1) {
    auto ep = std::make_shared<distributed::ExpertParallel>(mesh.group("ep"));
    int layers = 0;
    for (auto& b : model.layers()) {
      if (!b.moe) continue;
      b.moe->dispatch = ep.get();
      const std::string prefix = "layers." + std::to_string(b.layer_id) + ".moe.experts.w";
      for (const char* w : {"1", "2", "3"}) local_experts.push_back(prefix + w);
      ++layers;
    }
    plan.expert_parallel = ep;
    const int64_t E = model.decoder_args().moe->num_experts;
    const int efsdp = dims.efsdp();
    const bool borrows = dims.ep_borrows_tp();
    note("Applied Expert Parallel to the model (degree " + std::to_string(dims.ep) +
         (borrows ? " of dp_shard x cp x tp = " : " of dp_shard x cp = ") + std::to_string(dims.ep_span()) +
         ": ep rank r holds experts [r*" + std::to_string(E / dims.ep) + ", (r+1)*" + std::to_string(E / dims.ep) +
         ") of " + std::to_string(E) + " in each of " + std::to_string(layers) + " MoE layers; " +
         (borrows ? "each tp rank routes 1/" + std::to_string(dims.tp) + " of the tokens; " : "") +
         "tokens dispatched and combined by all-to-all; " +
         (efsdp > 1 ? "FSDP shards each rank's experts over the " + std::to_string(efsdp) +
                          " ranks that hold the same ones (efsdp), gathering them there"
                    : "the experts never gathered") +
         ")");
  }
  if (dims.cp > 1) {
    plan.context_parallel = std::make_shared<distributed::ContextParallel>(
        mesh.group("cp"), options.cp_headtail, distributed::cp_rotate_from_string(options.cp_rotate));
    model.set_sequence_split(plan.context_parallel);
    note("Applied Context Parallel to the model (degree " + std::to_string(dims.cp) + ", rotate method " +
         options.cp_rotate + ": " +
         (options.cp_rotate == "allgather" ? "keys and values all-gathered per layer"
                                           : "keys and values passed around the cp ring, one rank's part a step") +
         "; load balancer " +
         (options.cp_headtail ? "headtail: rank r holds chunks r and " + std::to_string(2 * dims.cp - 1) + "-r of " +
                                    std::to_string(2 * dims.cp)
                              : "none: rank r holds chunk r of " + std::to_string(dims.cp)) +
         ")");
  }
  note(apply_compile(model, options));
  note(apply_activation_checkpointing(model, options));

  const std::string mp = components::dtype_name(compute_dtype);
  if (dims.world_size == 1) {  // one rank: the model holds its own weights; AMP for mixed precision
    if (model.parameters().front().scalar_type() == at::kFloat && compute_dtype != at::kFloat) {
      plan.autocast = compute_dtype;
      note("Mixed precision training is handled by AMP (" + mp + ")");
    }
    return plan;
  }
  distributed::DataParallelOptions o;
  const std::string& policy = options.fsdp_reshard_after_forward;
  // As torchtitan: under pipeline parallelism "default" keeps the gathered parameters from forward
  // to backward (each microbatch would otherwise gather every stage twice).
  const bool reshard = policy == "always" || (policy == "default" && dims.pp == 1);
  std::vector<ModelPart> parts;
  std::vector<ParamLayout> layouts;
  const bool tied = model.decoder_args().tied_embeddings;
  {
    auto all_parts = model.parts();
    auto all_layouts = param_layouts(model, dims);
    auto holds = [&](size_t i) {
      return parts_held.empty() || std::find(parts_held.begin(), parts_held.end(), i) != parts_held.end();
    };
    const size_t head = all_parts.size() - 1;
    size_t next_layout = 0;
    for (size_t i = 0; i < all_parts.size(); ++i) {
      const bool held = holds(i);
      for (size_t k = 0; k < all_parts[i].params.size(); ++k, ++next_layout)
        if (held) layouts.push_back(all_layouts[next_layout]);
      if (held) parts.push_back(all_parts[i]);
    }
    // Pipeline parallelism with a tied table: the first stage's embedding and the last stage's
    // head read it. A rank with the head but not the embedding holds a copy in the head's part
    // (drawn with the same values); the pipeline sums the two copies' gradients.
    if (tied && dims.pp > 1) {
      plan.tied_across_stages.push_back("tok_embeddings.weight");
      if (holds(head) && !holds(0)) {
        parts.back().params.push_back(all_parts[0].params.front());
        layouts.push_back(all_layouts[0]);
        o.copies.push_back("tok_embeddings.weight");
        note("Pipeline: the last stage holds a copy of the tied embedding table; its gradients are summed with "
             "the first stage's after every step");
      }
    }
  }
  for (const auto& part : parts)  // the head is needed again at once by backward; a tied table by the head
    o.reshard_after_forward.push_back(part.name == "output" ? policy == "always"
                                      : part.name == "tok_embeddings" && tied
                                          ? false
                                          : reshard);
  o.sync_every_microbatch = options.fsdp_sync_every_microbatch;
  o.local = local_experts;
  o.pipelined = dims.pp > 1;
  if (dims.fsdp_enabled()) o.param_dtype = compute_dtype;
  if (options.float8_fsdp_all_gather && dims.fsdp_enabled()) {
    o.float8_gather = float8_weights;
    o.float8_precompute = options.float8_precompute;
    note("Float8: FSDP gathers the " + std::to_string(float8_weights.size()) +
         " converted weights in float8 (e4m3, one scale per weight, " +
         (options.float8_precompute ? "precomputed for all of them in one all-reduce after each optimizer step)"
                                    : "an all-reduce of their amaxes per block when the weights have changed)"));
  } else if (options.float8_fsdp_all_gather) {
    note("Float8: enable_fsdp_float8_all_gather has nothing to gather without FSDP (data_parallel_shard_degree 1)");
  }
  const DecoderArgs args = model.decoder_args();
  std::function<void(ForwardHooks*)> install = [&model](ForwardHooks* hooks) { model.set_forward_hooks(hooks); };
  if (!parts_held.empty()) {
    auto map = std::make_unique<PartMap>(parts_held);
    PartMap* m = map.get();
    plan.part_map = std::move(map);
    install = [&model, m](ForwardHooks* hooks) {
      m->inner = hooks;
      model.set_forward_hooks(hooks ? m : nullptr);
    };
  }
  plan.data_parallel = std::make_unique<distributed::DataParallel>(
      parts, layouts,
      [args, seed](const std::string& fqn, at::IntArrayRef shape, at::IntArrayRef offsets, at::Tensor& out) {
        init_value_into(args, fqn, shape, seed, offsets, out);
      },
      install, mesh, device, o);
  model.init_buffers(at::TensorOptions().device(device));
  if (dims.fsdp_enabled()) {
    note(std::string(dims.dp_replicate_enabled() ? "Applied HSDP" : "Applied FSDP") + " to the model (parameters in " +
         mp + ", gradients reduced in float32, reshard_after_forward " + policy +
         (policy == "default" ? (reshard ? ": resharded" : ": kept, as under pipeline parallelism") : "") + ")");
  } else if (dims.dp_replicate_enabled()) {
    note("Applied DDP to the model");
  }
  if (!dims.fsdp_enabled() && compute_dtype != at::kFloat) {
    if (dims.tp > 1 || dims.pp > 1) {  // as torchtitan: AMP only without TP/PP
      note("Mixed precision training with TP or PP is only supported when FSDP/HSDP is enabled; training in float32");
    } else {
      plan.autocast = compute_dtype;
      note("Mixed precision training is handled by AMP (" + mp + ")");
    }
  }
  return plan;
}

}  // namespace titan::models::common
