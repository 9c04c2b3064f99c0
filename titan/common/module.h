// What a model offers the machinery that changes how it runs (data, tensor and pipeline
// parallelism, activation checkpointing), without either knowing the other: the model's parts
// and their parameters by FQN, hooks around each part, runners for its blocks, and style hooks
// on its linear layers, embedding, output head and block inputs. Models implement it
// (models/<name>/); parallelize.* fills it in; distributed/ and kernels/ supply the functions.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

namespace titan {

// A parameter with its FQN ("layers.3.attention.wq.weight"). `tensor` points into the model,
// so that data parallelism can swap it for its gathered form and back.
struct NamedParam {
  std::string name;
  at::Tensor* tensor;
};

// A unit of the forward pass: "tok_embeddings", "layers.<i>", "output" (final norm, head, loss).
struct ModelPart {
  std::string name;
  std::vector<NamedParam> params;
};

// Observers of the forward pass, called around each part in forward order. Data parallelism
// gathers and releases parameters here.
class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  virtual void before(size_t part_index, const std::string& part) = 0;
  virtual at::Tensor after(size_t part_index, const std::string& part, const at::Tensor& out) = 0;
};

// What a block's forward reads besides its input that belongs to the batch: the document layout
// for block-causal attention (kernels::document_starts; undefined: causal). A runner that
// recomputes a block passes it back as it was.
struct BlockContext {
  at::Tensor doc_starts;
  at::Tensor positions;  // context parallelism: the global positions of the tokens held (T) int64
};

// Context parallelism: each rank of a group holds a part of every sequence. What a model's blocks
// ask of it about the sequence as a whole (distributed/context_parallel.h implements it).
class SequenceSplit {
 public:
  virtual ~SequenceSplit() = default;
  // The global positions of this rank's `local_len` tokens of each sequence, (local_len) int64.
  virtual at::Tensor positions(int64_t local_len, at::Device device) const = 0;
  // This rank's tokens (B, local_len) -> the global position where each one's document starts,
  // for documents ending with `eos` (kernels::document_starts over the whole sequence).
  virtual at::Tensor document_starts(const at::Tensor& tokens, int64_t eos) = 0;
  // Causal attention of this rank's queries over the keys of the whole sequence (block-causal with
  // `doc_starts` from document_starts): q (B,Hq,T,hd), k and v (B,Hk,T,hd), after RoPE, the
  // local tokens -> (B,Hq,T,hd).
  virtual at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                               const at::Tensor& doc_starts) = 0;
};

// Expert parallelism: each rank of a group holds some of a mixture-of-experts layer's experts
// (distributed/expert_parallel.h implements it).
class ExpertDispatch {
 public:
  virtual ~ExpertDispatch() = default;
  // Runs routed experts on local weights: `experts` (rows sorted by local expert, the count of
  // each (E_local) int64 on the host) -> their outputs, row for row.
  using LocalExperts = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& counts)>;
  // x (M, D): this rank's (token, expert) rows sorted by expert, `counts` (E) how many rows each
  // of the layer's E experts gets. Each expert's rows go to the rank that holds it, which runs
  // `experts` on what it received; the outputs come back in x's order (M, D). Differentiable.
  virtual at::Tensor run(const at::Tensor& x, const at::Tensor& counts, const LocalExperts& experts) = 0;
};

// A block of the model as a function of its input, with the slots of the weights it reads (so
// that a runner can route their gradients, and recompute with the weights of this forward even
// when data parallelism has put another microbatch's in the slots since): what activation
// checkpointing wraps.
using BlockFn = std::function<at::Tensor(const at::Tensor& x, const BlockContext& context)>;
using BlockRunner = std::function<at::Tensor(const BlockFn& block, const at::Tensor& x, const BlockContext& context,
                                             const std::vector<at::Tensor*>& weights)>;

// Whether this thread is recomputing a block for activation checkpointing: what a block counts
// in its forward (tokens per expert) it does not count again.
inline bool& recomputing() {
  thread_local bool on = false;
  return on;
}
// Marks this thread as recomputing for the scope's life.
class RecomputeScope {
 public:
  RecomputeScope() : was_(recomputing()) { recomputing() = true; }
  ~RecomputeScope() { recomputing() = was_; }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;

 private:
  bool was_;
};

// Style hooks (tensor parallelism): how a linear layer, the embedding, the output head with
// its loss, or a module's input run. Unset means the plain single-device computation.
using LinearStyle = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& weight)>;
using EmbeddingStyle = std::function<at::Tensor(const at::Tensor& tokens, const at::Tensor& weight)>;
// h (B,T,D) after the final norm, the head's weight, labels (B,T) -> loss per token (B,T).
using HeadLossStyle = std::function<at::Tensor(const at::Tensor& h, const at::Tensor& weight,
                                               const at::Tensor& labels)>;
using InputStyle = std::function<at::Tensor(const at::Tensor& x)>;
// A module's input through its column-wise input projections at once (async tensor parallelism:
// the input's all-gather pipelined with their matmuls) -> each projection's output, in order.
// Unset: the module's input style, then each projection.
using ProjectStyle = std::function<std::vector<at::Tensor>(const at::Tensor& x)>;

}  // namespace titan
