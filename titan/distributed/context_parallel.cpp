#include "titan/distributed/context_parallel.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <stdexcept>

#include "titan/distributed/ring.h"
#include "titan/kernels/attention_cpu.h"
#include "titan/kernels/ops.h"

namespace titan::distributed {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kRingTag = 0xc9;  // the cp group carries no other point-to-point traffic

// One local chunk of queries: rows [row, row + len) of this rank's tokens, global chunk `chunk`.
struct QueryChunk {
  int64_t row, len, chunk;
};

std::vector<QueryChunk> query_chunks(const ContextParallel& cp, int rank, int64_t local_len) {
  const auto chunks = cp.chunks_of(rank);
  const int64_t c = local_len / static_cast<int64_t>(chunks.size());
  std::vector<QueryChunk> out;
  for (size_t i = 0; i < chunks.size(); ++i) out.push_back({static_cast<int64_t>(i) * c, c, chunks[i]});
  return out;
}

// Query-key pairs of `rows` causal queries sitting `offset` positions after `keys` keys.
int64_t causal_pairs(int64_t rows, int64_t keys, int64_t offset) {
  int64_t n = 0;
  for (int64_t t = 0; t < rows; ++t) n += std::min(keys, t + offset + 1);
  return n;
}

at::Tensor doc_rows(const at::Tensor& doc_starts, const QueryChunk& qc, int64_t first_key) {
  if (!doc_starts.defined()) return {};
  return (doc_starts.narrow(1, qc.row, qc.len) - first_key).contiguous();
}

// (B,H,t,hd) parts of every rank, gathered -> the whole sequence (B,H,T,hd) in global order.
at::Tensor gather_sequence(ContextParallel& cp, const at::Tensor& x) {
  const int W = cp.size();
  const int64_t t = x.size(2), c = t / static_cast<int64_t>(cp.chunks_of(0).size());
  at::Tensor parts = at::empty({W * x.numel()}, x.options());
  cp.group().all_gather(parts, x.contiguous()).wait();
  std::vector<int64_t> shape = x.sizes().vec();
  const at::Tensor ranks = parts.view({W, shape[0], shape[1], shape[2], shape[3]});
  shape[2] = t * W;
  at::Tensor whole = at::empty(shape, x.options());
  for (int r = 0; r < W; ++r) {
    const auto chunks = cp.chunks_of(r);
    for (size_t j = 0; j < chunks.size(); ++j)
      whole.narrow(2, chunks[j] * c, c).copy_(ranks[r].narrow(2, static_cast<int64_t>(j) * c, c));
  }
  return whole;
}

// The gradient of a gathered sequence (B,H,T,hd), summed over the ranks -> this rank's part.
at::Tensor reduce_scatter_sequence(ContextParallel& cp, const at::Tensor& whole) {
  const int W = cp.size();
  const int64_t t = whole.size(2) / W, c = t / static_cast<int64_t>(cp.chunks_of(0).size());
  std::vector<int64_t> shape = whole.sizes().vec();
  shape[2] = t;
  at::Tensor parts = at::empty({W, shape[0], shape[1], shape[2], shape[3]}, whole.options());
  for (int r = 0; r < W; ++r) {
    const auto chunks = cp.chunks_of(r);
    for (size_t j = 0; j < chunks.size(); ++j)
      parts[r].narrow(2, static_cast<int64_t>(j) * c, c).copy_(whole.narrow(2, chunks[j] * c, c));
  }
  at::Tensor mine = at::empty(shape, whole.options());
  cp.group().reduce_scatter_sum(mine, parts).wait();
  return mine;
}

// The whole attention's output (float32) and logsumexp, and the gradients of q, k and v from
// them, per rotate method.
struct Attended {
  at::Tensor out, lse;
};

// "allgather": the whole sequence's keys and values; each local chunk attends to its prefix.
Attended allgather_forward(ContextParallel& cp, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const at::Tensor& doc_starts) {
  RECORD_FUNCTION("titan::cp_attention_allgather", std::vector<c10::IValue>());
  const at::Tensor K = gather_sequence(cp, k), V = gather_sequence(cp, v);
  std::vector<at::Tensor> outs, lses;
  for (const auto& qc : query_chunks(cp, cp.group_rank(), q.size(2))) {
    const int64_t keys = (qc.chunk + 1) * qc.len, offset = qc.chunk * qc.len;
    auto [o, l] = kernels::attention_part_forward(q.narrow(2, qc.row, qc.len), K.narrow(2, 0, keys),
                                                  V.narrow(2, 0, keys), scale, doc_rows(doc_starts, qc, 0), offset);
    cp.count_pairs(causal_pairs(qc.len, keys, offset));
    outs.push_back(o);
    lses.push_back(l);
  }
  return {at::cat(outs, 2), at::cat(lses, 2)};
}

variable_list allgather_backward(ContextParallel& cp, const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const Attended& a, double scale, const at::Tensor& docs) {
  RECORD_FUNCTION("titan::cp_attention_allgather_backward", std::vector<c10::IValue>());
  const at::Tensor K = gather_sequence(cp, k), V = gather_sequence(cp, v);
  at::Tensor dq = at::empty(q.sizes(), q.options().dtype(at::kFloat));
  at::Tensor dK = at::zeros(K.sizes(), K.options().dtype(at::kFloat)), dV = at::zeros_like(dK);
  for (const auto& qc : query_chunks(cp, cp.group_rank(), q.size(2))) {
    const int64_t keys = (qc.chunk + 1) * qc.len, offset = qc.chunk * qc.len;
    auto [gq, gk, gv] = kernels::attention_part_backward(
        grad.narrow(2, qc.row, qc.len), q.narrow(2, qc.row, qc.len), K.narrow(2, 0, keys), V.narrow(2, 0, keys),
        a.out.narrow(2, qc.row, qc.len), a.lse.narrow(2, qc.row, qc.len), scale, doc_rows(docs, qc, 0), offset);
    dq.narrow(2, qc.row, qc.len).copy_(gq);
    dK.narrow(2, 0, keys).add_(gk);
    dV.narrow(2, 0, keys).add_(gv);
  }
  return {dq, reduce_scatter_sequence(cp, dK), reduce_scatter_sequence(cp, dV)};
}

// Each (local query chunk, key chunk of rank `owner`) pair the causal mask leaves anything of:
// fn(query chunk, index of the key chunk in the owner's part, its global chunk).
template <typename F>
void for_each_pair(const ContextParallel& cp, int owner, int64_t local_len, const F& fn) {
  const auto key_chunks = cp.chunks_of(owner);
  for (const auto& qc : query_chunks(cp, cp.group_rank(), local_len))
    for (size_t j = 0; j < key_chunks.size(); ++j)
      if (key_chunks[j] <= qc.chunk) fn(qc, static_cast<int64_t>(j), key_chunks[j]);
}

// "alltoall": keys and values around the ring; partial results merged by their logsumexps.
Attended ring_forward(ContextParallel& cp, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                      const at::Tensor& doc_starts) {
  RECORD_FUNCTION("titan::cp_attention_ring", std::vector<c10::IValue>());
  Group& g = cp.group();
  const int W = g.size(), r = g.rank();
  const int64_t t = q.size(2), seq = next_ring_seq(&g);
  const auto mine = query_chunks(cp, r, t);
  std::vector<std::vector<at::Tensor>> outs(mine.size()), lses(mine.size());
  at::Tensor kv = at::stack({k, v}).contiguous();  // (2,B,Hk,t,hd)
  for (int step = 0; step < W; ++step) {
    const int owner = (r - step + W) % W;
    at::Tensor next;
    std::optional<RingStep> ring;
    if (step + 1 < W) {  // the next part travels while this one's attention runs
      next = at::empty_like(kv);
      ring.emplace(g, kv, next, (r + 1) % W, (r - 1 + W) % W, kRingTag, "cp ring k/v", seq * (2 * W) + step,
                   Collective::AllGather);
    }
    for_each_pair(cp, owner, t, [&](const QueryChunk& qc, int64_t j, int64_t key_chunk) {
      const int64_t c = qc.len, offset = (qc.chunk - key_chunk) * c;
      auto [o, l] = kernels::attention_part_forward(q.narrow(2, qc.row, c), kv[0].narrow(2, j * c, c),
                                                    kv[1].narrow(2, j * c, c), scale,
                                                    doc_rows(doc_starts, qc, key_chunk * c), offset);
      cp.count_pairs(causal_pairs(c, c, offset));
      const size_t i = static_cast<size_t>(qc.row / c);
      outs[i].push_back(o);
      lses[i].push_back(l);
    });
    if (ring) {
      ring->wait();
      kv = next;
    }
  }
  std::vector<at::Tensor> out_chunks, lse_chunks;
  for (size_t i = 0; i < mine.size(); ++i) {
    auto [o, l] = kernels::merge_partial_attention(outs[i], lses[i]);
    out_chunks.push_back(o);
    lse_chunks.push_back(l);
  }
  return {at::cat(out_chunks, 2), at::cat(lse_chunks, 2)};
}

variable_list ring_backward(ContextParallel& cp, const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const Attended& a, double scale, const at::Tensor& docs) {
  RECORD_FUNCTION("titan::cp_attention_ring_backward", std::vector<c10::IValue>());
  Group& g = cp.group();
  const int W = g.size(), r = g.rank();
  const int64_t t = q.size(2), seq = next_ring_seq(&g);
  at::Tensor dq = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
  at::Tensor kv = at::stack({k, v}).contiguous();
  // The running sums of the gradients of the keys and values at hand (their owner's layout).
  at::Tensor acc = at::zeros(kv.sizes(), kv.options().dtype(at::kFloat));
  for (int step = 0; step < W; ++step) {
    const int owner = (r - step + W) % W;
    at::Tensor next;
    std::optional<RingStep> ring;
    if (step + 1 < W) {  // the next part's keys and values travel while this one's work runs
      next = at::empty_like(kv);
      ring.emplace(g, kv, next, (r + 1) % W, (r - 1 + W) % W, kRingTag, "cp ring k/v backward", seq * (2 * W) + step,
                   Collective::AllGather);
    }
    for_each_pair(cp, owner, t, [&](const QueryChunk& qc, int64_t j, int64_t key_chunk) {
      const int64_t c = qc.len;
      auto [gq, gk, gv] = kernels::attention_part_backward(
          grad.narrow(2, qc.row, c), q.narrow(2, qc.row, c), kv[0].narrow(2, j * c, c), kv[1].narrow(2, j * c, c),
          a.out.narrow(2, qc.row, c), a.lse.narrow(2, qc.row, c), scale, doc_rows(docs, qc, key_chunk * c),
          (qc.chunk - key_chunk) * c);
      dq.narrow(2, qc.row, c).add_(gq);
      acc[0].narrow(2, j * c, c).add_(gk);
      acc[1].narrow(2, j * c, c).add_(gv);
    });
    // The sums go on to the next rank; after the last step they reach their owner.
    at::Tensor acc_in = at::empty_like(acc);
    RingStep home(g, acc, acc_in, (r + 1) % W, (r - 1 + W) % W, kRingTag, "cp ring k/v gradients",
                  seq * (2 * W) + W + step, Collective::ReduceScatter);
    home.wait();
    acc = acc_in;
    if (ring) {
      ring->wait();
      kv = next;
    }
  }
  return {dq, acc[0], acc[1]};
}

Attended attention_forward(ContextParallel& cp, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const at::Tensor& doc_starts) {
  return cp.rotate() == CpRotate::AllGather ? allgather_forward(cp, q, k, v, scale, doc_starts)
                                            : ring_forward(cp, q, k, v, scale, doc_starts);
}

// The attention as an autograd node. `kept` (op-level checkpointing's recompute): the forward's
// output and logsumexp, attached without computing them again.
struct CpAttentionFunction : public torch::autograd::Function<CpAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double scale, const at::Tensor* doc_starts, ContextParallel* cp, const Attended* kept) {
    const Attended a = kept ? *kept : attention_forward(*cp, q, k, v, scale, *doc_starts);
    ctx->save_for_backward({q, k, v, a.out, a.lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["docs"] = *doc_starts;
    // The plan owns the ContextParallel for the whole run: it outlives every backward.
    ctx->saved_data["cp"] = reinterpret_cast<int64_t>(cp);
    // A kept output stays as it was recorded; the node returns a copy of it.
    return kept ? a.out.to(q.scalar_type(), /*non_blocking=*/false, /*copy=*/true) : a.out.to(q.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& cp = *reinterpret_cast<ContextParallel*>(ctx->saved_data["cp"].toInt());
    const auto s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2];
    const Attended a{s[3], s[4]};
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor docs = ctx->saved_data["docs"].toTensor();
    const variable_list g = cp.rotate() == CpRotate::AllGather
                                ? allgather_backward(cp, grads[0], q, k, v, a, scale, docs)
                                : ring_backward(cp, grads[0], q, k, v, a, scale, docs);
    return {g[0].to(q.scalar_type()), g[1].to(k.scalar_type()), g[2].to(v.scalar_type()), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

CpRotate cp_rotate_from_string(const std::string& name) {
  if (name == "allgather") return CpRotate::AllGather;
  if (name == "alltoall") return CpRotate::AllToAll;
  throw std::invalid_argument("unknown context_parallel_rotate_method " + name);
}

ContextParallel::ContextParallel(Group group, bool headtail, CpRotate rotate)
    : group_(std::move(group)), headtail_(headtail), rotate_(rotate) {}

std::vector<int64_t> ContextParallel::chunks_of(int rank) const {
  if (!headtail_) return {rank};
  return {rank, 2 * size() - 1 - rank};
}

at::Tensor ContextParallel::positions(int64_t local_len, at::Device device) const {
  const auto chunks = chunks_of(group_.rank());
  const int64_t c = local_len / static_cast<int64_t>(chunks.size());
  std::vector<at::Tensor> parts;
  for (int64_t chunk : chunks) parts.push_back(at::arange(chunk * c, (chunk + 1) * c, at::kLong));
  return at::cat(parts).to(device);
}

at::Tensor ContextParallel::split(const at::Tensor& x) const {
  TORCH_CHECK(x.size(1) % num_chunks() == 0, "context parallelism: a sequence of ", x.size(1),
              " tokens does not split in ", num_chunks(), " chunks");
  return x.index_select(1, positions(x.size(1) / size(), x.device())).contiguous();
}

at::Tensor ContextParallel::document_starts(const at::Tensor& tokens, int64_t eos) {
  const int W = size();
  const int64_t B = tokens.size(0), t = tokens.size(1);
  at::Tensor parts = at::empty({W * tokens.numel()}, tokens.options());
  group_.all_gather(parts, tokens.contiguous()).wait();
  // Each rank's tokens in its order -> the whole sequences, in global order.
  at::Tensor whole = at::empty({B, W * t}, tokens.options());
  const at::Tensor ranks = parts.view({W, B, t});
  const int64_t c = t / static_cast<int64_t>(chunks_of(0).size());
  for (int r = 0; r < W; ++r) {
    const auto chunks = chunks_of(r);
    for (size_t j = 0; j < chunks.size(); ++j)
      whole.narrow(1, chunks[j] * c, c).copy_(ranks[r].narrow(1, static_cast<int64_t>(j) * c, c));
  }
  return kernels::document_starts(whole, eos).index_select(1, positions(t, tokens.device())).contiguous();
}

at::Tensor ContextParallel::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                      const at::Tensor& doc_starts) {
  // Op-level activation checkpointing keeps the attention's output: recorded in the checkpointed
  // forward (autograd off), attached again in the recompute, whose backward is the usual one.
  const auto mode = kernels::op_checkpoint_mode();
  if (mode == kernels::OpCheckpointScope::Mode::Record) {
    const Attended a = attention_forward(*this, q, k, v, scale, doc_starts);
    kernels::op_checkpoint_keep(a.out);
    kernels::op_checkpoint_keep(a.lse);
    return a.out.to(q.scalar_type());
  }
  if (mode == kernels::OpCheckpointScope::Mode::Replay) {
    const Attended kept{kernels::op_checkpoint_take(), kernels::op_checkpoint_take()};
    return CpAttentionFunction::apply(q, k, v, scale, &doc_starts, this, &kept);
  }
  return CpAttentionFunction::apply(q, k, v, scale, &doc_starts, this, nullptr);
}

}  // namespace titan::distributed
