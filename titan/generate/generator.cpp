#include "titan/generate/generator.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <filesystem>
#include <limits>

#include "titan/common/error.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/checkpoint/hf_checkpoint.h"
#include "titan/models/registry.h"
#include "titan/train/hf_convert.h"

namespace titan::generate {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void copy_weights(models::Model& model, const std::function<at::Tensor(const std::string&)>& read) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.named_parameters()) {
    at::Tensor t = read(p.name);
    if (t.sizes() != p.tensor->sizes())
      throw Error("the weights of " + p.name + " have shape " + c10::str(t.sizes()) + " but the model's has " +
                  c10::str(p.tensor->sizes()), "the folder's weights and its model description disagree");
    p.tensor->copy_(t);
  }
}

}  // namespace

LoadedModel load_model(const std::string& path, at::Device device, at::ScalarType dtype) {
  std::error_code ec;
  if (!fs::is_directory(path, ec))
    throw Error("--checkpoint " + path + " is not a folder",
                "give a checkpoint step folder (checkpoint/step-N) or a Hugging Face model folder");
  LoadedModel out;
  const auto options = at::TensorOptions().device(device).dtype(dtype);
  if (fs::exists(fs::path(path) / "metadata.json", ec)) {
    components::CheckpointReader reader(path);
    out.config = models::config_from_description(reader.model_description(), path + "/metadata.json");
    const auto& spec = models::model_spec(out.config->family());
    out.model = spec.build(*out.config, options);
    copy_weights(*out.model, [&](const std::string& name) {
      if (!reader.has("model." + name))
        throw Error(path + " holds no model." + name, "give a step folder saved with the model's weights");
      return reader.read_full("model." + name);
    });
    {  // the load-balancing bias steers which experts a MoE model routes to
      at::NoGradGuard no_grad;
      for (const auto& b : out.model->named_buffers())
        if (reader.has("model." + b.name)) b.tensor->copy_(reader.read_full("model." + b.name));
    }
    out.tokenizer_path = train::recorded_tokenizer(path);
    out.context = out.config->sizes().max_seq_len;
    out.describe = spec.name + " from " + path;
  } else if (fs::exists(fs::path(path) / "config.json", ec)) {
    components::HfReader hf(path);
    const auto& spec = models::model_spec_for_hf(hf.config(), hf.config_path());
    out.config = spec.config_from_hf(hf.config(), hf.config_path());
    out.context = hf.config().value("max_position_embeddings", int64_t{0});
    if (out.context < 1) out.context = std::numeric_limits<int32_t>::max();
    out.config->set_max_seq_len(std::min<int64_t>(out.context, 8192));
    const auto adapter = spec.hf_adapter(*out.config);
    out.model = spec.build(*out.config, options);
    copy_weights(*out.model, [&](const std::string& name) {
      return train::read_hf_parameter(*adapter, hf, name, path, "give the complete model folder");
    });
    if (fs::exists(fs::path(path) / "tokenizer.json", ec) || fs::exists(fs::path(path) / "tokenizer.model", ec))
      out.tokenizer_path = path;
    out.describe = spec.name + " (Hugging Face) from " + path;
  } else {
    throw Error(path + " holds neither metadata.json (a titan.cpp checkpoint step) nor config.json (a Hugging Face "
                "model)", "give a checkpoint step folder (checkpoint/step-N) or a Hugging Face model folder");
  }
  out.model->set_fused_kernels(/*blocks=*/true, /*loss=*/false);
  return out;
}

at::Tensor sample(const at::Tensor& logits_in, const SamplingOptions& o, at::Generator& generator) {
  at::Tensor logits = logits_in.to(at::kCPU, at::kFloat);
  if (o.temperature <= 0) return logits.argmax(-1);
  logits = logits / o.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    const at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // The smallest set of most likely tokens whose probability reaches top_p (at least one).
    auto [sorted, order] = logits.sort(-1, /*descending=*/true);
    const at::Tensor probs = sorted.softmax(-1);
    const at::Tensor before = probs.cumsum(-1) - probs;  // probability of the tokens ranked higher
    const at::Tensor drop = before >= o.top_p;
    logits = logits.scatter(-1, order, sorted.masked_fill(drop, neg_inf));
  }
  return at::multinomial(logits.softmax(-1), 1, /*replacement=*/false, generator).squeeze(-1);
}

