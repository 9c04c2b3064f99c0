#include "titan/kernels/float8.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <limits>

namespace titan::kernels {

namespace {

constexpr double kEps = 1e-12;

double float8_max(at::ScalarType dtype) { return dtype == at::kFloat8_e4m3fn ? 448.0 : 57344.0; }

// One GEMM a (M,K) @ b (K,N) of float8 operands, the result in `out_dtype`.
at::Tensor scaled_mm(const Float8Tensor& a, const Float8Tensor& b, at::ScalarType out_dtype, bool emulate,
                     bool fast_accum) {
  if (emulate)
    return at::mm(a.data.to(at::kFloat) / a.scale, b.data.to(at::kFloat) / b.scale).to(out_dtype);
  // at::_scaled_mm: a row-major, b column-major, the inverse scales; rowwise scales as (M,1) and
  // (1,N) float32 with a bfloat16 result.
  const at::Tensor ad = a.data.contiguous(), bd = b.data.t().contiguous().t();
  at::Tensor sa = a.scale.reciprocal(), sb = b.scale.reciprocal();
  const bool rowwise = sa.numel() > 1 || sb.numel() > 1;
  if (rowwise) {  // a mixed pair repeats the tensorwise scale along the axis
    sa = sa.numel() > 1 ? sa.reshape({-1, 1}) : sa.reshape({1, 1}).expand({ad.size(0), 1}).contiguous();
    sb = sb.numel() > 1 ? sb.reshape({1, -1}) : sb.reshape({1, 1}).expand({1, bd.size(1)}).contiguous();
  }
  const at::ScalarType mm_dtype = rowwise && out_dtype != at::kBFloat16 ? at::kBFloat16 : out_dtype;
  at::Tensor out = at::_scaled_mm(ad, bd, sa, sb, std::nullopt, std::nullopt, mm_dtype, fast_accum);
  return out.to(out_dtype);
}

struct Casts {
  at::ScalarType input, weight, grad;  // float8 dtypes
  bool rowwise, pow2;
};

Casts casts_of(Float8Recipe r) {
  if (r == Float8Recipe::kTensorwise) return {at::kFloat8_e4m3fn, at::kFloat8_e4m3fn, at::kFloat8_e5m2, false, false};
  return {at::kFloat8_e4m3fn, at::kFloat8_e4m3fn, at::kFloat8_e4m3fn, true, true};
}

// The scale axis of an operand: its contraction dim for the rowwise recipes, none for tensorwise.
std::optional<int64_t> along(bool rowwise, int64_t dim) { return rowwise ? std::optional<int64_t>(dim) : std::nullopt; }

// The metadata that carries a weight's float8 value (attach_float8_weight). Shallow copies of
// the weight (detach) share it.
struct AttachedFloat8 final : c10::BackendMeta {
  explicit AttachedFloat8(Float8Tensor v) : value(std::move(v)) {}
  c10::intrusive_ptr<c10::BackendMeta> clone(const c10::intrusive_ptr<c10::BackendMeta>& ptr) const override {
    return ptr;
  }
  Float8Tensor value;
};

// Which amax reduction an operand's scale needs under tensor parallelism: `split` is the
// operand's dimension (of 2) that is split over the group, if any; `scale_dim` the dimension
// its rowwise scale runs along (none: tensorwise). Null when the local amax is the whole's.
const std::function<void(at::Tensor&)>* reduce_if_split(const Float8Split& s, std::optional<int64_t> split,
                                                         std::optional<int64_t> scale_dim) {
  if (!split || !s.max_over_group) return nullptr;
  if (scale_dim && (*scale_dim + 2) % 2 != *split) return nullptr;
  return &s.max_over_group;
}

// The split dims of the 2-D operands: x (M,K) and go (M,N) by the layer's split, w^T (K,N).
std::optional<int64_t> x_split_of(const Float8Split& s) { return s.weight_dim == 1 ? std::optional<int64_t>(1) : std::nullopt; }
std::optional<int64_t> go_split_of(const Float8Split& s) { return s.weight_dim == 0 ? std::optional<int64_t>(1) : std::nullopt; }
std::optional<int64_t> wt_split_of(const Float8Split& s) {
  return s.weight_dim < 0 ? std::nullopt : std::optional<int64_t>(s.weight_dim == 1 ? 0 : 1);
}

struct Float8LinearFunction : public torch::autograd::Function<Float8LinearFunction> {
  // x (M,K), w (N,K) -> (M,N)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const Float8Config* config) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["config"] = reinterpret_cast<int64_t>(config);
    if (auto attached = attached_float8_weight(w)) {  // kept for backward: the saved w may be a copy
      ctx->saved_data["w8"] = attached->data;
      ctx->saved_data["w8_scale"] = attached->scale;
    }
    return float8_forward(x, float8_input_amax(x, *config), float8_forward_weight(w, *config), *config);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto* config = reinterpret_cast<const Float8Config*>(ctx->saved_data["config"].toInt());
    std::optional<Float8Tensor> w8;
    if (ctx->saved_data.find("w8") != ctx->saved_data.end())
      w8 = Float8Tensor{ctx->saved_data["w8"].toTensor(), ctx->saved_data["w8_scale"].toTensor()};
    auto [grad_x, grad_w] = float8_linear_backward(saved[0], saved[1], grads[0], *config, w8);
    return {grad_x, grad_w, at::Tensor()};
  }
};

// The amax a cast of `t` (an input or an output gradient) scales by: per row (rowwise) or of the
// whole, over every tensor-parallel rank when `split` says its rows' contraction is split.
at::Tensor reduced_amax(const at::Tensor& t, const Float8Config& config, std::optional<int64_t> split) {
  at::NoGradGuard no_grad;
  const Casts c = casts_of(config.recipe);
  at::Tensor amax = c.rowwise ? t.abs().amax({-1}, /*keepdim=*/true) : t.abs().max();
  if (auto* reduce = reduce_if_split(config.split, split, along(c.rowwise, 1))) {
    amax = amax.contiguous();
    (*reduce)(amax);
  }
  return amax;
}

}  // namespace

