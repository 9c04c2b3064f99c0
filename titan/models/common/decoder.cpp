#include "titan/models/common/decoder.h"

#include "titan/kernels/fused_ops.h"
#include "titan/kernels/linear_cross_entropy.h"
#include "titan/kernels/ops.h"

#include "titan/common/counter_rng.h"
#include "titan/common/log.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace titan::models::common {

at::Tensor Linear::forward(const at::Tensor& x) const {
  if (style) return style(x, weight);
  if (mx) return kernels::mx_linear(kernels::autocast_matmul_input(x), weight, *mx);  // as float8: x in autocast's dtype
  return local(x, weight, float8.get());
}

at::Tensor Linear::local(const at::Tensor& x, const at::Tensor& weight, const kernels::Float8Config* float8) {
  // As torchao's Float8Linear under autocast: the input in the autocast dtype, the weight cast to
  // float8 from its own (the float32 master weight on one process).
  if (float8) return kernels::float8_linear(kernels::autocast_matmul_input(x), weight, *float8);
  return kernels::linear(x, weight);
}

at::Tensor Embedding::forward(const at::Tensor& tokens) const {
  return style ? style(tokens, weight) : at::embedding(weight, tokens);
}

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
  return fused ? kernels::rms_norm(x, weight, eps) : kernels::rms_norm_reference(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> RMSNorm::add_forward(const at::Tensor& x, const at::Tensor& delta) const {
  return fused ? kernels::add_rms_norm(x, delta, weight, eps) : kernels::add_rms_norm_reference(x, delta, weight, eps);
}

double DecoderArgs::softmax_scale() const {
  double s = 1.0 / std::sqrt(static_cast<double>(mla ? mla->qk_head_dim() : head_dim));
  if (yarn && max_seq_len > yarn->original_seq_len) {
    const double m = 0.1 * yarn->mscale * std::log(yarn->factor) + 1.0;
    s *= m * m;
  }
  return s;
}

namespace {

int64_t attention_params(const DecoderArgs& a) {
  if (!a.mla) return 2 * a.dim * a.n_heads * a.head_dim + 2 * a.dim * a.n_kv_heads * a.head_dim + (a.qk_norm ? 2 * a.head_dim : 0);
  const MlaArgs& m = *a.mla;
  const int64_t H = a.n_heads, D = a.dim, q_out = H * m.qk_head_dim();
  const int64_t q = m.q_lora_rank == 0 ? D * q_out : D * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * q_out;
  return q + D * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank +
         m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim) + H * m.v_head_dim * D;
}

int64_t moe_layers(const DecoderArgs& a) { return a.moe ? std::max<int64_t>(a.n_layers - a.n_dense_layers, 0) : 0; }

}  // namespace

int64_t block_params(const DecoderArgs& a, int64_t layer) {
  const int64_t ffn = a.moe_layer(layer) ? moe_params(*a.moe, a.dim, a.moe_inter_dim).total() : 3 * a.dim * a.ffn_hidden_dim;
  return attention_params(a) + ffn + 2 * a.dim;
}

int64_t mean_block_params(const DecoderArgs& a) {
  if (a.n_layers <= 0) return 0;
  return (num_params(a) - a.vocab_size * a.dim * (a.tied_embeddings ? 1 : 2) - a.dim) / a.n_layers;
}

MoeParams moe_params(const DecoderArgs& a) {
  if (!a.moe) return {};
  const MoeParams one = moe_params(*a.moe, a.dim, a.moe_inter_dim);
  const int64_t n = moe_layers(a);
  return {one.router * n, one.shared * n, one.experts * n};
}

namespace {

// torchtitan's split: dense (the embedding included, a tied table once), sparse, and active.
struct ParamSplit {
  int64_t dense, sparse, active;
};
ParamSplit param_split(const DecoderArgs& a) {
  const MoeParams m = moe_params(a);
  const int64_t dense = num_params(a) - m.total();
  const int64_t active_sparse = a.moe ? m.router + m.shared + m.experts * a.moe->top_k / a.moe->num_experts : 0;
  return {dense, m.total(), dense + active_sparse};
}

}  // namespace

int64_t moe_flops_per_token(const DecoderArgs& a, int64_t seq_len) {
  const ParamSplit p = param_split(a);
  // The attention's scores and values: 6 x layers x heads x (query-key + value widths) x seq_len.
  const int64_t head_dims = a.mla ? a.mla->qk_head_dim() + a.mla->v_head_dim : 2 * a.head_dim;
  return 6 * (p.active - a.vocab_size * a.dim) + 6 * a.n_layers * a.n_heads * head_dims * seq_len;
}

