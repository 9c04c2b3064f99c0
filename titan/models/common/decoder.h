// The decoder that Llama 3, Qwen3 and DeepSeek-V3 share, as plain single-device code: embeddings,
// pre-norm blocks (grouped-query attention with RoPE and optional per-head q/k RMSNorm, or
// DeepSeek's multi-head latent attention; a SwiGLU feed-forward or a mixture of experts), a final
// RMSNorm and the output head with its loss. A family fills in
// DecoderArgs from its own arguments (titan/models/<name>/) and names the model. Nothing here
// knows about ranks, sharding or recomputation: parallelize changes how it runs from the
// outside, through the hooks of titan/common/module.h. Head counts are read from the tensors,
// so the same code runs a tensor-parallel rank's share.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "titan/common/module.h"
#include "titan/kernels/float8.h"
#include "titan/kernels/mx.h"
#include "titan/models/common/moe.h"
#include "titan/models/model.h"

namespace titan::models::common {

using titan::ModelPart;
using titan::NamedParam;

// Multi-head latent attention (DeepSeek-V3): queries from x (q_lora_rank 0) or through a
// normed latent of width q_lora_rank; keys and values through one normed latent of width
// kv_lora_rank that all heads share, plus one rotary key of qk_rope_head_dim for all heads. Each
// head's query and key are qk_nope_head_dim unrotated then qk_rope_head_dim rotated dims; its
// value is v_head_dim wide.
struct MlaArgs {
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// YaRN (DeepSeek-V3): past original_seq_len positions, the rotary frequencies whose wavelength
// spans the original context are divided by `factor`, those of fewer than beta_slow..beta_fast
// rotations kept, with a linear ramp between; and the softmax scale grows by
// (0.1 * mscale * ln(factor) + 1)^2.
struct YarnArgs {
  int64_t original_seq_len = 4096;
  double factor = 40;
  double beta_fast = 32, beta_slow = 1;
  double mscale = 1.0;
};

struct DecoderArgs {
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;        // dim / n_heads for Llama; its own value for Qwen3
  int64_t ffn_hidden_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;     // RoPE table length (training.seq_len)
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool llama31_rope_scaling = false;  // factor 8, low 1, high 4, original context 8192
  bool qk_norm = false;               // RMSNorm over head_dim on q and k, before RoPE (Qwen3)
  bool tied_embeddings = false;       // output.weight is tok_embeddings.weight
  bool depth_init = true;             // wo/w2/w3 std 0.02/sqrt(2*(layer_id+1)), else /sqrt(2*n_layers)
  // With tied embeddings, the shared table takes the output head's initialisation
  // (Qwen3) instead of the embedding's (Llama 3).
  bool tied_table_takes_output_init = false;
  // Mixture of experts: every block's feed-forward is a MoeLayer with experts of inner width
  // moe_inter_dim (Qwen3's MoE flavors).
  std::optional<MoeArgs> moe;
  int64_t moe_inter_dim = 0;
  // With moe: blocks [0, n_dense_layers) keep the dense feed-forward (DeepSeek-V3).
  int64_t n_dense_layers = 0;
  std::optional<MlaArgs> mla;  // DeepSeek-V3's attention in place of grouped-query attention
  std::optional<YarnArgs> yarn;  // applied when max_seq_len > yarn->original_seq_len
  std::optional<double> final_norm_eps;  // the final norm's epsilon, when not norm_eps