at::Tensor float8_input_amax(const at::Tensor& x, const Float8Config& config) {
  return reduced_amax(x, config, x_split_of(config.split));
}

Float8Tensor float8_forward_weight(const at::Tensor& w, const Float8Config& config) {
  const Casts c = casts_of(config.recipe);
  if (auto attached = attached_float8_weight(w)) {
    TORCH_CHECK(!c.rowwise, "a float8 weight comes attached only with the tensorwise recipe");
    return {attached->data.t(), attached->scale};
  }
  return to_float8(w.t(), c.weight, along(c.rowwise, 0), c.pow2,
                   reduce_if_split(config.split, wt_split_of(config.split), along(c.rowwise, 0)));
}

at::Tensor float8_forward(const at::Tensor& x, const at::Tensor& x_amax, const Float8Tensor& wt,
                          const Float8Config& config) {
  const Casts c = casts_of(config.recipe);
  const at::Tensor scale = float8_scale(x_amax, c.input, c.pow2);
  return float8_output({cast_to_float8(x, scale, c.input), scale}, wt, x.scalar_type(), config);
}

at::Tensor float8_output(const Float8Tensor& x8, const Float8Tensor& wt, at::ScalarType out_dtype,
                         const Float8Config& config) {
  return scaled_mm(x8, wt, out_dtype, config.emulate, /*fast_accum=*/true);
}

at::Tensor float8_grad_amax(const at::Tensor& go, const Float8Config& config) {
  return reduced_amax(go, config, go_split_of(config.split));
}

Float8Tensor float8_backward_weight(const at::Tensor& w, const Float8Config& config,
                                    const std::optional<Float8Tensor>& w8) {
  at::NoGradGuard no_grad;
  const Casts c = casts_of(config.recipe);
  const Float8Split& sp = config.split;
  // grad_input = go (M,N) @ w (N,K): w scaled along N (per column k), or per tensor with
  // rowwise_with_gw_hp.
  const bool w_rowwise = c.rowwise && config.recipe != Float8Recipe::kRowwiseWithGwHp;
  std::optional<Float8Tensor> attached = w8 ? w8 : attached_float8_weight(w);
  const Float8Tensor wt = attached ? Float8Tensor{attached->data.t(), attached->scale}
                                   : to_float8(w.t(), c.weight, along(w_rowwise, -1), c.pow2,
                                               reduce_if_split(sp, wt_split_of(sp), along(w_rowwise, 1)));
  return {wt.data.t(), wt.scale.dim() > 0 ? wt.scale.t() : wt.scale};
}

at::Tensor float8_grad_input(const at::Tensor& go, const at::Tensor& go_amax, const Float8Tensor& wg,
                             const Float8Config& config) {
  at::NoGradGuard no_grad;
  const Casts c = casts_of(config.recipe);
  const at::Tensor scale = float8_scale(go_amax, c.grad, c.pow2);
  return scaled_mm({cast_to_float8(go, scale, c.grad), scale}, wg, go.scalar_type(), config.emulate,
                   /*fast_accum=*/false);
}

at::Tensor float8_grad_weight(const at::Tensor& x, const at::Tensor& go, const Float8Config& config,
                              const std::optional<Float8Tensor>& x8) {
  at::NoGradGuard no_grad;
  const Casts c = casts_of(config.recipe);
  const Float8Split& sp = config.split;
  TORCH_CHECK(!x8 || config.recipe == Float8Recipe::kTensorwise, "a float8 input comes cast only with the tensorwise recipe");
  // grad_weight = go^T (N,M) @ x (M,K): both scaled along M; in high precision for gw_hp.
  if (config.recipe == Float8Recipe::kRowwiseWithGwHp) return at::mm(go.t(), x.to(go.scalar_type()));
  const Float8Tensor gt0 = to_float8(go, c.grad, along(c.rowwise, 0), c.pow2,
                                     reduce_if_split(sp, go_split_of(sp), along(c.rowwise, 0)));
  const Float8Tensor gt{gt0.data.t(), gt0.scale.dim() > 0 ? gt0.scale.t() : gt0.scale};
  // Tensorwise, the cast of the forward (the same scale and values) serves here too.
  const Float8Tensor xs = x8 ? *x8
                             : to_float8(x, c.input, along(c.rowwise, 0), c.pow2,
                                         reduce_if_split(sp, x_split_of(sp), along(c.rowwise, 0)));
  return scaled_mm(gt, xs, go.scalar_type(), config.emulate, /*fast_accum=*/false);
}