std::string moe_count_line(const DecoderArgs& a) {
  const ParamSplit p = param_split(a);
  return "Total parameter count: dense " + log::with_commas(p.dense) + ", sparse " + log::with_commas(p.sparse) +
         ", active " + log::with_commas(p.active);
}

int64_t num_params(const DecoderArgs& a) {
  int64_t blocks = 0;
  for (int64_t i = 0; i < a.n_layers; ++i) blocks += block_params(a, i);
  return a.vocab_size * a.dim * (a.tied_embeddings ? 1 : 2) + blocks + a.dim;
}

RopeTable rope_table(const DecoderArgs& args, const at::TensorOptions& options) {
  const int64_t hd = args.rope_dim();
  const int64_t half = hd / 2;
  std::vector<float> freqs(half);
  // Llama 3.1 scaling: long wavelengths slowed by `factor`, short ones kept, smooth in between.
  constexpr double factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, old_ctx = 8192.0;
  const double low_freq_wavelen = old_ctx / low_freq_factor;
  const double high_freq_wavelen = old_ctx / high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    // Computed in float32 like the reference implementation, then scaled.
    const float base = 1.0f / std::pow(static_cast<float>(args.rope_theta),
                                       static_cast<float>(2 * i) / static_cast<float>(hd));
    double f = base;
    if (args.llama31_rope_scaling) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f = f / factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double s = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
        f = (1.0 - s) * f / factor + s * f;
      }
    }
    freqs[i] = static_cast<float>(f);
  }
  if (args.yarn && args.max_seq_len > args.yarn->original_seq_len) {
    // The dims that turn fewer than beta_fast..beta_slow times over the original context ramp
    // from kept to divided by `factor`, in float32 as the reference computes them.
    const YarnArgs& y = *args.yarn;
    const double two_pi = 2 * std::numbers::pi, log_base = std::log(args.rope_theta);
    auto correction_dim = [&](double rotations) {
      return static_cast<double>(hd) * std::log(static_cast<double>(y.original_seq_len) / (rotations * two_pi)) /
             (2 * log_base);
    };
    const double low = std::max(std::floor(correction_dim(y.beta_fast)), 0.0);
    double high = std::min(std::ceil(correction_dim(y.beta_slow)), static_cast<double>(hd - 1));
    if (low == high) high += 0.001;
    const float span = static_cast<float>(high - low), factor = static_cast<float>(y.factor);
    for (int64_t i = 0; i < half; ++i) {
      const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(low)) / span, 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      freqs[i] = freqs[i] / factor * (1.0f - smooth) + freqs[i] * smooth;
    }
  }
  auto opts = options.dtype(at::kFloat);
  if (opts.device().is_meta()) {  // shapes only: a dry run allocates nothing
    auto shape = std::vector<int64_t>{args.max_seq_len, half};
    return {at::empty(shape, opts), at::empty(shape, opts)};
  }
  auto cpu_f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor inv = at::from_blob(freqs.data(), {half}, cpu_f32).clone();
  at::Tensor t = at::arange(args.max_seq_len, cpu_f32);
  at::Tensor angles = at::outer(t, inv);  // (T, hd/2)
  return {angles.cos().to(opts.device()), angles.sin().to(opts.device())};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope) {
  return kernels::rope(x, rope.cos, rope.sin);  // (B,T,H,hd) -> (B,T,H,hd)
}

