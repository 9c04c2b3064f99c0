// Llama 3 as plain single-device code: embeddings, pre-norm transformer blocks (GQA attention
// with RoPE, SwiGLU feed-forward), final RMSNorm and output head. Nothing here knows about
// ranks, sharding or recomputation; `parallelize` changes how blocks run from the outside.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {

// A parameter with its torchtitan FQN. `tensor` points into the model so that parallelize
// and the checkpoint code can replace it (e.g. with a shard).
struct NamedParam {
  std::string name;
  at::Tensor* tensor;
};

struct Linear {
  at::Tensor weight;  // (out_features, in_features)
  at::Tensor forward(const at::Tensor& x) const;  // (..., in) -> (..., out)
};

struct RMSNorm {
  at::Tensor weight;  // (dim,)
  double eps = 1e-5;
  bool fused = false;  // the fused kernel (compile.enable) instead of ATen's ops
  at::Tensor forward(const at::Tensor& x) const;  // (..., dim) -> (..., dim)
  // The residual add before the norm: h = x + delta -> {h, norm(h)}, each (..., dim).
  std::tuple<at::Tensor, at::Tensor> add_forward(const at::Tensor& x, const at::Tensor& delta) const;
};

// Precomputed RoPE rotation for positions [0, max_seq_len): cos and sin, each (T, head_dim/2)
// float32, with the Llama 3.1 frequency scaling when enabled.
struct RopeTable {
  at::Tensor cos;
  at::Tensor sin;
};
RopeTable rope_table(const ModelArgs& args, const at::TensorOptions& options);
// Rotates interleaved pairs (2i, 2i+1) of the last dim. x: (B, T, H, head_dim); cos/sin (>=T, hd/2).
at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope);

struct Attention {
  Linear wq, wk, wv, wo;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool fused = false;  // fused RoPE of q and k, and titan.cpp's attention kernel on the CPU
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope) const;  // (B,T,D) -> (B,T,D)
};

struct FeedForward {
  Linear w1, w2, w3;
  bool fused = false;  // silu(a) * b in one fused kernel
  at::Tensor forward(const at::Tensor& x) const;  // (B,T,D) -> (B,T,D): w2(silu(w1 x) * w3 x)
};

struct TransformerBlock {
  int64_t layer_id = 0;
  RMSNorm attention_norm, ffn_norm;
  Attention attention;
  FeedForward feed_forward;
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope) const;  // (B,T,D) -> (B,T,D)
  std::vector<NamedParam> named_parameters(const std::string& prefix);
};

// How a block is run. The default calls block.forward; activation checkpointing installs a
// runner that recomputes the block in backward.
using BlockRunner = std::function<at::Tensor(const TransformerBlock&, const at::Tensor& x,
                                             const RopeTable& rope)>;

// Observers of the forward pass, called around each part: "tok_embeddings", "layers.<i>" and
// "output" (final norm + output head). Data parallelism gathers and releases parameters here.
class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  virtual void before(size_t part_index, const std::string& part) = 0;
  virtual at::Tensor after(size_t part_index, const std::string& part, const at::Tensor& out) = 0;
};

class Transformer {
 public:
  // Allocates every parameter (uninitialised) with `options`; on the meta device nothing is
  // allocated, which is how large flavors are inspected.
  Transformer(const ModelArgs& args, const at::TensorOptions& options);

  // torchtitan's initialisation, deterministic per (seed, parameter name), so any layout that
  // initialises a parameter by name gets the same values. Values are drawn on the CPU and copied.
  void init_weights(uint64_t seed);

  // tokens: (B, T) int64 -> logits (B, T, vocab) in the compute dtype.
  at::Tensor forward(const at::Tensor& tokens) const;
  // tokens, labels: (B, T) -> the cross-entropy loss of each token (B, T), float32, 0 where the
  // label is the ignore index (-100). The loss is part of the last part ("output"), so that
  // the output head and the loss may run fused and chunked without whole logits.
  at::Tensor forward_loss(const at::Tensor& tokens, const at::Tensor& labels) const;

  // Fused kernels instead of ATen's ops: in every block (RMSNorm with the residual add, RoPE on
  // q and k, SwiGLU) and/or for the output head with the loss (chunked linear + cross entropy).
  void set_fused_kernels(bool blocks, bool loss);

  std::vector<NamedParam> named_parameters();
  std::vector<at::Tensor> parameters();
  int64_t num_params();

  const ModelArgs& args() const { return args_; }
  std::vector<TransformerBlock>& layers() { return layers_; }
  void set_block_runner(size_t layer, BlockRunner runner) { runners_.at(layer) = std::move(runner); }
  void set_forward_hooks(ForwardHooks* hooks) { hooks_ = hooks; }
  // (Re)builds the non-parameter tensors (the RoPE table) with `options`, e.g. on the real
  // device after the model was built on the meta device.
  void init_buffers(const at::TensorOptions& options) { rope_ = rope_table(args_, options); }
  // The parts in forward order, and the FQNs of each part's parameters.
  const std::vector<std::string>& part_names() const { return part_names_; }
  std::vector<std::vector<NamedParam>> parameters_by_part();

 private:
  ModelArgs args_;
  at::Tensor tok_embeddings_;  // (vocab, dim)
  std::vector<TransformerBlock> layers_;
  RMSNorm norm_;
  Linear output_;  // weight aliases tok_embeddings_ when tied
  RopeTable rope_;
  std::vector<BlockRunner> runners_;
  ForwardHooks* hooks_ = nullptr;
  bool fused_loss_ = false;

  // The layers up to the final norm; then the head, with the loss when labels are given.
  at::Tensor run(const at::Tensor& tokens, const at::Tensor* labels) const;
  std::vector<std::string> part_names_;
};

// The weight of `name` drawn with torchtitan's initialiser for that parameter, on the CPU in
// float32. Exposed so that a sharded layout can initialise only its own slice of a parameter.
at::Tensor init_value(const ModelArgs& args, const std::string& name, at::IntArrayRef shape,
                      uint64_t seed);

}  // namespace titan::models::llama3