std::pair<at::Tensor, at::Tensor> float8_linear_backward(const at::Tensor& x, const at::Tensor& w,
                                                         const at::Tensor& grad_out, const Float8Config& config,
                                                         const std::optional<Float8Tensor>& w8,
                                                         const std::optional<Float8Tensor>& x8) {
  const at::Tensor go = grad_out.contiguous();  // (M,N)
  const at::Tensor grad_x = float8_grad_input(go, float8_grad_amax(go, config), float8_backward_weight(w, config, w8),
                                              config);
  return {grad_x, float8_grad_weight(x, go, config, x8).to(w.scalar_type())};
}

std::optional<Float8Recipe> float8_recipe(std::string_view name) {
  if (name == "tensorwise") return Float8Recipe::kTensorwise;
  if (name == "rowwise") return Float8Recipe::kRowwise;
  if (name == "rowwise_with_gw_hp") return Float8Recipe::kRowwiseWithGwHp;
  return std::nullopt;
}

const char* float8_recipe_name(Float8Recipe recipe) {
  switch (recipe) {
    case Float8Recipe::kTensorwise: return "tensorwise";
    case Float8Recipe::kRowwise: return "rowwise";
    case Float8Recipe::kRowwiseWithGwHp: return "rowwise_with_gw_hp";
  }
  return "?";
}

at::Tensor float8_scale(const at::Tensor& amax, at::ScalarType float8_dtype, bool pow2) {
  at::NoGradGuard no_grad;
  at::Tensor scale = (float8_max(float8_dtype) / amax.to(at::kDouble).clamp_min(kEps)).to(at::kFloat);
  if (pow2) scale = at::exp2(at::floor(at::log2(scale)));
  return scale;
}

at::Tensor cast_to_float8(const at::Tensor& x, const at::Tensor& scale, at::ScalarType float8_dtype) {
  at::NoGradGuard no_grad;
  const double max = float8_max(float8_dtype);
  return (x.to(at::kFloat) * scale).clamp(-max, max).to(float8_dtype);
}

Float8Tensor to_float8(const at::Tensor& x, at::ScalarType float8_dtype, std::optional<int64_t> dim, bool pow2,
                       const std::function<void(at::Tensor&)>* max_amax) {
  at::NoGradGuard no_grad;
  at::Tensor amax = dim ? x.abs().amax({*dim}, /*keepdim=*/true) : x.abs().max();
  if (max_amax) {
    amax = amax.contiguous();
    (*max_amax)(amax);
  }
  const at::Tensor scale = float8_scale(amax, float8_dtype, pow2);
  return {cast_to_float8(x, scale, float8_dtype), scale};
}

void attach_float8_weight(at::Tensor& weight, Float8Tensor value) {
  weight.unsafeGetTensorImpl()->set_backend_meta(c10::make_intrusive<AttachedFloat8>(std::move(value)));
}

std::optional<Float8Tensor> attached_float8_weight(const at::Tensor& weight) {
  const auto ptr = weight.unsafeGetTensorImpl()->get_backend_meta_intrusive_ptr();
  const auto* meta = dynamic_cast<const AttachedFloat8*>(ptr.get());
  if (meta == nullptr) return std::nullopt;
  return meta->value;
}

at::Tensor float8_linear(const at::Tensor& x, const at::Tensor& weight, const Float8Config& config) {
  // The emulated GEMMs are float32 by definition: autocast must not lower them.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t K = x.size(-1);
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  const at::Tensor out = Float8LinearFunction::apply(x.reshape({-1, K}), weight, &config);
  return out.view(out_shape);
}

std::string float8_skip_reason(const std::string& fqn, int64_t out_features, int64_t in_features,
                               const std::vector<std::string>& filter_fqns, Float8Recipe recipe) {
  bool auto_filter = false;
  for (const auto& f : filter_fqns) {
    if (f == "auto_filter_small_kn") {
      auto_filter = true;
    } else if (!f.empty() && fqn.find(f) != std::string::npos) {
      return "filter_fqns has \"" + f + "\"";
    }
  }
  if (out_features % 16 != 0 || in_features % 16 != 0)
    return "dims " + std::to_string(out_features) + "x" + std::to_string(in_features) + " are not multiples of 16";
  if (!auto_filter) return "";
  const int64_t N = out_features, K = in_features;
  const std::string kn = " (auto_filter_small_kn: K " + std::to_string(K) + ", N " + std::to_string(N) + ")";
  if (recipe == Float8Recipe::kTensorwise) {
    if (K <= 4096 && N <= 1024) return "too small for float8 to pay" + kn;
  } else {
    if (N <= 2048 || K <= 1024 || (N <= 4096 && K <= 2048)) return "too small for float8 to pay" + kn;
  }
  return "";
}

}  // namespace titan::kernels