double Attention::scale() const {
  return softmax_scale > 0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> Attention::mla_qkv(
    const at::Tensor& x, const std::function<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>&
                             rotate) const {
  const Mla& m = *mla;
  const MlaArgs& a = m.args;
  const int64_t B = x.size(0), T = x.size(1), nope = a.qk_nope_head_dim, r = a.qk_rope_head_dim;
  at::Tensor q = (m.q_norm ? m.wq_b.forward(m.q_norm->forward(m.wq_a.forward(x))) : wq.forward(x))
                     .view({B, T, -1, a.qk_head_dim()});
  const int64_t H = q.size(2);
  const at::Tensor kv = m.wkv_a.forward(x);  // (B,T,kv_lora_rank + r): the latent, then the shared rotary key
  auto [q_pe, k_pe] = rotate(q.narrow(-1, nope, r).contiguous(), kv.narrow(-1, a.kv_lora_rank, r).unsqueeze(2).contiguous());
  const at::Tensor kv_heads = m.wkv_b.forward(m.kv_norm.forward(kv.narrow(-1, 0, a.kv_lora_rank).contiguous()))
                                  .view({B, T, -1, nope + a.v_head_dim});  // (B,T,H,nope+v)
  at::Tensor k = at::cat({kv_heads.narrow(-1, 0, nope), k_pe.expand({B, T, H, r})}, -1);
  return {at::cat({q.narrow(-1, 0, nope), q_pe}, -1), k, kv_heads.narrow(-1, nope, a.v_head_dim)};
}

at::Tensor Attention::forward(const at::Tensor& x_in, const RopeTable& rope, const at::Tensor& doc_starts) const {
  at::Tensor q, k, v;
  if (mla) {
    std::tie(q, k, v) = mla_qkv(prepare_input ? prepare_input(x_in) : x_in, [&](const at::Tensor& a, const at::Tensor& b) {
      return fused ? kernels::rope_qk(a, b, rope.cos, rope.sin) : kernels::rope_qk_reference(a, b, rope.cos, rope.sin);
    });
  } else {
    std::vector<at::Tensor> qkv;
    if (project) {
      qkv = project(x_in);
    } else {
      const at::Tensor x = prepare_input ? prepare_input(x_in) : x_in;
      qkv = {wq.forward(x), wk.forward(x), wv.forward(x)};
    }
    const int64_t B = qkv[0].size(0), T = qkv[0].size(1);
    // Heads from the tensors: all of them, or a tensor-parallel rank's share.
    q = qkv[0].view({B, T, -1, head_dim});
    k = qkv[1].view({B, T, -1, head_dim});
    if (q_norm) q = q_norm->forward(q);  // per head, before RoPE
    if (k_norm) k = k_norm->forward(k);
    v = qkv[2].view({B, T, -1, head_dim});
    std::tie(q, k) = fused ? kernels::rope_qk(q, k, rope.cos, rope.sin) : kernels::rope_qk_reference(q, k, rope.cos, rope.sin);
  }
  const int64_t B = q.size(0), T = q.size(1), vd = v.size(3), qd = q.size(3);
  // MLA's values are narrower than its queries and keys: zero-padded to their width, every
  // attention kernel (and context parallelism) takes them, and the padded columns of the output,
  // zeros, are dropped.
  if (vd < qd) v = at::constant_pad_nd(v, {0, qd - vd});
  // (B,H,T,hd); causal; with GQA each kv head serves H / H_kv query heads
  at::Tensor o = split ? split->attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale(), doc_starts)
                       : kernels::attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale(), fused,
                                            doc_starts);
  if (vd < qd) o = o.narrow(-1, 0, vd);
  return wo.forward(o.transpose(1, 2).reshape({B, T, -1}));
}

namespace {

// Rotates interleaved pairs of x (B,T,H,hd) by per-row angles: cos, sin (B,T,hd/2).
at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const auto sizes = x.sizes().vec();
  const at::Tensor pairs = x.to(at::kFloat).reshape({sizes[0], sizes[1], sizes[2], sizes[3] / 2, 2});
  const at::Tensor a = pairs.select(-1, 0), b = pairs.select(-1, 1);
  const at::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);
  return at::stack({a * c - b * s, a * s + b * c}, -1).reshape(sizes).to(x.scalar_type());
}

struct KvCache final : GenerationCache {
  std::vector<at::Tensor> k, v;  // per block: (B, H_kv, capacity, hd)
  RopeTable rope;                // capacity positions
  int64_t length = 0, capacity = 0;
  int64_t bytes() const override {
    int64_t n = 0;
    for (const auto* side : {&k, &v})
      for (const auto& t : *side) n += t.numel() * static_cast<int64_t>(t.element_size());
    return n;
  }
};

}  // namespace

