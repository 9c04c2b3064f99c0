// Llama 3 model: parameter counts and FLOPs of every flavor (without allocating), each op
// forward and backward against an independent float64 implementation, and a finite-difference
// gradient check of a whole tiny model.
#include <gtest/gtest.h>

#include "titan/common/counter_rng.h"

#include <cmath>
#include <map>
#include <numbers>

#include "titan/common/error.h"
#include "titan/common/log.h"
#include "titan/components/loss.h"
#include "titan/distributed/activation_checkpoint.h"
#include "titan/models/llama3/args.h"
#include "titan/models/llama3/model.h"
#include "titan/models/registry.h"

using namespace titan::models::llama3;

namespace {

ModelArgs tiny_args(int64_t n_kv_heads = 2) {
  ModelArgs a;
  a.dim = 32;
  a.n_layers = 2;
  a.n_heads = 4;
  a.n_kv_heads = n_kv_heads;
  a.vocab_size = 50;
  a.multiple_of = 16;
  a.max_seq_len = 12;
  return a;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(1.0, b.abs().max().item<double>());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

at::Tensor d(const at::Tensor& t) { return t.detach().to(at::kDouble).requires_grad_(true); }

}  // namespace

TEST(ModelArgs, ParameterCountsOfEveryFlavorWithoutAllocating) {
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"debugmodel", 6163712},     {"1B", 1235814400},       {"3B", 3212749824},
      {"8B", 8030261248},          {"70B", 70553706496},     {"405B", 405853388800}};
  for (const auto& [name, count] : expected) {
    ModelArgs a = flavor(name);
    EXPECT_EQ(num_params(a), count) << name;
    Transformer meta(a, at::TensorOptions().device(at::kMeta));
    EXPECT_EQ(meta.num_params(), count) << name << " (built on meta)";
  }
}

TEST(ModelArgs, FfnHiddenSizes) {
  EXPECT_EQ(flavor("debugmodel").ffn_hidden_dim(), 768);
  EXPECT_EQ(flavor("1B").ffn_hidden_dim(), 8192);
  EXPECT_EQ(flavor("8B").ffn_hidden_dim(), 14336);
  EXPECT_EQ(flavor("70B").ffn_hidden_dim(), 28672);
  EXPECT_EQ(flavor("405B").ffn_hidden_dim(), 53248);
}

TEST(ModelArgs, FlopsPerTokenMatchReference) {
  EXPECT_EQ(flops_per_token(flavor("debugmodel"), 2048), 71585280);
  EXPECT_EQ(flops_per_token(flavor("8B"), 8192), 57914449920);
}

TEST(ModelArgs, UnknownFlavorNamesTheChoices) {
  try {
    flavor("7B");
    FAIL() << "no error";
  } catch (const titan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("7B"), std::string::npos);
    EXPECT_NE(e.fix().find("debugmodel"), std::string::npos);
  }
}

TEST(Registry, Llama3IsRegisteredAndBuildsThroughItsSpec) {
  const auto names = titan::models::model_names();
  ASSERT_NE(std::find(names.begin(), names.end(), "llama3"), names.end());
  const auto& spec = titan::models::model_spec("llama3");
  for (const auto& name : spec.flavor_names()) {
    const auto config = spec.flavor(name);
    EXPECT_EQ(config->family(), "llama3");
    EXPECT_EQ(config->num_params(), num_params(flavor(name))) << name;
    const auto model = spec.build(*config, at::TensorOptions().device(at::kMeta));
    EXPECT_EQ(model->num_params(), config->num_params()) << name << " (built through the spec)";
    EXPECT_EQ(model->num_parts(), static_cast<size_t>(config->sizes().n_layers) + 2);
  }
  // What a checkpoint records comes back as the same arguments.
  const auto config = spec.flavor("8B");
  const auto again = titan::models::config_from_description({{"name", "llama3"}, {"args", config->to_json()}}, "here");
  EXPECT_EQ(again->to_json(), config->to_json());
  EXPECT_EQ(again->describe(), config->describe());
}