  bool moe_layer(int64_t layer) const { return moe && layer >= n_dense_layers; }
  // The rotated width of a head: head_dim, or MLA's qk_rope_head_dim.
  int64_t rope_dim() const { return mla ? mla->qk_rope_head_dim : head_dim; }
  // 1/sqrt(the query-key width), times YaRN's correction when it applies.
  double softmax_scale() const;
};

// The decoder's parameter count (a tied table once).
int64_t num_params(const DecoderArgs& a);
// Block `layer`'s parameters (dense and MoE blocks differ), and their mean over the blocks.
int64_t block_params(const DecoderArgs& a, int64_t layer);
int64_t mean_block_params(const DecoderArgs& a);
// Parameters torchtitan's MoE count calls sparse, summed over the blocks (zero without MoE).
MoeParams moe_params(const DecoderArgs& a);
// What a MoE model's training step costs per token, as torchtitan counts it: 6 x (the parameters
// outside the embedding, with only top_k of the experts' counted) + the attention's scores.
int64_t moe_flops_per_token(const DecoderArgs& a, int64_t seq_len);
// torchtitan's start-up line for MoE models: "Total parameter count: dense N, sparse N, active N".
std::string moe_count_line(const DecoderArgs& a);

struct Linear {
  at::Tensor weight;  // (out_features, in_features)
  LinearStyle style;  // set by parallelize (tensor parallelism); unset: x W^T
  // Set by a float8 conversion (model.converters): the three GEMMs in float8.
  std::shared_ptr<const kernels::Float8Config> float8;
  // Set by an MX conversion (model.converters = ["quantize.linear.mx"]): the GEMMs in mxfp8.
  std::optional<kernels::MxScaleMode> mx;
  at::Tensor forward(const at::Tensor& x) const;  // (..., in) -> (..., out)
  // x W^T with this rank's weight, in float8 when converted: what forward runs without a
  // style, and what a row-wise tensor-parallel style runs before its reduce-scatter.
  static at::Tensor local(const at::Tensor& x, const at::Tensor& weight, const kernels::Float8Config* float8);
};

struct Embedding {
  at::Tensor weight;  // (vocab, dim)
  EmbeddingStyle style;
  at::Tensor forward(const at::Tensor& tokens) const;  // (B,T) -> (B,T,dim)
};

struct RMSNorm {
  at::Tensor weight;  // (dim,)
  double eps = 1e-5;
  bool fused = false;  // the fused kernel (compile.enable) instead of ATen's ops
  at::Tensor forward(const at::Tensor& x) const;  // (..., dim) -> (..., dim)
  // The residual add before the norm: h = x + delta -> {h, norm(h)}, each (..., dim).
  std::tuple<at::Tensor, at::Tensor> add_forward(const at::Tensor& x, const at::Tensor& delta) const;
};

// Precomputed RoPE rotation for positions [0, max_seq_len): cos and sin, each (T, rope_dim/2)
// float32, with the Llama 3.1 frequency scaling or YaRN when enabled. The rotation is of interleaved
// pairs (2i, 2i+1); a family whose reference rotates the two halves of each head (Qwen3) stores
// wq and wk rows (and q/k norm weights) in pair order, and its adapters permute.
struct RopeTable {
  at::Tensor cos;
  at::Tensor sin;
};
RopeTable rope_table(const DecoderArgs& args, const at::TensorOptions& options);
// Rotates interleaved pairs (2i, 2i+1) of the last dim. x: (B, T, H, head_dim); cos/sin (>=T, hd/2).
at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope);

// Multi-head latent attention's own layers (MlaArgs); the queries come from Attention::wq when
// q_lora_rank is 0, else from wq_b(q_norm(wq_a x)).
struct Mla {
  MlaArgs args;
  Linear wq_a, wq_b;              // (q_lora_rank, D), (H * qk_head_dim, q_lora_rank)
  std::optional<RMSNorm> q_norm;  // over q_lora_rank
  Linear wkv_a;                   // (kv_lora_rank + qk_rope_head_dim, D)
  RMSNorm kv_norm;                // over kv_lora_rank
  Linear wkv_b;                   // (H * (qk_nope_head_dim + v_head_dim), kv_lora_rank)
};

struct Attention {
  Linear wq, wk, wv, wo;
  std::optional<RMSNorm> q_norm, k_norm;  // per head, over head_dim (qk_norm)
  std::optional<Mla> mla;  // DeepSeek-V3: wk and wv unused, wq only without a query latent
  int64_t head_dim = 0;
  double softmax_scale = 0;  // 0: 1/sqrt(head_dim)
  bool fused = false;  // fused RoPE of q and k, and titan.cpp's attention kernel on the CPU
  InputStyle prepare_input;  // e.g. gather the sequence (sequence parallelism)
  ProjectStyle project;      // x -> {q, k, v} of wq, wk, wv at once (async tensor parallelism)
  SequenceSplit* split = nullptr;  // context parallelism: attention over the whole sequence
  // (B,T,D) -> (B,T,D); block-causal with `doc_starts` (kernels::document_starts).
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope, const at::Tensor& doc_starts = {}) const;
  // Generation: x (B,T,D) at cache columns [start, start+T) with per-row rotations cos/sin
  // (B,T,hd/2); keys and values appended to k_cache/v_cache (B,H_kv,capacity,hd); `allowed`
  // (B,1,T,start+T) is which columns each query sees.
  at::Tensor forward_cached(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& allowed, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start) const;