at::Tensor Attention::forward_cached(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                     const at::Tensor& allowed, at::Tensor& k_cache, at::Tensor& v_cache,
                                     int64_t start) const {
  const int64_t B = x.size(0), T = x.size(1), L = start + T;
  at::Tensor q, k, v;
  if (mla) {
    std::tie(q, k, v) = mla_qkv(x, [&](const at::Tensor& a, const at::Tensor& b) {
      return std::make_tuple(rope_rows(a, cos, sin), rope_rows(b, cos, sin));
    });
  } else {
    q = wq.forward(x).view({B, T, -1, head_dim});
    k = wk.forward(x).view({B, T, -1, head_dim});
    v = wv.forward(x).view({B, T, -1, head_dim});
    if (q_norm) q = q_norm->forward(q);
    if (k_norm) k = k_norm->forward(k);
    q = rope_rows(q, cos, sin);
    k = rope_rows(k, cos, sin);
  }
  k_cache.narrow(2, start, T).copy_(k.transpose(1, 2));
  v_cache.narrow(2, start, T).copy_(v.transpose(1, 2));
  at::Tensor keys = k_cache.narrow(2, 0, L), values = v_cache.narrow(2, 0, L);
  const int64_t heads = q.size(2), kv_heads = keys.size(1);
  if (heads != kv_heads) {  // each key/value head serves heads / kv_heads consecutive query heads
    keys = keys.repeat_interleave(heads / kv_heads, 1);
    values = values.repeat_interleave(heads / kv_heads, 1);
  }
  at::Tensor scores = at::matmul(q.transpose(1, 2), keys.transpose(-1, -2)).to(at::kFloat) * scale();  // (B,H,T,L)
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  const at::Tensor o = at::matmul(scores.softmax(-1).to(values.scalar_type()), values);  // (B,H,T,v_hd)
  return wo.forward(o.transpose(1, 2).reshape({B, T, -1}));
}

at::Tensor TransformerBlock::forward_cached(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                            const at::Tensor& allowed, at::Tensor& k_cache, at::Tensor& v_cache,
                                            int64_t start) const {
  auto [h, h_normed] = ffn_norm.add_forward(
      x, attention.forward_cached(attention_norm.forward(x), cos, sin, allowed, k_cache, v_cache, start));
  return h + feed_forward_out(h_normed);
}

at::Tensor TransformerBlock::feed_forward_out(const at::Tensor& h_normed) const {
  return moe ? moe->forward(h_normed) : feed_forward.forward(h_normed);
}

at::Tensor FeedForward::forward(const at::Tensor& x_in) const {
  at::Tensor a, b;  // (B,T,F) each
  if (project) {
    auto ab = project(x_in);
    a = ab[0];
    b = ab[1];
  } else {
    const at::Tensor x = prepare_input ? prepare_input(x_in) : x_in;
    a = w1.forward(x);
    b = w3.forward(x);
  }
  return w2.forward(fused ? kernels::swiglu(a, b) : kernels::swiglu_reference(a, b));
}

at::Tensor TransformerBlock::forward(const at::Tensor& x, const RopeTable& rope, const at::Tensor& doc_starts) const {
  auto [h, h_normed] = ffn_norm.add_forward(x, attention.forward(attention_norm.forward(x), rope, doc_starts));
  return h + feed_forward_out(h_normed);
}

std::vector<NamedParam> TransformerBlock::named_parameters(const std::string& p) {
  std::vector<NamedParam> out;
  if (attention.mla) {  // torchtitan's order: the query's layers, the key/value latent's, wo
    Mla& m = *attention.mla;
    if (m.q_norm) {
      out.push_back({p + "attention.wq_a.weight", &m.wq_a.weight});
      out.push_back({p + "attention.q_norm.weight", &m.q_norm->weight});
      out.push_back({p + "attention.wq_b.weight", &m.wq_b.weight});
    } else {
      out.push_back({p + "attention.wq.weight", &attention.wq.weight});
    }
    out.push_back({p + "attention.wkv_a.weight", &m.wkv_a.weight});
    out.push_back({p + "attention.kv_norm.weight", &m.kv_norm.weight});
    out.push_back({p + "attention.wkv_b.weight", &m.wkv_b.weight});
    out.push_back({p + "attention.wo.weight", &attention.wo.weight});
  } else {
    out = {{p + "attention.wq.weight", &attention.wq.weight},
           {p + "attention.wk.weight", &attention.wk.weight},
           {p + "attention.wv.weight", &attention.wv.weight},
           {p + "attention.wo.weight", &attention.wo.weight}};
  }
  if (attention.q_norm) {
    out.push_back({p + "attention.q_norm.weight", &attention.q_norm->weight});
    out.push_back({p + "attention.k_norm.weight", &attention.k_norm->weight});
  }
  if (moe) {  // torchtitan's order: experts, router, shared experts
    out.push_back({p + "moe.experts.w1", &moe->w1});
    out.push_back({p + "moe.experts.w2", &moe->w2});
    out.push_back({p + "moe.experts.w3", &moe->w3});
    out.push_back({p + "moe.router.gate.weight", &moe->gate});
    if (moe->gate_bias.defined()) out.push_back({p + "moe.router.gate.bias", &moe->gate_bias});
    if (moe->shared_w1.defined()) {
      out.push_back({p + "moe.shared_experts.w1.weight", &moe->shared_w1});
      out.push_back({p + "moe.shared_experts.w2.weight", &moe->shared_w2});
      out.push_back({p + "moe.shared_experts.w3.weight", &moe->shared_w3});
    }
  } else {
    out.push_back({p + "feed_forward.w1.weight", &feed_forward.w1.weight});
    out.push_back({p + "feed_forward.w2.weight", &feed_forward.w2.weight});
    out.push_back({p + "feed_forward.w3.weight", &feed_forward.w3.weight});
  }
  out.push_back({p + "attention_norm.weight", &attention_norm.weight});
  out.push_back({p + "ffn_norm.weight", &ffn_norm.weight});
  return out;
}

