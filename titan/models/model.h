// What every model family offers the trainer, the converters and the command line, whatever
// its architecture: its arguments (sizes, counts, JSON), the built module (forward, parts,
// hooks), and its Hugging Face state-dict adapter. Each family implements these in
// titan/models/<name>/ and registers itself (titan/models/registry.h); nothing outside that
// folder names the family's own types.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "titan/common/module.h"

namespace titan::models {

// A decoder's sizes as generic code uses them: memory estimates, pipeline boundaries, logs and
// the checks of a layout against the model.
struct Sizes {
  int64_t dim = 0;             // the residual stream's width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_hidden_dim = 0;  // the feed-forward's inner width
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;     // positions the model is built for (its RoPE table)
  bool tied_embeddings = false;
  int64_t layer_params = 0;    // parameters of one block
  // Mixture of experts: the routed experts' parameters of one block, and the experts each token visits.
  int64_t layer_expert_params = 0;
  int64_t moe_top_k = 0;
};

// One family's arguments (a flavor, with the run's overrides applied).
class ModelConfig {
 public:
  virtual ~ModelConfig() = default;
  virtual std::unique_ptr<ModelConfig> clone() const = 0;

  virtual std::string family() const = 0;  // the registry's name: "llama3"
  virtual Sizes sizes() const = 0;
  // The run's overrides: training.seq_len, model.vocab_size, model.n_layers,
  // debug.moe_force_load_balance (nothing to do for a dense model).
  virtual void set_max_seq_len(int64_t n) = 0;
  virtual void set_vocab_size(int64_t n) = 0;
  virtual void set_n_layers(int64_t n) = 0;
  virtual void set_moe_force_load_balance(bool) {}
  // torchtitan's "Total parameter count: dense N, sparse N, active N" line (MoE counting), when
  // the family logs it.
  virtual std::string parameter_count_line() const { return ""; }

  // Analytic counts, equal to those of a built model (each family's tests check both).
  virtual int64_t num_params() const = 0;
  virtual int64_t num_embedding_params() const = 0;
  // attn_mask_type "block_causal" (documents masked at the tokenizer's EOS), else "causal".
  virtual bool block_causal() const { return false; }
  // What the start-up log's "Attention:" line adds about the family's attention (MLA, YaRN).
  virtual std::string attention_note() const { return ""; }
  // The count torchtitan's start-up line reports ("size: N total parameters"); Qwen3's leaves
  // a tied table out.
  virtual int64_t reported_num_params() const { return num_params(); }
  // FLOPs per token of a training step (forward and backward), torchtitan's formula.
  virtual int64_t flops_per_token(int64_t seq_len) const = 0;

  // What checkpoints record of the model (compared argument by argument on resume).
  virtual nlohmann::json to_json() const = 0;
  // The start-up log's description: "ModelArgs(dim=256, n_layers=6, ...)".
  virtual std::string describe() const = 0;
};

// What generation keeps between steps (a key/value cache), opaque to everything but its model.
class GenerationCache {
 public:
  virtual ~GenerationCache() = default;
  virtual int64_t bytes() const = 0;
};

// A mixture-of-experts layer's load balancing (auxiliary-loss-free): the tokens each expert got
// since the last optimizer step, counted by the forward, and the bias that steers the choice.
struct ExpertLoad {
  std::string layer;                 // "layers.3"
  at::Tensor tokens;                 // (E) float32, zeroed by whoever updates the bias
  at::Tensor bias;                   // (E) float32; undefined without load balancing
  std::optional<double> coeff;       // load_balance_coeff
  // Moves the bias by the tokens (E) each expert got, summed over the data-parallel ranks: up
  // for the experts below the mean, down for those above (unset without load balancing).
  std::function<void(const at::Tensor& tokens)> update_bias;
};

// A built model: plain single-device code that parallelize.* changes from the outside through
// the hooks of titan/common/module.h. Parts are in forward order: the embedding, the blocks,
// then the head with its loss.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;

  // torchtitan's initialisation, deterministic per (seed, parameter name).
  virtual void init_weights(uint64_t seed) = 0;
  // (Re)builds the non-parameter tensors (e.g. RoPE tables) with `options`.
  virtual void init_buffers(const at::TensorOptions& options) = 0;