TEST(Registry, Qwen3FlavorsCountAsTorchtitanAndBuildOnMeta) {
  // torchtitan's qwen3 counter leaves a tied table out of the logged count (docs/models.md).
  const std::vector<std::pair<std::string, int64_t>> reported = {
      {"debugmodel", 31463680}, {"0.6B", 440467456},  {"1.7B", 1409410048},   {"4B", 3633511936},
      {"8B", 8190735360},       {"14B", 14768307200}, {"32B", 32762123264}};
  const auto& spec = titan::models::model_spec("qwen3");
  ASSERT_EQ(spec.flavor_names().size(), reported.size() + 3);  // and the three MoE flavors
  for (const auto& [name, count] : reported) {
    const auto config = spec.flavor(name);
    EXPECT_EQ(config->reported_num_params(), count) << name;
    const auto model = spec.build(*config, at::TensorOptions().device(at::kMeta));
    EXPECT_EQ(model->num_params(), config->num_params()) << name << " (built on meta)";
    const auto s = config->sizes();
    EXPECT_EQ(config->num_params() - config->reported_num_params(), s.tied_embeddings ? s.vocab_size * s.dim : 0);
    EXPECT_EQ(s.head_dim, 128);
  }
  EXPECT_EQ(spec.flavor("0.6B")->flops_per_token(4096), 5461377024);
  // Every block has its q/k norms over head_dim, initialised to ones like the other norms.
  const auto small = spec.config_from_json({{"dim", 32}, {"n_layers", 2}, {"n_heads", 4}, {"n_kv_heads", 2},
                                            {"head_dim", 12}, {"hidden_dim", 48}, {"vocab_size", 50},
                                            {"norm_eps", 1e-6}, {"rope_theta", 1e6}, {"qk_norm", true},
                                            {"max_seq_len", 16}, {"tied_embeddings", true}});
  const auto m = spec.build(*small, at::TensorOptions());
  m->init_weights(3);
  int norms = 0;
  for (const auto& p : m->named_parameters())
    if (p.name.find("q_norm") != std::string::npos || p.name.find("k_norm") != std::string::npos) {
      ++norms;
      EXPECT_EQ(p.tensor->sizes(), at::IntArrayRef({12}));
      EXPECT_TRUE(at::equal(*p.tensor, at::ones({12})));
    }
  EXPECT_EQ(norms, 4);
  const at::Tensor logits = m->forward(at::arange(10, at::kLong).view({1, 10}));
  EXPECT_EQ(logits.sizes(), at::IntArrayRef({1, 10, 50}));
  // The tied table takes the output head's initialisation (std dim^-1/2, cut at 3 sigma).
  for (const auto& p : m->named_parameters())
    if (p.name == "tok_embeddings.weight")
      EXPECT_LE(p.tensor->abs().max().item<double>(), 3.0 / std::sqrt(32.0) + 1e-6);
}

// torchtitan's get_moe_model_nparams_and_flops for a flavor at seq_len 4096: the total, the split
// of its start-up line (dense: embedding, attention, norms, head and dense blocks; sparse: routers
// and experts; active: dense, routers, shared experts and top_k / num_experts of the routed ones)
// and FLOPs per token.
struct MoeCounts {
  const char* name;
  int64_t total, dense, sparse, active, flops;
};

// The counts on the arguments and on the model built on the meta device (one expert bias per
// block after the first `dense_layers`), and the arguments unchanged through a checkpoint's JSON.
static void expect_moe_counts(const std::string& family, const std::vector<MoeCounts>& expect, int64_t dense_layers) {
  const auto& spec = titan::models::model_spec(family);
  for (const auto& e : expect) {
    const auto config = spec.flavor(e.name);
    config->set_max_seq_len(4096);
    EXPECT_EQ(config->num_params(), e.total) << e.name;
    EXPECT_EQ(config->reported_num_params(), e.total) << e.name;  // untied
    EXPECT_EQ(config->flops_per_token(4096), e.flops) << e.name;
    EXPECT_EQ(config->parameter_count_line(),
              "Total parameter count: dense " + titan::log::with_commas(e.dense) + ", sparse " +
                  titan::log::with_commas(e.sparse) + ", active " + titan::log::with_commas(e.active))
        << e.name;
    const auto model = spec.build(*config, at::TensorOptions().device(at::kMeta));
    EXPECT_EQ(model->num_params(), e.total) << e.name << " (built on meta)";
    EXPECT_EQ(model->named_buffers().size(), static_cast<size_t>(config->sizes().n_layers - dense_layers)) << e.name;
    const auto again = titan::models::config_from_description({{"name", family}, {"args", config->to_json()}}, "here");
    EXPECT_EQ(again->to_json(), config->to_json()) << e.name;
    EXPECT_EQ(again->describe(), config->describe()) << e.name;
  }
}