std::vector<at::Tensor*> TransformerBlock::weight_slots() {
  std::vector<at::Tensor*> out;
  for (auto& p : named_parameters("")) out.push_back(p.tensor);
  return out;
}

Decoder::Decoder(const DecoderArgs& args, const at::TensorOptions& options) : dargs_(args) {
  const int64_t D = args.dim, hd = args.head_dim, F = args.ffn_hidden_dim;
  auto param = [&](at::IntArrayRef shape) { return at::empty(shape, options).requires_grad_(true); };
  tok_embeddings_.weight = param({args.vocab_size, D});
  layers_.resize(args.n_layers);
  for (int64_t i = 0; i < args.n_layers; ++i) {
    TransformerBlock& b = layers_[i];
    b.layer_id = i;
    b.attention.head_dim = hd;
    b.attention.softmax_scale = args.softmax_scale();
    if (args.mla) {
      const MlaArgs& a = *args.mla;
      const int64_t H = args.n_heads;
      Mla m;
      m.args = a;
      if (a.q_lora_rank > 0) {
        m.wq_a.weight = param({a.q_lora_rank, D});
        m.q_norm = RMSNorm{param({a.q_lora_rank}), args.norm_eps};
        m.wq_b.weight = param({H * a.qk_head_dim(), a.q_lora_rank});
      } else {
        b.attention.wq.weight = param({H * a.qk_head_dim(), D});
      }
      m.wkv_a.weight = param({a.kv_lora_rank + a.qk_rope_head_dim, D});
      m.kv_norm = RMSNorm{param({a.kv_lora_rank}), args.norm_eps};
      m.wkv_b.weight = param({H * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank});
      b.attention.wo.weight = param({D, H * a.v_head_dim});
      b.attention.mla = std::move(m);
    } else {
      b.attention.wq.weight = param({args.n_heads * hd, D});
      b.attention.wk.weight = param({args.n_kv_heads * hd, D});
      b.attention.wv.weight = param({args.n_kv_heads * hd, D});
      b.attention.wo.weight = param({D, args.n_heads * hd});
    }
    if (args.qk_norm) {
      b.attention.q_norm = RMSNorm{param({hd}), args.norm_eps};
      b.attention.k_norm = RMSNorm{param({hd}), args.norm_eps};
    }
    if (args.moe_layer(i)) {
      const MoeArgs& m = *args.moe;
      const int64_t E = m.num_experts, H = args.moe_inter_dim, S = m.num_shared_experts * H;
      b.moe = std::make_shared<MoeLayer>();
      b.moe->args = m;
      b.moe->w1 = param({E, H, D});
      b.moe->w2 = param({E, D, H});
      b.moe->w3 = param({E, H, D});
      b.moe->gate = param({E, D});
      if (m.gate_bias) b.moe->gate_bias = param({E});
      if (S > 0) {
        b.moe->shared_w1 = param({S, D});
        b.moe->shared_w2 = param({D, S});
        b.moe->shared_w3 = param({S, D});
      }
      const auto f32 = options.dtype(at::kFloat).requires_grad(false);
      if (m.load_balance_coeff) b.moe->expert_bias = at::zeros({E}, f32);
      b.moe->tokens_per_expert = at::zeros({E}, f32);
    } else {
      b.feed_forward.w1.weight = param({F, D});
      b.feed_forward.w2.weight = param({D, F});
      b.feed_forward.w3.weight = param({F, D});
    }
    b.attention_norm = {param({D}), args.norm_eps};
    b.ffn_norm = {param({D}), args.norm_eps};
  }
  norm_ = {param({D}), args.final_norm_eps.value_or(args.norm_eps)};
  output_.weight = args.tied_embeddings ? tok_embeddings_.weight : param({args.vocab_size, D});
  rope_ = rope_table(args, options);
  runners_.assign(args.n_layers, BlockRunner{});
  for (int64_t i = 0; i < args.n_layers; ++i) {
    blocks_.push_back([this, i](const at::Tensor& x, const BlockContext& context) {
      if (!context.positions.defined()) return layers_[i].forward(x, rope_, context.doc_starts);
      const RopeTable at_positions{rope_.cos.index_select(0, context.positions),
                                   rope_.sin.index_select(0, context.positions)};
      return layers_[i].forward(x, at_positions, context.doc_starts);
    });
    block_slots_.push_back(layers_[i].weight_slots());
  }
}