Generation generate(const LoadedModel& lm, const components::Tokenizer& tokenizer,
                    const std::vector<std::string>& prompts, const SamplingOptions& o,
                    const std::function<void(size_t, int64_t)>& on_token) {
  if (prompts.empty()) throw Error("no prompt to continue", "give --prompt TEXT, --prompt-file FILE, or text on stdin");
  if (o.max_new_tokens < 1 || o.max_new_tokens > 1000000)
    throw Error("--max-new-tokens " + std::to_string(o.max_new_tokens) + " is out of range", "use 1 to 1000000");
  if (!(o.temperature >= 0) || !(o.top_p > 0 && o.top_p <= 1) || o.top_k < 0)
    throw Error("sampling options out of range: temperature >= 0, 0 < top_p <= 1, top_k >= 0", "");
  const models::Sizes sizes = lm.config->sizes();
  if (tokenizer.vocab_size() > sizes.vocab_size)
    throw Error("the tokenizer has " + std::to_string(tokenizer.vocab_size()) + " ids but the model's vocabulary has " +
                    std::to_string(sizes.vocab_size),
                "use the tokenizer the model was trained with (--tokenizer PATH)");
  Generation g;
  const size_t B = prompts.size();
  int64_t longest = 0;
  for (const auto& p : prompts) {
    g.prompt_ids.push_back(tokenizer.encode(p, /*add_bos=*/true, /*add_eos=*/false, /*allow_special=*/false));
    if (g.prompt_ids.back().empty()) throw Error("a prompt is empty and the tokenizer has no BOS to start from", "");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(g.prompt_ids.back().size()));
  }
  if (longest + o.max_new_tokens > lm.context)
    throw Error("the longest prompt (" + std::to_string(longest) + " tokens) plus --max-new-tokens " +
                    std::to_string(o.max_new_tokens) + " is longer than the model's context of " +
                    std::to_string(lm.context) + " positions",
                "shorten the prompt or lower --max-new-tokens to at most " +
                    std::to_string(std::max<int64_t>(lm.context - longest, 0)));
  const int64_t pad = tokenizer.eos_id() >= 0 ? tokenizer.eos_id() : 0;
  const int64_t total = longest + o.max_new_tokens;
  const at::Device device = lm.model->parameters().front().device();
  // Left padding: row b's tokens end at column `longest`; its positions count from its first token.
  at::Tensor ids = at::full({static_cast<int64_t>(B), total}, pad, at::kLong);
  at::Tensor valid = at::ones({static_cast<int64_t>(B), total}, at::kBool);
  at::Tensor start_pos = at::empty({static_cast<int64_t>(B)}, at::kLong);
  for (size_t b = 0; b < B; ++b) {
    const auto& p = g.prompt_ids[b];
    const int64_t offset = longest - static_cast<int64_t>(p.size());
    for (size_t i = 0; i < p.size(); ++i) ids[b][offset + static_cast<int64_t>(i)] = p[i];
    if (offset > 0) valid[b].narrow(0, 0, offset).fill_(false);
    start_pos[b] = offset;
  }
  const at::Tensor columns = at::arange(total, at::kLong).view({1, total});
  const at::Tensor positions = (columns - start_pos.view({-1, 1})).clamp_min(0);

  at::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  g.new_ids.assign(B, {});
  std::vector<bool> done(B, false);
  std::unique_ptr<models::GenerationCache> cache;
  auto run = [&](int64_t from, int64_t to) {  // columns [from, to) -> logits of column to-1
    if (!o.use_cache) {
      cache = lm.model->new_cache(static_cast<int64_t>(B), total);
      from = 0;
    }
    return lm.model->forward_cached(ids.narrow(1, from, to - from).to(device),
                                    positions.narrow(1, from, to - from).to(device), valid.narrow(1, 0, to).to(device),
                                    *cache);
  };
  cache = lm.model->new_cache(static_cast<int64_t>(B), total);
  g.kv_cache_bytes = cache->bytes();
  const auto t0 = Clock::now();
  at::Tensor logits = run(0, longest);
  Clock::time_point t_first;
  // The model's vocabulary may be larger than the tokenizer's (the debug flavors' 2048 with a
  // smaller BPE): ids the tokenizer cannot decode are never chosen.
  const int64_t known = tokenizer.vocab_size();
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (known < logits.size(-1))
      logits = logits.narrow(-1, 0, known);
    const at::Tensor next = sample(logits, o, gen);
    const int64_t col = longest + step;
    for (size_t b = 0; b < B; ++b) {
      const int64_t id = done[b] ? pad : next[static_cast<int64_t>(b)].item<int64_t>();
      ids[static_cast<int64_t>(b)][col] = id;
      if (done[b]) continue;
      g.new_ids[b].push_back(id);
      if (step > 0) ++g.decode_tokens;
      if (on_token) on_token(b, id);
      if (o.stop_at_eos && id == tokenizer.eos_id()) done[b] = true;
    }
    if (step == 0) {
      g.time_to_first_token_s = seconds_since(t0);
      t_first = Clock::now();
    }
    bool all_done = true;
    for (bool d : done) all_done = all_done && d;
    if (all_done || step + 1 == o.max_new_tokens) break;
    logits = run(col, col + 1);
  }
  g.decode_s = seconds_since(t_first);
  return g;
}

}  // namespace titan::generate