TEST(Registry, Qwen3MoeFlavorsCountAsTorchtitan) {
  expect_moe_counts("qwen3",
                    {{"debugmodel_moe", 315758848, 13637888, 302120960, 51517696, 1111266816},
                     {"30B-A3B", 30532122624, 1528510464, 29003612160, 3353032704, 27914883072},
                     {"235B-A22B", 235093634560, 7947955712, 227145678848, 22190763520, 167260001280}},
                    0);
  const auto& spec = titan::models::model_spec("qwen3");
  EXPECT_NE(spec.flavor("debugmodel_moe")->describe().find("moe_args=MoEArgs(num_experts=64, num_shared_experts=0, "
                                                           "score_func='softmax', route_norm=True"),
            std::string::npos)
      << spec.flavor("debugmodel_moe")->describe();
}

TEST(Registry, DeepSeekV3FlavorsCountAsTorchtitan) {
  // Measured on torchtitan v0.2.2's DeepSeekV3Model (attention FLOPs with qk_nope + qk_rope + v
  // head dims); the 671B has 3 dense blocks, the others 1 (checked below).
  expect_moe_counts("deepseek_v3",
                    {{"debugmodel", 33014016, 23173376, 9840640, 28098816, 920421888},
                     {"16B", 15706484224, 858385920, 14848098304, 2661150208, 18105996288},
                     {"236B", 235741434880, 10191590400, 225549844480, 21375800320, 185507051520}},
                    1);
  expect_moe_counts("deepseek_v3", {{"671B", 671026404352, 14456871936, 656569532416, 37552282624, 281158232064}}, 3);
  const auto& spec = titan::models::model_spec("deepseek_v3");
  // torchtitan's FQNs and order: a dense first block, then MoE blocks with a load-balancing bias;
  // the 671B's queries through their latent.
  const auto names = [&](const char* flavor, int64_t layer) {
    const auto model = spec.build(*spec.flavor(flavor), at::TensorOptions().device(at::kMeta));
    std::vector<std::string> out;
    const std::string prefix = "layers." + std::to_string(layer) + ".";
    for (const auto& p : model->named_parameters())
      if (p.name.rfind(prefix, 0) == 0) out.push_back(p.name.substr(prefix.size()));
    return out;
  };
  using Names = std::vector<std::string>;
  EXPECT_EQ(names("debugmodel", 0),
            (Names{"attention.wq.weight", "attention.wkv_a.weight", "attention.kv_norm.weight", "attention.wkv_b.weight",
                   "attention.wo.weight", "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
                   "attention_norm.weight", "ffn_norm.weight"}));
  EXPECT_EQ(names("debugmodel", 1),
            (Names{"attention.wq.weight", "attention.wkv_a.weight", "attention.kv_norm.weight", "attention.wkv_b.weight",
                   "attention.wo.weight", "moe.experts.w1", "moe.experts.w2", "moe.experts.w3", "moe.router.gate.weight",
                   "moe.shared_experts.w1.weight", "moe.shared_experts.w2.weight", "moe.shared_experts.w3.weight",
                   "attention_norm.weight", "ffn_norm.weight"}));
  EXPECT_EQ(names("671B", 3).front(), "attention.wq_a.weight");
  EXPECT_EQ(names("671B", 3).at(1), "attention.q_norm.weight");
  EXPECT_EQ(names("671B", 2).at(7), "feed_forward.w1.weight");  // n_dense_layers 3
  const auto debug = spec.build(*spec.flavor("debugmodel"), at::TensorOptions().device(at::kMeta));
  EXPECT_EQ(debug->named_buffers().size(), 5u);  // layers 1-5: moe.expert_bias
  EXPECT_EQ(debug->named_buffers().front().name, "layers.1.moe.expert_bias");
  // torchtitan's repr of the arguments, which the start-up log prints.
  EXPECT_NE(spec.flavor("671B")->describe().find("n_dense_layers=3, n_heads=128, norm_eps=1e-05, moe_args=MoEArgs("
                                                 "num_experts=256, num_shared_experts=1, score_func='sigmoid', "
                                                 "route_norm=True, route_scale=2.5"),
            std::string::npos)
      << spec.flavor("671B")->describe();
}