void Decoder::set_sequence_split(std::shared_ptr<SequenceSplit> split) {
  split_ = std::move(split);
  for (auto& b : layers_) b.attention.split = split_.get();
}

std::vector<ModelPart> Decoder::parts() {
  std::vector<ModelPart> parts;
  parts.push_back({"tok_embeddings", {{"tok_embeddings.weight", &tok_embeddings_.weight}}});
  for (auto& b : layers_) {
    const std::string name = "layers." + std::to_string(b.layer_id);
    parts.push_back({name, b.named_parameters(name + ".")});
  }
  ModelPart head{"output", {{"norm.weight", &norm_.weight}}};
  if (!dargs_.tied_embeddings) head.params.push_back({"output.weight", &output_.weight});
  parts.push_back(head);
  return parts;
}

void Decoder::init_buffers(const at::TensorOptions& options) {
  rope_ = rope_table(dargs_, options);
  for (auto& b : layers_) {
    if (!b.moe) continue;
    auto zeros_there = [&](at::Tensor& t) {
      if (t.defined() && t.device() != options.device()) t = at::zeros(t.sizes(), options.dtype(at::kFloat));
    };
    zeros_there(b.moe->expert_bias);
    zeros_there(b.moe->tokens_per_expert);
  }
}

std::vector<NamedParam> Decoder::named_buffers() {
  std::vector<NamedParam> out;
  for (auto& b : layers_)
    if (b.moe && b.moe->expert_bias.defined())
      out.push_back({"layers." + std::to_string(b.layer_id) + ".moe.expert_bias", &b.moe->expert_bias});
  return out;
}

std::vector<ExpertLoad> Decoder::expert_loads() {
  std::vector<ExpertLoad> out;
  for (auto& b : layers_) {
    if (!b.moe) continue;
    ExpertLoad load{"layers." + std::to_string(b.layer_id), b.moe->tokens_per_expert, b.moe->expert_bias,
                    b.moe->args.load_balance_coeff, {}};
    if (load.coeff)
      load.update_bias = [moe = b.moe](const at::Tensor& tokens) {
        update_expert_bias(moe->expert_bias, tokens, *moe->args.load_balance_coeff);
      };
    out.push_back(std::move(load));
  }
  return out;
}

std::vector<NamedParam> Decoder::named_parameters() {
  std::vector<NamedParam> out{{"tok_embeddings.weight", &tok_embeddings_.weight}};
  for (auto& b : layers_) {
    auto block = b.named_parameters("layers." + std::to_string(b.layer_id) + ".");
    out.insert(out.end(), block.begin(), block.end());
  }
  out.push_back({"norm.weight", &norm_.weight});
  if (!dargs_.tied_embeddings) out.push_back({"output.weight", &output_.weight});
  return out;
}