 private:
  // MLA: x (B,T,D) -> q, k (B,T,H,qk_head_dim) with their rotary dims rotated by `rotate`, and
  // v (B,T,H,v_head_dim).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> mla_qkv(
      const at::Tensor& x, const std::function<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>&
                               rotate) const;
  double scale() const;
};

struct FeedForward {
  Linear w1, w2, w3;
  bool fused = false;  // silu(a) * b in one fused kernel
  InputStyle prepare_input;
  ProjectStyle project;  // x -> {w1 x, w3 x} at once (async tensor parallelism)
  at::Tensor forward(const at::Tensor& x) const;  // (B,T,D) -> (B,T,D): w2(silu(w1 x) * w3 x)
};

struct TransformerBlock {
  int64_t layer_id = 0;
  RMSNorm attention_norm, ffn_norm;
  Attention attention;
  FeedForward feed_forward;           // unless moe
  std::shared_ptr<MoeLayer> moe;      // a mixture of experts in the feed-forward's place
  // (B,T,D) -> (B,T,D); `doc_starts` (kernels::document_starts) for block-causal attention.
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope, const at::Tensor& doc_starts = {}) const;
  at::Tensor forward_cached(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& allowed, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start) const;
  std::vector<NamedParam> named_parameters(const std::string& prefix);
  std::vector<at::Tensor*> weight_slots();  // what named_parameters points to
  at::Tensor feed_forward_out(const at::Tensor& h_normed) const;  // the feed-forward or the experts
};

class Decoder : public Model {
 public:
  // Allocates every parameter (uninitialised) with `options`; on the meta device nothing is
  // allocated, which is how large flavors are inspected.
  Decoder(const DecoderArgs& args, const at::TensorOptions& options);
  Decoder(const Decoder&) = delete;  // blocks_ refer to this object
  Decoder& operator=(const Decoder&) = delete;

  // torchtitan's initialisation, deterministic per (seed, parameter name), so any layout that
  // initialises a parameter by name gets the same values. Values are drawn on the CPU and copied.
  void init_weights(uint64_t seed) override;

  // tokens: (B, T) int64 -> logits (B, T, vocab) in the compute dtype.
  at::Tensor forward(const at::Tensor& tokens) const override;
  // tokens, labels: (B, T) -> the cross-entropy loss of each token (B, T), float32, 0 where the
  // label is the ignore index (-100). The loss is part of the last part ("output"), so that
  // the output head and the loss may run fused and chunked without whole logits.
  at::Tensor forward_loss(const at::Tensor& tokens, const at::Tensor& labels) const override;

  // Parts [first, last) of parts() only (a pipeline stage): `x` is the tokens (B,T) when
  // first is 0, else the hidden state (B,T,D) that part first-1 returned; returns the hidden
  // state after part last-1, or, when last is the end, the loss of each token (B,T) with
  // `labels` (the logits without). Hooks see each part's index in parts().
  // With block-causal attention (set_document_eos) a stage after the first needs `tokens`.
  at::Tensor forward_parts(const at::Tensor& x, const at::Tensor* labels, size_t first, size_t last,
                           const at::Tensor* tokens = nullptr) const override;
  void set_document_eos(int64_t eos) override { document_eos_ = eos; }
  size_t num_parts() const override { return layers_.size() + 2; }
  std::vector<std::string> part_modules(size_t index) const override;