TEST(Registry, UnknownNamesAreRefusedWithTheChoices) {
  try {
    titan::models::model_spec("gpt5");
    FAIL() << "no error";
  } catch (const titan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.name = \"gpt5\""), std::string::npos) << e.what();
    EXPECT_NE(e.fix().find("llama3"), std::string::npos) << e.fix();
  }
  EXPECT_THROW(titan::models::config_from_description({{"name", "gpt5"}, {"args", nlohmann::json::object()}}, "f"),
               titan::Error);
  EXPECT_THROW(titan::models::config_from_description({{"name", "llama3"}}, "f"), titan::Error);
  EXPECT_THROW(titan::models::config_from_description({{"name", "llama3"}, {"args", {{"dim", 4}}}}, "f"), titan::Error);
  EXPECT_EQ(titan::models::model_spec_for_hf({{"model_type", "llama"}}, "c").name, "llama3");
  EXPECT_EQ(titan::models::model_spec_for_hf(nlohmann::json::object(), "c").name, "llama3");
  try {
    titan::models::model_spec_for_hf({{"model_type", "gpt2"}}, "config.json");
    FAIL() << "no error";
  } catch (const titan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: model_type \"gpt2\""), std::string::npos) << e.what();
  }
}

TEST(Model, ParameterNamesAreTorchtitanFqns) {
  Transformer m(tiny_args(), at::TensorOptions().device(at::kMeta));
  auto named = m.named_parameters();
  ASSERT_EQ(named.size(), 1 + 2 * 9 + 2u);
  EXPECT_EQ(named.front().name, "tok_embeddings.weight");
  EXPECT_EQ(named[1].name, "layers.0.attention.wq.weight");
  EXPECT_EQ(named[5].name, "layers.0.feed_forward.w1.weight");
  EXPECT_EQ(named[8].name, "layers.0.attention_norm.weight");
  EXPECT_EQ(named[9].name, "layers.0.ffn_norm.weight");
  EXPECT_EQ(named.back().name, "output.weight");
  ModelArgs tied = tiny_args();
  tied.tied_embeddings = true;
  Transformer t(tied, at::TensorOptions().device(at::kMeta));
  EXPECT_EQ(t.named_parameters().back().name, "norm.weight");
}

TEST(Model, InitialisationFollowsTorchtitan) {
  ModelArgs a = tiny_args();
  a.dim = 256;
  a.n_heads = 4;
  a.vocab_size = 2000;
  Transformer m(a, at::TensorOptions());
  m.init_weights(7);
  for (auto& p : m.named_parameters()) {
    const double std = p.tensor->std().item<double>();
    if (p.name == "tok_embeddings.weight") {
      EXPECT_NEAR(std, 1.0, 0.02);
    } else if (p.name == "output.weight") {
      EXPECT_NEAR(std, 1 / 16.0 * 0.986, 0.003);  // truncated at 3 std shrinks std by ~1.4%
      EXPECT_LE(p.tensor->abs().max().item<double>(), 3 / 16.0 + 1e-6);
    } else if (p.name.find("norm") != std::string::npos) {
      EXPECT_EQ(p.tensor->min().item<double>(), 1.0);
    } else if (p.name == "layers.1.attention.wo.weight") {
      EXPECT_NEAR(std, 0.02 / 2.0, 0.001);
    } else if (p.name == "layers.0.feed_forward.w3.weight") {
      EXPECT_NEAR(std, 0.02 / std::sqrt(2.0), 0.001);
    } else if (p.name == "layers.1.attention.wq.weight") {
      EXPECT_NEAR(std, 0.02, 0.001);
    }
  }
  // Deterministic per (seed, name), whatever else is initialised.
  Transformer m2(a, at::TensorOptions());
  m2.init_weights(7);
  EXPECT_TRUE(at::equal(*m.named_parameters()[3].tensor, *m2.named_parameters()[3].tensor));
  Transformer m3(a, at::TensorOptions());
  m3.init_weights(8);
  EXPECT_FALSE(at::equal(*m.named_parameters()[3].tensor, *m3.named_parameters()[3].tensor));
}