std::vector<std::string> Decoder::part_modules(size_t index) const {
  if (index == 0) return {"tok_embeddings"};
  if (index <= layers_.size()) return {"layers." + std::to_string(layers_[index - 1].layer_id)};
  return {"norm", "output"};
}

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void init_value_into(const DecoderArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                     at::IntArrayRef offsets, at::Tensor& out) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.is_cpu(),
              "init_value_into: out must be a contiguous float32 CPU tensor");
  if (ends_with(name, "norm.weight")) {
    out.fill_(1.0);
    return;
  }
  const CounterRng::Box box{shape.vec(), offsets.empty() ? std::vector<int64_t>(shape.size(), 0) : offsets.vec(),
                            out.sizes().vec()};
  const CounterRng rng(seed, name);
  float* dst = out.data_ptr<float>();
  const bool output_init = name == "output.weight" ||
                           (name == "tok_embeddings.weight" && args.tied_embeddings && args.tied_table_takes_output_init);
  if (output_init) {
    const double std = 1.0 / std::sqrt(static_cast<double>(args.dim));
    rng.fill_trunc_normal(dst, box, std, -3 * std, 3 * std);
  } else if (name == "tok_embeddings.weight") {
    rng.fill_normal(dst, box, 0.0, 1.0);
  } else if (ends_with(name, "moe.router.gate.bias")) {
    out.zero_();
  } else {  // block weights: "layers.<id>.<module>.<linear>.weight", or "layers.<id>.moe.experts.w<n>"
    const int64_t layer_id = std::stoll(name.substr(7, name.find('.', 7) - 7));
    const double depth_std = 0.02 / std::sqrt(2.0 * (args.depth_init ? layer_id + 1 : args.n_layers));
    // As torchtitan: w1 (and the attention's wq wk wv) at 0.02, the rest at the block's depth std;
    // the router's gate too.
    const bool depth_scaled = ends_with(name, "wo.weight") || ends_with(name, "w2.weight") ||
                              ends_with(name, "w3.weight") || ends_with(name, "experts.w2") ||
                              ends_with(name, "experts.w3") || ends_with(name, "router.gate.weight");
    rng.fill_trunc_normal(dst, box, depth_scaled ? depth_std : 0.02, -2.0, 2.0);
  }
}

at::Tensor init_value(const DecoderArgs& args, const std::string& name, at::IntArrayRef shape, uint64_t seed,
                      at::IntArrayRef offsets, at::IntArrayRef sizes) {
  at::Tensor t = at::empty(sizes.empty() ? shape : sizes, at::TensorOptions().dtype(at::kFloat));
  init_value_into(args, name, shape, seed, offsets, t);
  return t;
}

void Decoder::init_weights(uint64_t seed) {
  at::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    if (p.tensor->is_meta()) continue;
    p.tensor->copy_(init_value(dargs_, p.name, p.tensor->sizes(), seed));
  }
}

void Decoder::set_fused_kernels(bool blocks, bool loss) {
  for (auto& b : layers_) {
    b.attention_norm.fused = b.ffn_norm.fused = blocks;
    if (b.attention.q_norm) b.attention.q_norm->fused = b.attention.k_norm->fused = blocks;
    if (b.attention.mla) {
      if (b.attention.mla->q_norm) b.attention.mla->q_norm->fused = blocks;
      b.attention.mla->kv_norm.fused = blocks;
    }
    b.attention.fused = b.feed_forward.fused = blocks;
    if (b.moe) b.moe->fused = blocks;
  }
  norm_.fused = blocks;
  fused_loss_ = loss;
}

at::Tensor Decoder::forward_parts(const at::Tensor& x, const at::Tensor* labels, size_t first, size_t last,
                                  const at::Tensor* tokens) const {
  TORCH_CHECK(first < last && last <= num_parts(), "forward_parts: bad range [", first, ", ", last, ")");
  BlockContext context;
  const bool blocks = last > 1 && first <= layers_.size();
  if (document_eos_ >= 0 && blocks) {  // the blocks attend within documents
    TORCH_CHECK(first == 0 || tokens, "forward_parts: block-causal attention needs the batch's tokens");
    const at::Tensor& t = first == 0 ? x : *tokens;
    context.doc_starts = split_ ? split_->document_starts(t, document_eos_) : kernels::document_starts(t, document_eos_);
  }
  if (split_ && blocks)  // the tokens' length (a hidden state's may be split further by sequence parallelism)
    context.positions = split_->positions((first == 0 || !tokens ? x : *tokens).size(1), rope_.cos.device());
  size_t part = first;
  auto before = [&](const std::string& name) {
    if (hooks_) hooks_->before(part, name);
  };
  auto after = [&](const std::string& name, at::Tensor out) {
    out = hooks_ ? hooks_->after(part, name, out) : out;
    ++part;
    return out;
  };
  at::Tensor h = x;
  if (first == 0) {
    before("tok_embeddings");
    h = after("tok_embeddings", tok_embeddings_.forward(x));  // (B,T,D)
  }
  const size_t end_layer = std::min(last, layers_.size() + 1) - 1;  // layers [part - 1, end_layer)
  for (size_t i = part - 1; i < end_layer; ++i) {
    const std::string name = "layers." + std::to_string(i);
    before(name);
    h = runners_[i] ? runners_[i](blocks_[i], h, context, block_slots_[i]) : blocks_[i](h, context);
    h = after(name, h);
  }
  if (last < num_parts()) return h;
  before("output");
  // Tied: the head reads the embedding table as it is now (data parallelism may have swapped it).
  const at::Tensor& head = dargs_.tied_embeddings ? tok_embeddings_.weight : output_.weight;
  h = norm_.forward(h);
  if (!labels) return after("output", at::linear(h, head));  // (B,T,V)
  if (head_loss_style_) return after("output", head_loss_style_(h, head, *labels));  // (B,T)
  return after("output", fused_loss_ ? kernels::linear_cross_entropy(h, head, *labels)
                                     : kernels::linear_cross_entropy_reference(h, head, *labels));  // (B,T)
}