  // tokens (B,T) int64 -> logits (B,T,vocab) in the compute dtype.
  virtual at::Tensor forward(const at::Tensor& tokens) const = 0;
  // tokens, labels (B,T) -> float32 loss of each token (B,T), 0 where the label is -100.
  virtual at::Tensor forward_loss(const at::Tensor& tokens, const at::Tensor& labels) const = 0;
  // Parts [first, last) only (a pipeline stage); see each family's header for the contract.
  // `tokens`: the batch's tokens (B,T) for a stage after the first, which block-causal
  // attention needs for its documents (ignored otherwise).
  virtual at::Tensor forward_parts(const at::Tensor& x, const at::Tensor* labels, size_t first, size_t last,
                                   const at::Tensor* tokens = nullptr) const = 0;
  // Block-causal attention (attn_mask_type = "block_causal"): documents end with token `eos`,
  // and a token attends only to the earlier tokens of its document.
  virtual void set_document_eos(int64_t eos) = 0;
  virtual size_t num_parts() const = 0;
  // The module names of part `index` as torchtitan's pipeline split lists them
  // ("tok_embeddings", "layers.3", "norm" and "output" for the head).
  virtual std::vector<std::string> part_modules(size_t index) const = 0;

  virtual void set_fused_kernels(bool blocks, bool loss) = 0;
  virtual std::vector<NamedParam> named_parameters() = 0;
  // Tensors that are not parameters but belong in checkpoints (torchtitan's persistent buffers:
  // a MoE layer's expert_bias), the same on every rank.
  virtual std::vector<NamedParam> named_buffers() { return {}; }
  // Each mixture-of-experts layer's load (none in a dense model).
  virtual std::vector<ExpertLoad> expert_loads() { return {}; }
  virtual std::vector<ModelPart> parts() = 0;
  virtual void set_block_runner(size_t layer, BlockRunner runner) = 0;
  virtual void set_forward_hooks(ForwardHooks* hooks) = 0;
  virtual void set_head_loss_style(HeadLossStyle style) = 0;
  // Context parallelism: this rank holds `split`'s part of every sequence (RoPE at its global
  // positions, documents and attention over the whole sequence). Null: the whole sequence.
  virtual void set_sequence_split(std::shared_ptr<SequenceSplit> split) = 0;

  // Generation (titan generate): a cache for `batch` sequences of up to `capacity` positions,
  // and a forward that runs `tokens` (B,T) at the cache's next T columns. `positions` (B,T) are
  // their rotary positions (left padding makes them differ per row); `key_valid` (B, columns so
  // far + T) says which columns hold real tokens. Appends their keys and values to the cache and
  // returns the logits of the last column (B, vocab) in float32.
  virtual std::unique_ptr<GenerationCache> new_cache(int64_t batch, int64_t capacity) const = 0;
  virtual at::Tensor forward_cached(const at::Tensor& tokens, const at::Tensor& positions,
                                    const at::Tensor& key_valid, GenerationCache& cache) const = 0;

  std::vector<at::Tensor> parameters();
  int64_t num_params();
};

// A family's names and layout in Hugging Face transformers' terms.
class StateDictAdapter {
 public:
  virtual ~StateDictAdapter() = default;
  // Our FQN -> transformers' name; throws for a parameter transformers does not store.
  virtual std::string to_hf_name(const std::string& fqn) const = 0;
  // The inverse; nullopt for names that are not parameters of ours (rotary caches, a tied head).
  virtual std::optional<std::string> from_hf_name(const std::string& hf_name) const = 0;
  // A full tensor in our layout -> transformers' layout, and back.
  virtual at::Tensor to_hf(const std::string& fqn, const at::Tensor& t) const = 0;
  virtual at::Tensor from_hf(const std::string& fqn, const at::Tensor& t) const = 0;
  // The transformers tensors our `fqn` is stored as: one (to_hf_name), or one per expert for a
  // mixture-of-experts layer's (E, ...) tensors, which transformers stores expert by expert.
  virtual std::vector<std::string> to_hf_names(const std::string& fqn) const { return {to_hf_name(fqn)}; }
  // A full tensor -> its transformers tensors in to_hf_names' order, and back.
  virtual std::vector<at::Tensor> to_hf_parts(const std::string& fqn, const at::Tensor& t) const {
    return {to_hf(fqn, t)};
  }
  virtual at::Tensor from_hf_parts(const std::string& fqn, const std::vector<at::Tensor>& parts) const {
    return from_hf(fqn, parts.at(0));
  }
  // transformers' name of a persistent buffer (a MoE layer's expert bias) where transformers
  // keeps one; nullopt where it has none (the buffer then starts at zero on import, and is left
  // out of an export).
  virtual std::optional<std::string> buffer_hf_name(const std::string&) const { return std::nullopt; }
  // config.json for transformers, with the given torch_dtype ("float32", "bfloat16"); throws
  // titan::Error for a model transformers' class cannot compute the same way.
  virtual nlohmann::json hf_config(const std::string& torch_dtype) const = 0;
  // Throws titan::Error naming the first config.json field where `have` (read from `where`)
  // differs from the adapter's model.
  virtual void check_same(const ModelConfig& have, const std::string& where) const = 0;
  // A name in the files that belongs to no parameter and may be left unused (rotary caches,
  // the head of tied embeddings).
  virtual bool ignorable(const std::string& hf_name) const = 0;
};

}  // namespace titan::models