TEST(Model, MoeBlocksNameInitialiseCountAndBalanceAsTorchtitan) {
  // A small Qwen3 MoE: 2 layers, 8 experts, top 2.
  const auto& spec = titan::models::model_spec("qwen3");
  auto config = spec.flavor("debugmodel_moe");
  nlohmann::json j = config->to_json();
  j["dim"] = 32;
  j["n_layers"] = 2;
  j["n_heads"] = 4;
  j["n_kv_heads"] = 2;
  j["head_dim"] = 8;
  j["vocab_size"] = 64;
  j["max_seq_len"] = 16;
  j["moe_inter_dim"] = 16;
  j["moe_args"]["num_experts"] = 8;
  j["moe_args"]["top_k"] = 2;
  const auto small = spec.config_from_json(j);
  const auto m = spec.build(*small, at::TensorOptions());
  m->init_weights(5);
  std::map<std::string, at::Tensor> p;
  for (const auto& n : m->named_parameters()) p[n.name] = *n.tensor;
  ASSERT_TRUE(p.count("layers.1.moe.experts.w1") && p.count("layers.1.moe.router.gate.weight"));
  EXPECT_EQ(p["layers.0.moe.experts.w1"].sizes(), at::IntArrayRef({8, 16, 32}));
  EXPECT_EQ(p["layers.0.moe.experts.w2"].sizes(), at::IntArrayRef({8, 32, 16}));
  EXPECT_EQ(p["layers.0.moe.router.gate.weight"].sizes(), at::IntArrayRef({8, 32}));
  EXPECT_EQ(p.count("layers.0.feed_forward.w1.weight"), 0u);
  // torchtitan's init: the experts' w1 std 0.02, w2/w3 and the router at the block's depth std
  // (layer 1: 0.02 / sqrt(4) = 0.01).
  EXPECT_NEAR(p["layers.1.moe.experts.w1"].std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(p["layers.1.moe.experts.w3"].std().item<double>(), 0.01, 0.001);
  EXPECT_NEAR(p["layers.1.moe.router.gate.weight"].std().item<double>(), 0.01, 0.002);
  const auto buffers = m->named_buffers();
  ASSERT_EQ(buffers.size(), 2u);
  EXPECT_EQ(buffers[1].name, "layers.1.moe.expert_bias");
  EXPECT_TRUE(at::equal(*buffers[1].tensor, at::zeros({8})));

  // Every token is counted once per chosen expert, under full activation checkpointing too (the
  // recompute does not count again).
  auto loads = m->expert_loads();
  ASSERT_EQ(loads.size(), 2u);
  const at::Tensor tokens = at::randint(64, {2, 12}, at::kLong);
  for (bool ac : {false, true}) {
    for (auto& l : loads) l.tokens.zero_();
    if (ac)
      for (size_t i = 0; i < 2; ++i) m->set_block_runner(i, titan::distributed::checkpoint_block);
    m->forward_loss(tokens, tokens).sum().backward();
    for (const auto& l : loads) EXPECT_EQ(l.tokens.sum().item<double>(), 2 * 12 * 2) << l.layer << " ac " << ac;
  }
  // The bias update: toward the experts below the mean, the sum kept at zero; only the choice
  // moves, so the same tokens may pick other experts.
  const at::Tensor counts = loads[0].tokens.clone();
  loads[0].update_bias(counts);
  const at::Tensor bias = *buffers[0].tensor;
  EXPECT_NEAR(bias.sum().item<double>(), 0.0, 1e-7);
  for (int64_t e = 0; e < 8; ++e) {
    const double c = counts[e].item<double>(), mean = counts.mean().item<double>(), b = bias[e].item<double>();
    if (c < mean) EXPECT_GT(b, 0) << e;
    if (c > mean) EXPECT_LT(b, 0) << e;
  }
}

TEST(Model, InitialisationOfAnySliceIsThatSliceOfTheWhole) {
  // What a rank of any layout draws for its box equals the box of the whole draw, bit for bit.
  ModelArgs a = tiny_args();
  a.vocab_size = 50;
  Transformer m(a, at::TensorOptions());
  for (auto& p : m.named_parameters()) {
    const auto shape = p.tensor->sizes().vec();
    at::Tensor whole = titan::models::llama3::init_value(a, p.name, shape, 9);
    for (int64_t parts : {2, 3, 7}) {
      const int64_t rows = shape[0], chunk = (rows + parts - 1) / parts;
      for (int64_t first = 0; first < rows; first += chunk) {
        std::vector<int64_t> offsets(shape.size(), 0), sizes = shape;
        offsets[0] = first;
        sizes[0] = std::min(chunk, rows - first);
        if (shape.size() == 2) {  // and a block of columns, as a 2-D layout cuts it
          offsets[1] = shape[1] / 3;
          sizes[1] = shape[1] - shape[1] / 3;
        }
        at::Tensor box = titan::models::llama3::init_value(a, p.name, shape, 9, offsets, sizes);
        at::Tensor want = whole.narrow(0, offsets[0], sizes[0]);
        if (shape.size() == 2) want = want.narrow(1, offsets[1], sizes[1]);
        EXPECT_TRUE(at::equal(box, want)) << p.name << " rows " << first << "+" << sizes[0];
      }
    }
  }
}

TEST(CounterRng, ErfinvInvertsErfAndDrawsHaveTheirMoments) {
  for (double y = -4.0; y <= 4.0; y += 0.01) EXPECT_NEAR(titan::erfinv(std::erf(y)), y, 1e-9) << y;
  // Beyond, erf(y) is within a few ulps of +-1 and y is ill-conditioned; erf(erfinv(x)) = x holds.
  for (double x : {0.999999999, -0.9999999999999, 1 - 1e-15, -1 + 1e-15})
    EXPECT_NEAR(std::erf(titan::erfinv(x)), x, 4e-16) << x;
  EXPECT_EQ(titan::erfinv(0.0), 0.0);
  const titan::CounterRng rng(1, "x");
  double sum = 0, sq = 0, umin = 1, umax = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double v = rng.normal(i), u = rng.uniform(i);
    sum += v, sq += v * v, umin = std::min(umin, u), umax = std::max(umax, u);
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.01);
  EXPECT_GE(umin, 0.0);
  EXPECT_LT(umax, 1.0);
  EXPECT_NE(rng.normal(5), titan::CounterRng(2, "x").normal(5));
  EXPECT_NE(rng.normal(5), titan::CounterRng(1, "y").normal(5));
}