std::unique_ptr<GenerationCache> Decoder::new_cache(int64_t batch, int64_t capacity) const {
  auto cache = std::make_unique<KvCache>();
  const at::TensorOptions options = tok_embeddings_.weight.options().requires_grad(false);
  for (const auto& b : layers_) {
    if (dargs_.mla) {  // every head's key and value (MLA's latent is expanded)
      const MlaArgs& m = *dargs_.mla;
      const int64_t heads = b.attention.wo.weight.size(1) / m.v_head_dim;
      cache->k.push_back(at::zeros({batch, heads, capacity, m.qk_head_dim()}, options));
      cache->v.push_back(at::zeros({batch, heads, capacity, m.v_head_dim}, options));
      continue;
    }
    const int64_t kv_heads = b.attention.wk.weight.size(0) / dargs_.head_dim;
    cache->k.push_back(at::zeros({batch, kv_heads, capacity, dargs_.head_dim}, options));
    cache->v.push_back(at::zeros({batch, kv_heads, capacity, dargs_.head_dim}, options));
  }
  DecoderArgs wide = dargs_;
  wide.max_seq_len = capacity;
  cache->rope = rope_table(wide, options);
  cache->capacity = capacity;
  return cache;
}

at::Tensor Decoder::forward_cached(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_valid,
                                   GenerationCache& generation_cache) const {
  auto& cache = dynamic_cast<KvCache&>(generation_cache);
  const int64_t B = tokens.size(0), T = tokens.size(1), start = cache.length, L = start + T;
  TORCH_CHECK(L <= cache.capacity && key_valid.size(1) == L, "forward_cached: columns past the cache");
  at::NoGradGuard no_grad;
  const at::Tensor cos = cache.rope.cos.index({positions}), sin = cache.rope.sin.index({positions});  // (B,T,hd/2)
  // Query column start+i sees key column j <= start+i that holds a real token; a padding column
  // sees itself alone, so that nothing is all masked.
  const auto opts = at::TensorOptions().dtype(at::kLong).device(tokens.device());
  const at::Tensor query_col = at::arange(start, L, opts).view({1, 1, T, 1});
  const at::Tensor key_col = at::arange(L, opts).view({1, 1, 1, L});
  const at::Tensor allowed =
      key_col.le(query_col).logical_and(key_valid.view({B, 1, 1, L}).logical_or(key_col.eq(query_col)));
  at::Tensor h = tok_embeddings_.forward(tokens);
  for (size_t i = 0; i < layers_.size(); ++i)
    h = layers_[i].forward_cached(h, cos, sin, allowed, cache.k[i], cache.v[i], start);
  cache.length = L;
  const at::Tensor& head = dargs_.tied_embeddings ? tok_embeddings_.weight : output_.weight;
  return at::linear(norm_.forward(h.narrow(1, T - 1, 1)), head).squeeze(1).to(at::kFloat);
}

at::Tensor Decoder::forward(const at::Tensor& tokens) const { return forward_parts(tokens, nullptr, 0, num_parts()); }

at::Tensor Decoder::forward_loss(const at::Tensor& tokens, const at::Tensor& labels) const {
  return forward_parts(tokens, &labels, 0, num_parts());
}

}  // namespace titan::models::common