  // Fused kernels instead of ATen's ops: in every block (RMSNorm with the residual add, RoPE on
  // q and k, SwiGLU) and/or for the output head with the loss (chunked linear + cross entropy).
  void set_fused_kernels(bool blocks, bool loss) override;

  std::vector<NamedParam> named_parameters() override;
  std::vector<NamedParam> named_buffers() override;
  std::vector<ExpertLoad> expert_loads() override;

  const DecoderArgs& decoder_args() const { return dargs_; }
  std::vector<TransformerBlock>& layers() { return layers_; }
  RMSNorm& norm() { return norm_; }
  Embedding& tok_embeddings() { return tok_embeddings_; }
  Linear& output() { return output_; }

  // The parts in forward order ("tok_embeddings", "layers.<i>", "output") with their
  // parameters. With tied embeddings the head reads tok_embeddings.weight, listed once.
  std::vector<ModelPart> parts() override;
  // Runs block `layer` through `runner` (activation checkpointing); unset runs it directly.
  void set_block_runner(size_t layer, BlockRunner runner) override { runners_.at(layer) = std::move(runner); }
  void set_forward_hooks(ForwardHooks* hooks) override { hooks_ = hooks; }
  // The output head with its loss (tensor parallelism: vocabulary-parallel loss).
  void set_head_loss_style(HeadLossStyle style) override { head_loss_style_ = std::move(style); }
  void set_sequence_split(std::shared_ptr<SequenceSplit> split) override;
  // (Re)builds the non-parameter tensors (the RoPE table) with `options`, e.g. on the real
  // device after the model was built on the meta device.
  // The MoE buffers are zeros, made on that device where they are not there yet.
  void init_buffers(const at::TensorOptions& options) override;

  // Generation with a key/value cache per block; attention in ATen ops with an explicit mask.
  std::unique_ptr<GenerationCache> new_cache(int64_t batch, int64_t capacity) const override;
  at::Tensor forward_cached(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_valid,
                            GenerationCache& cache) const override;

 private:
  DecoderArgs dargs_;
  Embedding tok_embeddings_;
  std::vector<TransformerBlock> layers_;
  RMSNorm norm_;
  Linear output_;  // weight aliases tok_embeddings_.weight when tied
  RopeTable rope_;
  std::vector<BlockRunner> runners_;
  std::vector<BlockFn> blocks_;  // layers_[i].forward as functions; they outlive every backward
  std::vector<std::vector<at::Tensor*>> block_slots_;  // layers_[i]'s weight slots
  ForwardHooks* hooks_ = nullptr;
  HeadLossStyle head_loss_style_;
  bool fused_loss_ = false;
  int64_t document_eos_ = -1;  // >= 0: block-causal attention, documents ending with this token
  std::shared_ptr<SequenceSplit> split_;  // context parallelism
};

// A family's model: the shared decoder built from the family's arguments (`Args::decoder()`),
// which it keeps for config().
template <class Args>
class FamilyDecoder final : public Decoder {
 public:
  FamilyDecoder(const Args& args, const at::TensorOptions& options) : Decoder(args.decoder(), options), args_(args) {}
  const Args& args() const { return args_; }
  const ModelConfig& config() const override { return args_; }

 private:
  Args args_;
};

// The weight of `name` (global shape `shape`) drawn with torchtitan's initialiser for that
// parameter, on the CPU in float32; only the box [offsets, offsets + sizes) when given. Each
// element is a function of (seed, name, its index) alone (titan/common/counter_rng.h), so a
// sharded layout draws exactly its own slice of the values one process draws.
at::Tensor init_value(const DecoderArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                      at::IntArrayRef offsets = {}, at::IntArrayRef sizes = {});
// The same, drawn straight into `out` (contiguous float32 on the CPU, the box's sizes).
void init_value_into(const DecoderArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                     at::IntArrayRef offsets, at::Tensor& out);

}  // namespace titan::models::common