TEST(Ops, RMSNormForwardBackwardAgainstFloat64) {
  at::manual_seed(0);
  at::Tensor x = at::randn({3, 5, 16}), w = at::randn({16});
  at::Tensor xv = x.clone().requires_grad_(true), wv = w.clone().requires_grad_(true);
  RMSNorm norm{wv, 1e-5};
  at::Tensor y = norm.forward(xv);
  at::Tensor g = at::randn_like(y);
  y.backward(g);
  at::Tensor xd = d(x), wd = d(w);
  at::Tensor ref = xd / at::sqrt((xd * xd).mean({-1}, true) + 1e-5) * wd;
  ref.backward(g.to(at::kDouble));
  EXPECT_LT(max_rel(y, ref), 1e-6);
  EXPECT_LT(max_rel(xv.grad(), xd.grad()), 1e-5);
  EXPECT_LT(max_rel(wv.grad(), wd.grad()), 1e-5);
}

TEST(Ops, RopeTableAppliesLlama31Scaling) {
  ModelArgs a = tiny_args();
  a.dim = 512, a.n_heads = 4, a.max_seq_len = 9;  // head_dim 128, as in Llama 3
  RopeTable rope = rope_table(a, at::TensorOptions());
  const int64_t hd = 128;
  for (int64_t i = 0; i < hd / 2; ++i) {
    double f = 1.0 / std::pow(500000.0, 2.0 * i / hd);
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen > 8192) f /= 8;
    else if (wavelen >= 2048) {
      const double s = (8192 / wavelen - 1) / 3;
      f = (1 - s) * f / 8 + s * f;
    }
    const double angle = 8 * f;  // position 8
    EXPECT_NEAR(rope.cos[8][i].item<double>(), std::cos(angle), 2e-6) << i;
    EXPECT_NEAR(rope.sin[8][i].item<double>(), std::sin(angle), 2e-6) << i;
  }
}

TEST(Ops, RopeRotatesInterleavedPairsAgainstFloat64) {
  at::manual_seed(1);
  ModelArgs a = tiny_args();
  RopeTable rope = rope_table(a, at::TensorOptions());
  at::Tensor x = at::randn({2, 6, 3, 8});
  at::Tensor xv = x.clone().requires_grad_(true);
  at::Tensor y = apply_rope(xv, rope);
  at::Tensor g = at::randn_like(y);
  y.backward(g);
  // Reference: complex multiplication per pair, positions 0..5, in double.
  at::Tensor xd = d(x);
  at::Tensor c = rope.cos.narrow(0, 0, 6).to(at::kDouble), s = rope.sin.narrow(0, 0, 6).to(at::kDouble);
  std::vector<at::Tensor> pairs;
  for (int64_t i = 0; i < 4; ++i) {
    at::Tensor re = xd.select(3, 2 * i), im = xd.select(3, 2 * i + 1);  // (B,T,H)
    at::Tensor ci = c.select(1, i).view({1, 6, 1}), si = s.select(1, i).view({1, 6, 1});
    pairs.push_back(re * ci - im * si);
    pairs.push_back(re * si + im * ci);
  }
  at::Tensor ref = at::stack(pairs, 3);
  ref.backward(g.to(at::kDouble));
  EXPECT_LT(max_rel(y, ref), 1e-6);
  EXPECT_LT(max_rel(xv.grad(), xd.grad()), 1e-6);
}

TEST(Ops, GqaAttentionAgainstFloat64) {
  at::manual_seed(2);
  ModelArgs a = tiny_args(/*n_kv_heads=*/2);
  Transformer m(a, at::TensorOptions());
  m.init_weights(3);
  const Attention& attn = m.layers()[0].attention;
  RopeTable rope = rope_table(a, at::TensorOptions());
  at::Tensor x = at::randn({2, 7, 32});
  at::Tensor xv = x.clone().requires_grad_(true);
  at::Tensor y = attn.forward(xv, rope);
  at::Tensor g = at::randn_like(y);
  y.backward(g);
  at::Tensor wq_grad = attn.wq.weight.grad().clone();

  // Reference: explicit softmax attention in double, kv head h/2 serves query head h.
  at::Tensor xd = d(x), wq = d(attn.wq.weight), wk = d(attn.wk.weight), wv = d(attn.wv.weight),
             wo = d(attn.wo.weight);
  RopeTable rd{rope.cos.to(at::kDouble), rope.sin.to(at::kDouble)};
  at::Tensor q = apply_rope(at::matmul(xd, wq.t()).view({2, 7, 4, 8}), rd);
  at::Tensor k = apply_rope(at::matmul(xd, wk.t()).view({2, 7, 2, 8}), rd);
  at::Tensor v = at::matmul(xd, wv.t()).view({2, 7, 2, 8});
  at::Tensor mask = at::ones({7, 7}, at::kBool).triu(1);
  std::vector<at::Tensor> heads;
  for (int64_t h = 0; h < 4; ++h) {
    at::Tensor qh = q.select(2, h), kh = k.select(2, h / 2), vh = v.select(2, h / 2);  // (B,T,hd)
    at::Tensor scores = at::matmul(qh, kh.transpose(1, 2)) / std::sqrt(8.0);
    scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
    heads.push_back(at::matmul(at::softmax(scores, -1), vh));
  }
  at::Tensor ref = at::matmul(at::cat(heads, -1), wo.t());
  ref.backward(g.to(at::kDouble));
  EXPECT_LT(max_rel(y, ref), 1e-5);
  EXPECT_LT(max_rel(xv.grad(), xd.grad()), 1e-5);
  EXPECT_LT(max_rel(wq_grad, wq.grad()), 1e-5);
}

TEST(Ops, SwiGLUAgainstFloat64) {
  at::manual_seed(4);
  Transformer m(tiny_args(), at::TensorOptions());
  m.init_weights(5);
  const FeedForward& ff = m.layers()[1].feed_forward;
  at::Tensor x = at::randn({2, 3, 32});
  at::Tensor xv = x.clone().requires_grad_(true);
  at::Tensor y = ff.forward(xv);
  at::Tensor g = at::randn_like(y);
  y.backward(g);
  at::Tensor xd = d(x), w1 = d(ff.w1.weight), w2 = d(ff.w2.weight), w3 = d(ff.w3.weight);
  at::Tensor a = at::matmul(xd, w1.t());
  at::Tensor ref = at::matmul(a / (1 + at::exp(-a)) * at::matmul(xd, w3.t()), w2.t());
  ref.backward(g.to(at::kDouble));
  EXPECT_LT(max_rel(y, ref), 1e-5);
  EXPECT_LT(max_rel(xv.grad(), xd.grad()), 1e-5);
  EXPECT_LT(max_rel(ff.w2.weight.grad(), w2.grad()), 1e-5);
}

TEST(Ops, CrossEntropyIgnoresAndNormalisesByGlobalCount) {
  at::manual_seed(6);
  at::Tensor logits = at::randn({2, 4, 10});
  at::Tensor labels = at::randint(0, 10, {2, 4});
  labels[0][1] = -100;
  labels[1][3] = -100;
  EXPECT_EQ(titan::components::count_valid_tokens(labels), 6);
  at::Tensor lv = logits.clone().requires_grad_(true);
  at::Tensor loss = titan::components::cross_entropy_loss(lv, labels, 12);  // as if 12 valid globally
  loss.backward();
  at::Tensor ld = d(logits);
  at::Tensor sum = at::zeros({}, at::kDouble);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 4; ++t) {
      const int64_t y = labels[b][t].item<int64_t>();
      if (y == -100) continue;
      sum = sum + (at::logsumexp(ld[b][t], 0) - ld[b][t][y]);
    }
  at::Tensor ref = sum / 12.0;
  ref.backward();
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6);
  EXPECT_LT(max_rel(lv.grad(), ld.grad()), 1e-6);
  EXPECT_EQ(lv.grad()[0][1].abs().sum().item<double>(), 0.0);
}

TEST(Model, FiniteDifferenceGradientOfWholeTinyModel) {
  ModelArgs a = tiny_args();
  a.n_layers = 1;
  Transformer m(a, at::TensorOptions().dtype(at::kDouble));
  m.init_weights(11);
  at::Tensor tokens = at::randint(0, 50, {2, 5}, at::TensorOptions().dtype(at::kLong));
  at::Tensor labels = at::randint(0, 50, {2, 5}, at::TensorOptions().dtype(at::kLong));
  auto loss_of = [&] { return titan::components::cross_entropy_loss(m.forward(tokens), labels, 10); };
  loss_of().backward();
  auto named = m.named_parameters();
  at::NoGradGuard no_grad;
  int checked = 0;
  for (auto& p : named) {
    double* flat = p.tensor->data_ptr<double>();  // contiguous parameter storage
    const int64_t numel = p.tensor->numel();
    for (int64_t idx : {int64_t{0}, numel / 2, numel - 1}) {
      const double orig = flat[idx];
      const double h = 1e-6;
      flat[idx] = orig + h;
      const double up = loss_of().item<double>();
      flat[idx] = orig - h;
      const double down = loss_of().item<double>();
      flat[idx] = orig;
      const double numeric = (up - down) / (2 * h);
      const double analytic = p.tensor->grad().view({-1})[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << p.name << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * 12);
}

TEST(Gpu, ModelOnCudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  ModelArgs a = tiny_args();
  Transformer cpu(a, at::TensorOptions());
  Transformer gpu(a, at::TensorOptions().device(at::kCUDA));
  cpu.init_weights(21);
  gpu.init_weights(21);  // drawn on the CPU and copied: identical weights
  at::Tensor tokens = at::randint(0, 50, {2, 12}, at::kLong);
  at::Tensor labels = at::randint(0, 50, {2, 12}, at::kLong);
  at::Tensor lc = titan::components::cross_entropy_loss(cpu.forward(tokens), labels, 24);
  at::Tensor lg = titan::components::cross_entropy_loss(gpu.forward(tokens.cuda()), labels.cuda(), 24);
  lc.backward();
  lg.backward();
  EXPECT_NEAR(lg.item<double>(), lc.item<double>(), 1e-4);
  auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
  for (size_t i = 0; i < pc.size(); ++i)
    EXPECT_LT(max_rel(pg[i].tensor->grad().cpu(), pc[i].tensor->grad()), 1e-4) << pc[i].name;
}
