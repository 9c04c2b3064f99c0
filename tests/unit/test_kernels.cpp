// Fused kernels against their reference paths, forward and backward, in float32 (tight) and
// bfloat16 (within a stated tolerance), on odd sizes too, in every CPU build this machine can
// run (DEFAULT, AVX2, AVX512); the chunked linear + cross entropy against the full one; the
// attention op against the math path.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "titan/kernels/attention_cpu.h"
#include "titan/kernels/cpu/fused_cpu.h"
#include "titan/kernels/float8.h"
#include "titan/kernels/mx.h"
#include "titan/kernels/fused_ops.h"
#include "titan/kernels/linear_cross_entropy.h"
#include "titan/kernels/ops.h"

namespace k = titan::kernels;

namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// float32: relative to the magnitude, 1e-5; bfloat16: two bf16 steps (2^-7 relative) of it.
double tolerance(at::ScalarType dtype, const at::Tensor& ref) {
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  return (dtype == at::kFloat ? 1e-5 : 2 * 7.8e-3) * scale;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, at::ScalarType dtype, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_LE(max_abs_diff(got, want), tolerance(dtype, want)) << what;
}

// Runs `body` once per CPU build this machine can run, with that build forced.
template <typename F>
void for_each_cpu_build(F body) {
  int ran = 0;
  for (const char* cap : {"DEFAULT", "AVX2", "AVX512"}) {
    const auto* table = k::cpu::cpu_table_named(cap);
    if (!table) continue;
    k::cpu::use_cpu_table(table);
    body(std::string(cap));
    ++ran;
  }
  k::cpu::use_cpu_table(nullptr);
  EXPECT_GE(ran, 1);
}

std::string grad_fn_name(const at::Tensor& t) { return t.grad_fn() ? t.grad_fn()->name() : "(none)"; }

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

}  // namespace

TEST(Kernels, RmsNormMatchesReference) {
  for_each_cpu_build([](const std::string& cap) {
    at::manual_seed(1);
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (std::vector<int64_t> shape : {std::vector<int64_t>{3, 7, 37}, {2, 5, 256}, {67, 1000}}) {
        const int64_t D = shape.back();
        at::Tensor x = at::randn(shape).to(dtype), w = (at::rand({D}) + 0.5).to(dtype), g = at::randn(shape).to(dtype);
        at::Tensor xf = leaf(x), wf = leaf(w), xr = leaf(x), wr = leaf(w);
        at::Tensor yf = k::rms_norm(xf, wf, 1e-5), yr = k::rms_norm_reference(xr, wr, 1e-5);
        EXPECT_NE(grad_fn_name(yf).find("RmsNormFunction"), std::string::npos) << grad_fn_name(yf);
        yf.backward(g);
        yr.backward(g);
        const std::string what = cap + " " + c10::toString(dtype) + " D=" + std::to_string(D);
        expect_close(yf, yr, dtype, "y " + what);
        expect_close(xf.grad(), xr.grad(), dtype, "dx " + what);
        // dw sums over every row: allow for the rounding of the longer sum in bf16.
        expect_close(wf.grad(), wr.grad(), dtype, "dw " + what);
      }
    }
  });
}

TEST(Kernels, AddRmsNormMatchesReference) {
  for_each_cpu_build([](const std::string& cap) {
    at::manual_seed(2);
    // x float32 with delta bfloat16 is autocast's residual stream.
    for (auto [xt, dt] : {std::pair{at::kFloat, at::kFloat}, std::pair{at::kBFloat16, at::kBFloat16},
                          std::pair{at::kFloat, at::kBFloat16}}) {
      for (std::vector<int64_t> shape : {std::vector<int64_t>{3, 7, 37}, {2, 9, 256}}) {
        const int64_t D = shape.back();
        at::Tensor x = at::randn(shape).to(xt), delta = at::randn(shape).to(dt), w = (at::rand({D}) + 0.5);
        const auto out_dtype = at::result_type(x, delta);
        at::Tensor gh = at::randn(shape).to(out_dtype), gy = at::randn(shape).to(out_dtype);
        at::Tensor xf = leaf(x), df = leaf(delta), wf = leaf(w), xr = leaf(x), dr = leaf(delta), wr = leaf(w);
        auto [hf, yf] = k::add_rms_norm(xf, df, wf, 1e-5);
        auto [hr, yr] = k::add_rms_norm_reference(xr, dr, wr, 1e-5);
        EXPECT_NE(grad_fn_name(yf).find("AddRmsNormFunction"), std::string::npos) << grad_fn_name(yf);
        torch::autograd::backward({hf, yf}, {gh, gy});
        torch::autograd::backward({hr, yr}, {gh, gy});
        const auto tol_dtype = xt == at::kFloat && dt == at::kFloat ? at::kFloat : at::kBFloat16;
        const std::string what = cap + " " + c10::toString(xt) + "+" + c10::toString(dt) + " D=" + std::to_string(D);
        expect_close(hf, hr, tol_dtype, "h " + what);
        expect_close(yf, yr, tol_dtype, "y " + what);
        expect_close(xf.grad(), xr.grad(), tol_dtype, "dx " + what);
        expect_close(df.grad(), dr.grad(), tol_dtype, "ddelta " + what);
        expect_close(wf.grad(), wr.grad(), tol_dtype, "dw " + what);
        EXPECT_EQ(df.grad().scalar_type(), dt);
      }
    }
  });
}

TEST(Kernels, SwiGLUMatchesReference) {
  for_each_cpu_build([](const std::string& cap) {
    at::manual_seed(3);
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (std::vector<int64_t> shape : {std::vector<int64_t>{3, 37}, {2, 5, 768}, {100003}}) {
        at::Tensor a = (at::randn(shape) * 3).to(dtype), b = at::randn(shape).to(dtype), g = at::randn(shape).to(dtype);
        at::Tensor af = leaf(a), bf = leaf(b), ar = leaf(a), br = leaf(b);
        at::Tensor yf = k::swiglu(af, bf), yr = k::swiglu_reference(ar, br);
        EXPECT_NE(grad_fn_name(yf).find("SwiGLUFunction"), std::string::npos) << grad_fn_name(yf);
        yf.backward(g);
        yr.backward(g);
        const std::string what = cap + " " + c10::toString(dtype) + " n=" + std::to_string(a.numel());
        expect_close(yf, yr, dtype, "out " + what);
        expect_close(af.grad(), ar.grad(), dtype, "da " + what);
        expect_close(bf.grad(), br.grad(), dtype, "db " + what);
      }
    }
  });
}

// The grouped SwiGLU experts against a loop of ATen ops per expert, forward and backward, with an
// expert no row reaches and one that takes most of them.
TEST(Kernels, GroupedSwiGLUMatchesLoopOverExperts) {
  const int threads_before = at::get_num_threads();
  for_each_cpu_build([](const std::string& cap) {
    at::manual_seed(5);
    const int64_t E = 4, D = 24, H = 40;
    const std::vector<int64_t> counts{3, 0, 30, 1};
    const int64_t R = 34;
    // One thread, and three: the experts in ranges of about equal rows, one per thread
    // ([0, 3) and [3, 4) here, the third empty).
    for (int threads : {1, 3})
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      at::set_num_threads(threads);
      const at::Tensor x = at::randn({R, D}).to(dtype), w1 = (at::randn({E, H, D}) * 0.3).to(dtype),
                       w2 = (at::randn({E, D, H}) * 0.3).to(dtype), w3 = (at::randn({E, H, D}) * 0.3).to(dtype),
                       g = at::randn({R, D}).to(dtype);
      at::Tensor xf = leaf(x), w1f = leaf(w1), w2f = leaf(w2), w3f = leaf(w3);
      at::Tensor xr = leaf(x), w1r = leaf(w1), w2r = leaf(w2), w3r = leaf(w3);
      const at::Tensor yf = k::grouped_swiglu(xf, w1f, w2f, w3f, counts);
      EXPECT_NE(grad_fn_name(yf).find("GroupedSwiGLUFunction"), std::string::npos) << grad_fn_name(yf);
      std::vector<at::Tensor> outs;
      int64_t r0 = 0;
      for (int64_t e = 0; e < E; ++e) {
        const at::Tensor xe = xr.narrow(0, r0, counts[e]);
        outs.push_back(at::linear(k::swiglu_reference(at::linear(xe, w1r[e]), at::linear(xe, w3r[e])), w2r[e]));
        r0 += counts[e];
      }
      const at::Tensor yr = at::cat(outs, 0);
      yf.backward(g);
      yr.backward(g);
      const std::string what = cap + " " + c10::toString(dtype) + " " + std::to_string(threads) + " threads";
      expect_close(yf, yr, dtype, "out " + what);
      expect_close(xf.grad(), xr.grad(), dtype, "dx " + what);
      expect_close(w1f.grad(), w1r.grad(), dtype, "dw1 " + what);
      expect_close(w2f.grad(), w2r.grad(), dtype, "dw2 " + what);
      expect_close(w3f.grad(), w3r.grad(), dtype, "dw3 " + what);
      EXPECT_TRUE(at::equal(w1f.grad()[1], at::zeros({H, D}, dtype))) << "the expert no row reached " << what;
    }
  });
  at::set_num_threads(threads_before);
}

TEST(Kernels, RopeQKMatchesReference) {
  for_each_cpu_build([](const std::string& cap) {
    at::manual_seed(4);
    at::Tensor angles = at::rand({20, 8}) * 6;
    at::Tensor cos = angles.cos(), sin = angles.sin();
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      at::Tensor q = at::randn({2, 13, 4, 16}).to(dtype), kk = at::randn({2, 13, 2, 16}).to(dtype);
      at::Tensor gq = at::randn(q.sizes()).to(dtype), gk = at::randn(kk.sizes()).to(dtype);
      at::Tensor qf = leaf(q), kf = leaf(kk), qr = leaf(q), kr = leaf(kk);
      auto [qo, ko] = k::rope_qk(qf, kf, cos, sin);
      auto [qro, kro] = k::rope_qk_reference(qr, kr, cos, sin);
      EXPECT_NE(grad_fn_name(qo).find("RopeQKFunction"), std::string::npos) << grad_fn_name(qo);
      torch::autograd::backward({qo, ko}, {gq, gk});
      torch::autograd::backward({qro, kro}, {gq, gk});
      const std::string what = cap + " " + c10::toString(dtype);
      expect_close(qo, qro, dtype, "q " + what);
      expect_close(ko, kro, dtype, "k " + what);
      expect_close(qf.grad(), qr.grad(), dtype, "dq " + what);
      expect_close(kf.grad(), kr.grad(), dtype, "dk " + what);
      // The one-tensor form is the same rotation.
      at::Tensor x1 = leaf(q), x2 = leaf(q);
      at::Tensor y1 = k::rope(x1, cos, sin), y2 = k::rope_reference(x2, cos, sin);
      y1.backward(gq);
      y2.backward(gq);
      expect_close(y1, y2, dtype, "rope " + what);
      expect_close(x1.grad(), x2.grad(), dtype, "rope dx " + what);
    }
  });
}

TEST(Kernels, AdamWithClipScaleMatchesReference) {
  for_each_cpu_build([](const std::string& cap) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (bool decoupled : {true, false}) {
        for (double scale : {1.0, 0.37}) {
          at::manual_seed(5);
          std::vector<at::Tensor> pf, pr, mf, mr, vf, vr, sf, sr, grads;
          for (int64_t n : {1, 37, 1000, 4099}) {
            at::Tensor p = at::randn({n}).to(dtype);
            pf.push_back(p.clone()), pr.push_back(p.clone());
            mf.push_back(at::zeros_like(p)), mr.push_back(at::zeros_like(p));
            vf.push_back(at::zeros_like(p)), vr.push_back(at::zeros_like(p));
            sf.push_back(at::zeros({})), sr.push_back(at::zeros({}));
          }
          const k::AdamHyper h{1e-2, 0.9, 0.95, 0.1, 1e-8, decoupled};
          for (int step = 0; step < 3; ++step) {
            grads.clear();
            for (const auto& p : pf) grads.push_back(at::randn(p.sizes()).to(dtype));
            at::_foreach_add_(sf, 1);
            at::_foreach_add_(sr, 1);
            k::adam_step(pf, grads, mf, vf, sf, h, scale);
            k::adam_step_reference(pr, grads, mr, vr, sr, h, scale);
          }
          const std::string what = cap + " " + c10::toString(dtype) + (decoupled ? " AdamW" : " Adam") +
                                   " scale " + std::to_string(scale);
          for (size_t i = 0; i < pf.size(); ++i) {
            // float32: a small part of the ~lr each step moves a parameter; bf16: its rounding.
            EXPECT_LE(max_abs_diff(pf[i], pr[i]), dtype == at::kFloat ? 2e-6 : tolerance(dtype, pr[i]))
                << what << " p" << i;
            EXPECT_LE(max_abs_diff(mf[i], mr[i]), tolerance(dtype, mr[i])) << what << " m" << i;
            EXPECT_LE(max_abs_diff(vf[i], vr[i]), tolerance(dtype, vr[i])) << what << " v" << i;
          }
        }
      }
    }
  });
}

TEST(Kernels, ChunkedLinearCrossEntropyMatchesTheFullOne) {
  at::manual_seed(6);
  const int64_t B = 3, T = 11, D = 24, V = 37;
  at::Tensor h = at::randn({B, T, D}), w = at::randn({V, D}) * 0.3;
  at::Tensor labels = at::randint(0, V, {B, T}, at::kLong);
  labels[0][3] = k::kIgnoreIndex;
  labels[2][10] = k::kIgnoreIndex;
  at::Tensor g = at::rand({B, T});
  at::Tensor hr = leaf(h), wr = leaf(w);
  at::Tensor lr = k::linear_cross_entropy_reference(hr, wr, labels);
  lr.backward(g);
  for (auto [chunk, keep] : {std::pair<int64_t, int64_t>{1, 0}, {7, 0}, {0, 0}, {7, -1}, {0, -1}}) {
    at::Tensor hf = leaf(h), wf = leaf(w);
    at::Tensor lf = k::linear_cross_entropy(hf, wf, labels, chunk, keep);  // keep 0: backward recomputes
    lf.backward(g);
    const std::string what = "chunk " + std::to_string(chunk) + (keep == 0 ? " recomputed" : " kept");
    EXPECT_EQ(lf.scalar_type(), at::kFloat);
    EXPECT_EQ(lf[0][3].item<float>(), 0.0f) << what;
    expect_close(lf, lr, at::kFloat, "loss " + what);
    expect_close(hf.grad(), hr.grad(), at::kFloat, "dh " + what);
    expect_close(wf.grad(), wr.grad(), at::kFloat, "dw " + what);
  }
  // Under bf16 autocast both compute the logits in bf16 and reduce in float32.
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::Tensor hb = leaf(h), wb = leaf(w), hb2 = leaf(h), wb2 = leaf(w);
  at::Tensor lb = k::linear_cross_entropy(hb, wb, labels, 5, 0), lb2 = k::linear_cross_entropy_reference(hb2, wb2, labels);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  lb.backward(g);
  lb2.backward(g);
  EXPECT_EQ(lb.scalar_type(), at::kFloat);
  expect_close(lb, lb2, at::kBFloat16, "bf16 loss");
  expect_close(hb.grad(), hb2.grad(), at::kBFloat16, "bf16 dh");
  expect_close(wb.grad(), wb2.grad(), at::kBFloat16, "bf16 dw");
  // A label outside the vocabulary is an error, not a write out of bounds.
  at::Tensor bad = labels.clone();
  bad[1][1] = V;
  EXPECT_THROW(k::linear_cross_entropy(h, w, bad), c10::Error);
}

TEST(Kernels, AttentionMatchesTheMathPath) {
  // titan.cpp's kernel (fused) and ATen's flash kernel for CPU, against softmax(q k^T) v.
  for (bool fused : {true, false}) {
    at::manual_seed(7);
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (auto [T, hd, kv_heads] : {std::tuple<int64_t, int64_t, int64_t>{19, 16, 4}, {19, 16, 2}, {300, 16, 1},
                                     {130, 64, 2}, {1100, 16, 2}}) {  // MHA, GQA, MQA; one and several query blocks
        at::Tensor q = at::randn({2, 4, T, hd}).to(dtype), kk = at::randn({2, kv_heads, T, hd}).to(dtype);
        at::Tensor v = at::randn({2, kv_heads, T, hd}).to(dtype), g = at::randn({2, 4, T, hd}).to(dtype);
        at::Tensor qf = leaf(q), kf = leaf(kk), vf = leaf(v);
        at::Tensor qr = leaf(q.to(at::kFloat)), kr = leaf(kk.to(at::kFloat)), vr = leaf(v.to(at::kFloat));
        const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
        at::Tensor of = k::attention(qf, kf, vf, scale, fused), orf = k::attention_reference(qr, kr, vr, scale);
        of.backward(g);
        orf.backward(g.to(at::kFloat));
        const std::string what = std::string(fused ? "titan " : "aten ") + c10::toString(dtype) + " T " +
                                 std::to_string(T) + " hd " + std::to_string(hd) + " kv_heads " +
                                 std::to_string(kv_heads);
        EXPECT_EQ(of.scalar_type(), dtype) << what;
        expect_close(of, orf, dtype, "out " + what);
        expect_close(qf.grad(), qr.grad(), dtype, "dq " + what);
        expect_close(kf.grad(), kr.grad(), dtype, "dk " + what);
        expect_close(vf.grad(), vr.grad(), dtype, "dv " + what);
      }
    }
  }
  EXPECT_NE(k::attention_backend(at::Device(at::kCPU), at::kFloat, false).find("flash"), std::string::npos);
  EXPECT_NE(k::attention_backend(at::Device(at::kCPU), at::kFloat, true).find("titan.cpp"), std::string::npos);
}

// torchtitan's document mask, written out independently of kernels::document_starts: the
// document of position t is the number of EOS strictly before t (the last position counts as an
// EOS, which changes no index); key j is seen by query i when j <= i and both are in the same
// document. -> (B,1,T,T) bool.
at::Tensor torchtitan_document_mask(const at::Tensor& tokens, int64_t eos) {
  at::Tensor is_eos = tokens.eq(eos).to(at::kLong);
  is_eos.select(1, tokens.size(1) - 1).fill_(1);
  const at::Tensor cum = is_eos.cumsum(1);
  at::Tensor doc = at::zeros_like(cum);
  doc.narrow(1, 1, tokens.size(1) - 1).copy_(cum.narrow(1, 0, tokens.size(1) - 1));
  const int64_t T = tokens.size(1);
  const at::Tensor causal = at::ones({T, T}, at::kBool).tril();
  return doc.unsqueeze(2).eq(doc.unsqueeze(1)).logical_and(causal).unsqueeze(1);
}

TEST(Kernels, BlockCausalAttentionMatchesAnExplicitMask) {
  // titan.cpp's kernel (fused) and the masked ATen path against softmax(q k^T + mask) v with
  // torchtitan's mask, forward and backward: one document over the whole sequence (no EOS),
  // one-token documents (every token an EOS), documents of assorted lengths across query blocks,
  // an EOS at the very end; MHA and GQA; T spanning several query blocks of the kernel.
  const int64_t eos = 3;
  for (bool fused : {true, false}) {
    at::manual_seed(11);
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (auto [T, kv_heads] : {std::pair<int64_t, int64_t>{19, 4}, {300, 2}, {1100, 1}}) {
        for (const char* layout : {"one document", "one-token documents", "mixed"}) {
          at::Tensor tokens = at::randint(4, 50, {2, T}, at::kLong);  // no EOS among them
          if (std::string(layout) == "one-token documents") tokens.fill_(eos);
          if (std::string(layout) == "mixed") {
            for (int64_t t : {0L, 5L, 6L, 17L, 127L, 128L, 200L, 640L, T - 1})
              if (t < T) tokens[0][t] = eos;
            for (int64_t t : {2L, 140L, 141L, 900L})
              if (t < T) tokens[1][t] = eos;
          }
          const at::Tensor starts = k::document_starts(tokens, eos), mask = torchtitan_document_mask(tokens, eos);
          at::Tensor q = at::randn({2, 4, T, 16}).to(dtype), kk = at::randn({2, kv_heads, T, 16}).to(dtype);
          at::Tensor v = at::randn({2, kv_heads, T, 16}).to(dtype), g = at::randn({2, 4, T, 16}).to(dtype);
          at::Tensor qf = leaf(q), kf = leaf(kk), vf = leaf(v);
          at::Tensor qr = leaf(q.to(at::kFloat)), kr = leaf(kk.to(at::kFloat)), vr = leaf(v.to(at::kFloat));
          const double scale = 0.25;
          at::Tensor of = k::attention(qf, kf, vf, scale, fused, starts);
          const int64_t rep = 4 / kv_heads;
          at::Tensor scores = at::matmul(qr, kr.repeat_interleave(rep, 1).transpose(-2, -1)) * scale;
          scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
          at::Tensor orf = at::matmul(at::softmax(scores, -1), vr.repeat_interleave(rep, 1));
          of.backward(g);
          orf.backward(g.to(at::kFloat));
          const std::string what = std::string(fused ? "titan " : "aten ") + c10::toString(dtype) + " T " +
                                   std::to_string(T) + " kv_heads " + std::to_string(kv_heads) + " " + layout;
          expect_close(of, orf, dtype, "out " + what);
          expect_close(qf.grad(), qr.grad(), dtype, "dq " + what);
          expect_close(kf.grad(), kr.grad(), dtype, "dk " + what);
          expect_close(vf.grad(), vr.grad(), dtype, "dv " + what);
          // The reference of the project's own tests agrees with torchtitan's mask.
          if (dtype == at::kFloat)
            expect_close(k::attention_reference(qr.detach(), kr.detach(), vr.detach(), scale, starts), orf.detach(),
                         dtype, "attention_reference " + what);
          if (std::string(layout) == "one document") {  // no EOS: causal, bit for bit the kernel's causal path
            at::Tensor causal = k::attention(q, kk, v, scale, fused);
            EXPECT_TRUE(at::equal(causal, k::attention(q, kk, v, scale, fused, starts))) << what;
          }
        }
      }
    }
  }
}

TEST(Kernels, AttentionOverPartsOfTheKeysMergesToTheWhole) {
  // Context parallelism's ring: the queries of the last third of a sequence against each third of
  // the keys (the earlier thirds in full, its own causally, each with its causal offset), merged
  // by their logsumexps, equal attention over all the keys; each part's backward with the merged
  // output and logsumexp gives that part's key and value gradients, and q's summed over the parts.
  const int64_t T = 300, c = 100, hd = 16, first = 200;
  const double scale = 0.25;
  for (int64_t kv_heads : {4, 2}) {
    at::manual_seed(13);
    const at::Tensor q = at::randn({2, 4, c, hd}), k = at::randn({2, kv_heads, T, hd}), v = at::randn({2, kv_heads, T, hd});
    const at::Tensor go = at::randn({2, 4, c, hd});
    at::Tensor qr = leaf(q), kr = leaf(k), vr = leaf(v);
    const int64_t rep = 4 / kv_heads;
    at::Tensor scores = at::matmul(qr, kr.repeat_interleave(rep, 1).transpose(-2, -1)) * scale;  // (2,4,c,T)
    const at::Tensor seen = at::arange(T).view({1, T}).le(at::arange(c).view({c, 1}) + first);
    scores = scores.masked_fill(seen.logical_not(), -std::numeric_limits<double>::infinity());
    const at::Tensor lse_ref = at::logsumexp(scores, -1).detach();
    at::Tensor out_ref = at::matmul(at::softmax(scores, -1), vr.repeat_interleave(rep, 1));
    out_ref.backward(go);
    std::vector<at::Tensor> outs, lses, ks, vs;
    for (int64_t part = 0; part < 3; ++part) {
      ks.push_back(k.narrow(2, part * c, c).contiguous());
      vs.push_back(v.narrow(2, part * c, c).contiguous());
      auto [o, l] = k::cpu_attention_forward(q, ks.back(), vs.back(), scale, {}, first - part * c);
      outs.push_back(o);
      lses.push_back(l);
    }
    auto [out, lse] = k::merge_partial_attention(outs, lses);
    const std::string what = "kv_heads " + std::to_string(kv_heads);
    expect_close(out, out_ref.detach(), at::kFloat, "merged out " + what);
    expect_close(lse, lse_ref, at::kFloat, "merged lse " + what);
    at::Tensor dq = at::zeros_like(q);
    std::vector<at::Tensor> dks, dvs;
    for (int64_t part = 0; part < 3; ++part) {
      auto [dqp, dkp, dvp] = k::cpu_attention_backward(go, q, ks[part], vs[part], out, lse, scale, {}, first - part * c);
      dq += dqp;
      dks.push_back(dkp);
      dvs.push_back(dvp);
    }
    expect_close(dq, qr.grad(), at::kFloat, "dq " + what);
    expect_close(at::cat(dks, 2), kr.grad(), at::kFloat, "dk " + what);
    expect_close(at::cat(dvs, 2), vr.grad(), at::kFloat, "dv " + what);
  }
}

TEST(Kernels, DocumentMaskedPartsOfTheKeysMergeToTheWhole) {
  // Context parallelism with documents: the last third of a sequence's queries against each third
  // of the keys, the documents' starts given in each part's key positions. Row 0 has documents
  // from 0, 150 and 260 (so rows from 260 on see nothing of the first two parts: output 0,
  // logsumexp -inf), row 1 one document over everything but a one-token document at 205. Merged
  // and per part backward, titan.cpp's kernel (float32) and the ATen math path (float64) both
  // equal attention with the explicit mask.
  const int64_t T = 300, c = 100, hd = 16, first = 200;
  const double scale = 0.25;
  at::Tensor tokens = at::zeros({2, T}, at::kLong);
  tokens[0][149] = 1;
  tokens[0][259] = 1;
  tokens[1][204] = 1;
  tokens[1][205] = 1;
  const at::Tensor starts = k::document_starts(tokens, 1);  // (2,T)
  const at::Tensor qstarts = starts.narrow(1, first, c).contiguous();
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    at::manual_seed(17);
    const at::Tensor q = at::randn({2, 4, c, hd}, dtype), k = at::randn({2, 2, T, hd}, dtype);
    const at::Tensor v = at::randn({2, 2, T, hd}, dtype), go = at::randn({2, 4, c, hd}, dtype);
    at::Tensor qr = leaf(q), kr = leaf(k), vr = leaf(v);
    at::Tensor scores = at::matmul(qr, kr.repeat_interleave(2, 1).transpose(-2, -1)) * scale;  // (2,4,c,T)
    const at::Tensor pos = at::arange(T).view({1, 1, T}), qpos = (at::arange(c) + first).view({1, c, 1});
    const at::Tensor seen = pos.le(qpos).logical_and(pos.ge(qstarts.unsqueeze(-1))).unsqueeze(1);  // (2,1,c,T)
    scores = scores.masked_fill(seen.logical_not(), -std::numeric_limits<double>::infinity());
    at::Tensor out_ref = at::matmul(at::softmax(scores, -1), vr.repeat_interleave(2, 1));
    out_ref.backward(go);
    std::vector<at::Tensor> outs, lses, ks, vs, docs;
    for (int64_t part = 0; part < 3; ++part) {
      ks.push_back(k.narrow(2, part * c, c).contiguous());
      vs.push_back(v.narrow(2, part * c, c).contiguous());
      docs.push_back((qstarts - part * c).contiguous());
      auto [o, l] = k::attention_part_forward(q, ks.back(), vs.back(), scale, docs.back(), first - part * c);
      outs.push_back(o);
      lses.push_back(l);
    }
    const std::string what = dtype == at::kFloat ? "titan.cpp's kernel" : "the math path";
    EXPECT_TRUE(at::isinf(lses[0][0][0][c - 1]).item<bool>()) << what << ": a row that sees no key of a part";
    EXPECT_EQ(outs[0][0][0][c - 1].abs().sum().item<double>(), 0.0) << what;
    auto [out, lse] = k::merge_partial_attention(outs, lses);
    expect_close(out, out_ref.detach().to(at::kFloat), at::kFloat, "merged out, " + what);
    at::Tensor dq = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    std::vector<at::Tensor> dks, dvs;
    for (int64_t part = 0; part < 3; ++part) {
      auto [dqp, dkp, dvp] = k::attention_part_backward(go, q, ks[part], vs[part], out, lse, scale, docs[part],
                                                        first - part * c);
      dq += dqp.to(at::kFloat);
      dks.push_back(dkp.to(at::kFloat));
      dvs.push_back(dvp.to(at::kFloat));
    }
    expect_close(dq, qr.grad().to(at::kFloat), at::kFloat, "dq, " + what);
    expect_close(at::cat(dks, 2), kr.grad().to(at::kFloat), at::kFloat, "dk, " + what);
    expect_close(at::cat(dvs, 2), vr.grad().to(at::kFloat), at::kFloat, "dv, " + what);
  }
}

TEST(Kernels, DocumentStartsFollowTheEos) {
  const at::Tensor tokens = at::tensor({5, 3, 7, 8, 3, 9, 3, 3}, at::kLong).view({1, 8});
  const at::Tensor want = at::tensor({0, 0, 2, 2, 2, 5, 5, 7}, at::kLong).view({1, 8});
  EXPECT_TRUE(at::equal(k::document_starts(tokens, 3), want)) << k::document_starts(tokens, 3);
}

TEST(Kernels, ReferencePathWhenDisabledOrNotFusable) {
  at::Tensor d = at::randn({1, 2, 1, 4}, at::kDouble).requires_grad_(true);
  at::Tensor ones = at::ones({2, 2}), zeros = at::zeros({2, 2});
  EXPECT_EQ(grad_fn_name(k::rope(d, ones, zeros)).find("Rope"), std::string::npos);  // float64
  EXPECT_EQ(grad_fn_name(k::rms_norm(d, at::ones({4}, at::kDouble), 1e-5)).find("RmsNorm"), std::string::npos);
  k::set_fused_kernels_enabled(false);
  at::Tensor x = at::randn({1, 2, 1, 4}).requires_grad_(true);
  at::Tensor y = k::rope(x, ones, zeros);  // angle 0: identity
  EXPECT_TRUE(at::allclose(y, x));
  EXPECT_EQ(grad_fn_name(y).find("Rope"), std::string::npos) << grad_fn_name(y);
  EXPECT_EQ(grad_fn_name(k::swiglu(x, x)).find("SwiGLU"), std::string::npos);
  k::set_fused_kernels_enabled(true);
  EXPECT_NE(grad_fn_name(k::rope(x, ones, zeros)).find("RopeFunction"), std::string::npos);
  EXPECT_NE(std::string(k::cpu_capability()), "");
}

TEST(Gpu, FusedKernelsMatchTheirReferencesOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  at::manual_seed(8);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const std::string what = c10::toString(dtype);
    // RMSNorm with the residual add.
    at::Tensor x = at::randn({3, 7, 300}, cuda).to(dtype), d = at::randn({3, 7, 300}, cuda).to(dtype);
    at::Tensor w = at::rand({300}, cuda) + 0.5, g = at::randn({3, 7, 300}, cuda).to(dtype);
    at::Tensor xf = leaf(x), df = leaf(d), wf = leaf(w), xr = leaf(x), dr = leaf(d), wr = leaf(w);
    auto [hf, yf] = k::add_rms_norm(xf, df, wf, 1e-5);
    auto [hr, yr] = k::add_rms_norm_reference(xr, dr, wr, 1e-5);
    EXPECT_NE(grad_fn_name(yf).find("AddRmsNorm"), std::string::npos);
    torch::autograd::backward({hf, yf}, {g, g});
    torch::autograd::backward({hr, yr}, {g, g});
    expect_close(yf, yr, dtype, "rms y " + what);
    expect_close(xf.grad(), xr.grad(), dtype, "rms dx " + what);
    expect_close(wf.grad(), wr.grad(), dtype, "rms dw " + what);
    // SwiGLU.
    at::Tensor a = at::randn({5, 1001}, cuda).to(dtype), b = at::randn({5, 1001}, cuda).to(dtype);
    at::Tensor ga = at::randn({5, 1001}, cuda).to(dtype);
    at::Tensor af = leaf(a), bf = leaf(b), ar = leaf(a), br = leaf(b);
    at::Tensor sf = k::swiglu(af, bf), sr = k::swiglu_reference(ar, br);
    sf.backward(ga);
    sr.backward(ga);
    expect_close(sf, sr, dtype, "swiglu " + what);
    expect_close(af.grad(), ar.grad(), dtype, "swiglu da " + what);
    expect_close(bf.grad(), br.grad(), dtype, "swiglu db " + what);
    // RoPE on q and k.
    at::Tensor ang = at::rand({9, 8}, cuda) * 6;
    at::Tensor q = at::randn({2, 9, 4, 16}, cuda).to(dtype), kk = at::randn({2, 9, 2, 16}, cuda).to(dtype);
    at::Tensor qf = leaf(q), kf = leaf(kk), qr = leaf(q), kr = leaf(kk);
    auto [qo, ko] = k::rope_qk(qf, kf, ang.cos(), ang.sin());
    auto [qro, kro] = k::rope_qk_reference(qr, kr, ang.cos(), ang.sin());
    torch::autograd::backward({qo, ko}, {q, kk});
    torch::autograd::backward({qro, kro}, {q, kk});
    expect_close(qo, qro, dtype, "rope q " + what);
    expect_close(kf.grad(), kr.grad(), dtype, "rope dk " + what);
    // Adam(W) with a clip scale.
    std::vector<at::Tensor> pf{at::randn({1003}, cuda).to(dtype)}, pr{pf[0].clone()};
    std::vector<at::Tensor> mf{at::zeros_like(pf[0])}, mr{at::zeros_like(pf[0])}, vf{at::zeros_like(pf[0])},
        vr{at::zeros_like(pf[0])}, sf2{at::ones({}, cuda)}, sr2{at::ones({}, cuda)};
    std::vector<at::Tensor> grads{at::randn({1003}, cuda).to(dtype)};
    k::adam_step(pf, grads, mf, vf, sf2, {1e-2, 0.9, 0.95, 0.1, 1e-8, true}, 0.5);
    k::adam_step_reference(pr, grads, mr, vr, sr2, {1e-2, 0.9, 0.95, 0.1, 1e-8, true}, 0.5);
    EXPECT_LE(max_abs_diff(pf[0], pr[0]), dtype == at::kFloat ? 2e-6 : tolerance(dtype, pr[0])) << "adam " << what;
  }
  // Chunked linear + cross entropy (ATen ops on the device).
  at::Tensor h = at::randn({2, 9, 32}, cuda), w = at::randn({50, 32}, cuda) * 0.3;
  at::Tensor labels = at::randint(0, 50, {2, 9}, cuda.dtype(at::kLong));
  at::Tensor hf = leaf(h), wf = leaf(w), hr = leaf(h), wr = leaf(w);
  at::Tensor lf = k::linear_cross_entropy(hf, wf, labels, 4, 0), lr = k::linear_cross_entropy_reference(hr, wr, labels);
  lf.sum().backward();
  lr.sum().backward();
  expect_close(lf, lr, at::kFloat, "cross entropy");
  expect_close(hf.grad(), hr.grad(), at::kFloat, "cross entropy dh");
  expect_close(wf.grad(), wr.grad(), at::kFloat, "cross entropy dw");
}

TEST(Gpu, BlockCausalAttentionMatchesAnExplicitMaskOnCuda) {
  // The masked path on CUDA (scaled_dot_product_attention with the block-causal mask), float32
  // and bf16, MHA and GQA, against softmax with torchtitan's mask; and causal where no EOS.
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  at::manual_seed(12);
  at::Tensor tokens = at::randint(4, 50, {2, 300}, at::kLong);
  for (int64_t t : {0L, 5L, 6L, 127L, 128L, 299L}) tokens[0][t] = 3;
  tokens[1][140] = 3;
  const at::Tensor starts = k::document_starts(tokens, 3).to(at::kCUDA);
  const at::Tensor mask = torchtitan_document_mask(tokens, 3).to(at::kCUDA);
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (int64_t kv_heads : {4, 2}) {
      at::Tensor q = at::randn({2, 4, 300, 64}, cuda).to(dtype), kk = at::randn({2, kv_heads, 300, 64}, cuda).to(dtype);
      at::Tensor v = at::randn({2, kv_heads, 300, 64}, cuda).to(dtype), g = at::randn({2, 4, 300, 64}, cuda).to(dtype);
      at::Tensor qf = leaf(q), kf = leaf(kk), vf = leaf(v);
      at::Tensor qr = leaf(q.to(at::kFloat)), kr = leaf(kk.to(at::kFloat)), vr = leaf(v.to(at::kFloat));
      at::Tensor of = k::attention(qf, kf, vf, 0.125, true, starts);
      const int64_t rep = 4 / kv_heads;
      at::Tensor scores = at::matmul(qr, kr.repeat_interleave(rep, 1).transpose(-2, -1)) * 0.125;
      scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
      at::Tensor orf = at::matmul(at::softmax(scores, -1), vr.repeat_interleave(rep, 1));
      of.backward(g);
      orf.backward(g.to(at::kFloat));
      const std::string what = std::string(c10::toString(dtype)) + " kv_heads " + std::to_string(kv_heads);
      expect_close(of, orf, dtype, "cuda block-causal out " + what);
      expect_close(qf.grad(), qr.grad(), dtype, "cuda block-causal dq " + what);
      expect_close(kf.grad(), kr.grad(), dtype, "cuda block-causal dk " + what);
      expect_close(vf.grad(), vr.grad(), dtype, "cuda block-causal dv " + what);
    }
}

TEST(Gpu, AttentionPartsOnCudaMatchTheCpuKernel) {
  // Context parallelism's pieces on CUDA (the math path of attention_part_forward/backward, bf16
  // and float32 in): a part of the keys with a causal offset and documents, against titan.cpp's
  // CPU kernel on the same values.
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(19);
  at::Tensor tokens = at::zeros({2, 256}, at::kLong);
  tokens[0][100] = 1;
  tokens[0][180] = 1;
  const at::Tensor docs = (k::document_starts(tokens, 1).narrow(1, 128, 128) - 64).contiguous();  // keys 64..191
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor q = at::randn({2, 4, 128, 64}).to(dtype), kk = at::randn({2, 2, 128, 64}).to(dtype);
    const at::Tensor v = at::randn({2, 2, 128, 64}).to(dtype), g = at::randn({2, 4, 128, 64}).to(dtype);
    auto [oc, lc] = k::attention_part_forward(q, kk, v, 0.125, docs, 64);
    auto [og, lg] = k::attention_part_forward(q.cuda(), kk.cuda(), v.cuda(), 0.125, docs.cuda(), 64);
    const std::string what = c10::toString(dtype);
    expect_close(og.cpu(), oc, at::kFloat, "cuda part out " + what);
    expect_close(at::where(at::isinf(lg), at::zeros_like(lg), lg).cpu(), at::where(at::isinf(lc), at::zeros_like(lc), lc),
                 at::kFloat, "cuda part lse " + what);
    auto [dqc, dkc, dvc] = k::attention_part_backward(g, q, kk, v, oc, lc, 0.125, docs, 64);
    auto [dqg, dkg, dvg] = k::attention_part_backward(g.cuda(), q.cuda(), kk.cuda(), v.cuda(), og, lg, 0.125,
                                                      docs.cuda(), 64);
    expect_close(dqg.cpu().to(at::kFloat), dqc.to(at::kFloat), at::kFloat, "cuda part dq " + what);
    expect_close(dkg.cpu().to(at::kFloat), dkc.to(at::kFloat), at::kFloat, "cuda part dk " + what);
    expect_close(dvg.cpu().to(at::kFloat), dvc.to(at::kFloat), at::kFloat, "cuda part dv " + what);
  }
}

// ---- float8 (kernels/float8.h; parity.float8 compares whole layers with torchao) ----------------

TEST(Float8, CastScalesFromTheAbsoluteMaximumAndSaturates) {
  using titan::kernels::to_float8;
  const at::Tensor x = at::tensor({1.0f, -2.0f, 0.5f, 0.0f});
  auto t = to_float8(x, at::kFloat8_e4m3fn, std::nullopt, false);
  EXPECT_FLOAT_EQ(t.scale.item<float>(), 448.0f / 2.0f);  // float8_max / amax
  EXPECT_EQ(t.data.scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_FLOAT_EQ(t.data.to(at::kFloat)[1].item<float>(), -448.0f);
  // e5m2's range; a zero tensor takes the 1e-12 floor, not a division by zero.
  EXPECT_FLOAT_EQ(to_float8(x, at::kFloat8_e5m2, std::nullopt, false).scale.item<float>(), 57344.0f / 2.0f);
  const auto zero = to_float8(at::zeros({3}), at::kFloat8_e4m3fn, std::nullopt, false);
  EXPECT_TRUE(std::isfinite(zero.scale.item<float>()));
  EXPECT_EQ(zero.data.to(at::kFloat).abs().sum().item<float>(), 0.0f);
  // Rowwise: one scale per row, rounded down to a power of 2.
  const at::Tensor m = at::tensor({1.0f, 3.0f, -10.0f, 2.0f}).view({2, 2});
  const auto rows = to_float8(m, at::kFloat8_e4m3fn, int64_t{-1}, true);
  ASSERT_EQ(rows.scale.sizes(), at::IntArrayRef({2, 1}));
  EXPECT_FLOAT_EQ(rows.scale[0][0].item<float>(), 128.0f);  // 448 / 3 = 149.3 -> 128
  EXPECT_FLOAT_EQ(rows.scale[1][0].item<float>(), 32.0f);   // 448 / 10 = 44.8 -> 32
}

TEST(Float8, LinearIsCloseToTheHighPrecisionOneAndDifferentiable) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({4, 5, 32}).requires_grad_(true), w = (at::randn({16, 32}) * 0.1).requires_grad_(true);
  for (auto recipe : {titan::kernels::Float8Recipe::kTensorwise, titan::kernels::Float8Recipe::kRowwise,
                      titan::kernels::Float8Recipe::kRowwiseWithGwHp}) {
    titan::kernels::Float8Config config;
    config.recipe = recipe;
    config.emulate = true;
    const at::Tensor out = titan::kernels::float8_linear(x, w, config);
    const at::Tensor ref = at::linear(x, w);
    ASSERT_EQ(out.sizes(), ref.sizes());
    const double rel = ((out - ref).norm() / ref.norm()).item<double>();
    EXPECT_LT(rel, 0.1) << titan::kernels::float8_recipe_name(recipe);  // e4m3 keeps 3 mantissa bits
    EXPECT_GT(rel, 0.0) << "float8 must round";
    auto grads = torch::autograd::grad({out.sum()}, {x, w});
    auto refs = torch::autograd::grad({ref.sum()}, {x, w});
    for (size_t i = 0; i < 2; ++i)
      EXPECT_LT(((grads[i] - refs[i]).norm() / refs[i].norm()).item<double>(), 0.1);
  }
}

TEST(Float8, AnAttachedFloat8WeightGivesTheNumbersOfCastingTheWeight) {
  // FSDP's float8 all-gather hands the layer a stand-in with the cast weight attached: the output
  // and both gradients must be those of casting the weight itself, bit for bit.
  at::manual_seed(5);
  const at::Tensor x = at::randn({3, 4, 32}).requires_grad_(true), w = (at::randn({16, 32}) * 0.1).requires_grad_(true);
  titan::kernels::Float8Config config;
  config.emulate = true;
  const at::Tensor out = titan::kernels::float8_linear(x, w, config);
  const auto refs = torch::autograd::grad({(out * out).sum()}, {x, w});

  const auto w8 = titan::kernels::to_float8(w.detach(), at::kFloat8_e4m3fn, std::nullopt, false);
  at::Tensor stand_in = at::zeros({}).expand({16, 32});
  titan::kernels::attach_float8_weight(stand_in, w8);
  ASSERT_TRUE(titan::kernels::attached_float8_weight(stand_in.detach()).has_value()) << "a shallow copy keeps it";
  EXPECT_FALSE(titan::kernels::attached_float8_weight(w).has_value());
  const at::Tensor leaf = stand_in.detach().requires_grad_(true);
  const at::Tensor out2 = titan::kernels::float8_linear(x, leaf, config);
  EXPECT_TRUE(at::equal(out, out2));
  const auto grads = torch::autograd::grad({(out2 * out2).sum()}, {x, leaf});
  EXPECT_TRUE(at::equal(grads[0], refs[0]));
  EXPECT_TRUE(at::equal(grads[1], refs[1]));
}

TEST(Float8, SplitLayersReduceTheAmaxesTheirScalesSpan) {
  // A column-wise layer (weight rows split): the weight's tensorwise amax and the output
  // gradient's spans the split; the input's (whole on every rank) does not. Row-wise (columns
  // split): the input's and the weight's do, the output gradient's not. Count the reductions of
  // one forward and backward, with a "group" of one whose maximum is the identity.
  at::manual_seed(6);
  for (int64_t dim : {0, 1}) {
    for (auto recipe : {titan::kernels::Float8Recipe::kTensorwise, titan::kernels::Float8Recipe::kRowwise}) {
      int reductions = 0;
      titan::kernels::Float8Config config;
      config.emulate = true;
      config.recipe = recipe;
      config.split.weight_dim = dim;
      config.split.max_over_group = [&reductions](at::Tensor&) { ++reductions; };
      const at::Tensor x = at::randn({8, 32}).requires_grad_(true), w = (at::randn({16, 32}) * 0.1).requires_grad_(true);
      titan::kernels::Float8Config plain = config;
      plain.split = {};
      const at::Tensor out = titan::kernels::float8_linear(x, w, config);
      out.sum().backward();
      EXPECT_TRUE(at::equal(out, titan::kernels::float8_linear(x, w, plain))) << "a group of one changes nothing";
      // tensorwise: column-wise reduces w (forward, backward) and go (twice); row-wise x (twice), w
      // (twice). rowwise: column-wise go and w along N in backward; row-wise x and w along K in forward.
      const int expected = recipe == titan::kernels::Float8Recipe::kTensorwise ? 4 : 2;
      EXPECT_EQ(reductions, expected) << "weight_dim " << dim << " " << titan::kernels::float8_recipe_name(recipe);
    }
  }
}

TEST(Mx, BlocksScaleByAPowerOfTwoFromTheirMaximum) {
  using titan::kernels::MxScaleMode;
  // Two blocks of 32: the first's amax 3 (floor(log2 3) = 1: scale 2^(1-8); rceil: 2^ceil(log2
  // 3/448) = 2^-7, the same), the second's 480, where the two modes differ: floor gives 2^0 and
  // 480 saturates at 448; rceil gives 2^1 and 480 becomes 240, which e4m3 holds exactly.
  at::Tensor x = at::zeros({1, 64});
  x[0][0] = 3.0f;
  x[0][1] = -1.5f;
  x[0][32] = 480.0f;
  const auto floor = titan::kernels::to_mx(x, MxScaleMode::kFloor);
  const auto rceil = titan::kernels::to_mx(x, MxScaleMode::kRceil);
  EXPECT_EQ(floor.exponent[0][0].item<int>(), 127 - 7);
  EXPECT_EQ(rceil.exponent[0][0].item<int>(), 127 - 7);
  EXPECT_FLOAT_EQ(floor.data[0][0].to(at::kFloat).item<float>(), 384.0f);
  EXPECT_EQ(floor.exponent[0][1].item<int>(), 127);
  EXPECT_FLOAT_EQ(floor.data[0][32].to(at::kFloat).item<float>(), 448.0f);  // saturated
  EXPECT_EQ(rceil.exponent[0][1].item<int>(), 128);
  EXPECT_FLOAT_EQ(rceil.data[0][32].to(at::kFloat).item<float>(), 240.0f);
  const at::Tensor back = titan::kernels::mx_dequantize(rceil, at::kFloat);
  EXPECT_FLOAT_EQ(back[0][32].item<float>(), 480.0f);
  EXPECT_FLOAT_EQ(back[0][1].item<float>(), -1.5f);
  // An all-zero block stays zero; a K that is not a multiple of 32 is refused.
  EXPECT_EQ(titan::kernels::mx_dequantize(titan::kernels::to_mx(at::zeros({2, 32}), MxScaleMode::kFloor), at::kFloat)
                .abs().sum().item<float>(), 0.0f);
  EXPECT_THROW(titan::kernels::to_mx(at::zeros({2, 48}), MxScaleMode::kFloor), c10::Error);
}

TEST(Float8, LayerFiltersFollowTorchtitan) {
  using titan::kernels::float8_skip_reason;
  using titan::kernels::Float8Recipe;
  const std::vector<std::string> none, output{"output"}, small{"auto_filter_small_kn"};
  EXPECT_EQ(float8_skip_reason("layers.0.attention.wq", 256, 256, none, Float8Recipe::kTensorwise), "");
  EXPECT_NE(float8_skip_reason("layers.0.attention.wq", 250, 256, none, Float8Recipe::kTensorwise).find("16"),
            std::string::npos);
  EXPECT_NE(float8_skip_reason("output", 2048, 256, output, Float8Recipe::kTensorwise), "");
  // tensorwise: skip K <= 4096 and N <= 1024
  EXPECT_NE(float8_skip_reason("w", 1024, 4096, small, Float8Recipe::kTensorwise), "");
  EXPECT_EQ(float8_skip_reason("w", 1040, 4096, small, Float8Recipe::kTensorwise), "");
  EXPECT_EQ(float8_skip_reason("w", 1024, 4112, small, Float8Recipe::kTensorwise), "");
  // rowwise: skip N <= 2048, K <= 1024, or N <= 4096 and K <= 2048
  EXPECT_NE(float8_skip_reason("w", 2048, 8192, small, Float8Recipe::kRowwise), "");
  EXPECT_NE(float8_skip_reason("w", 8192, 1024, small, Float8Recipe::kRowwise), "");
  EXPECT_NE(float8_skip_reason("w", 4096, 2048, small, Float8Recipe::kRowwise), "");
  EXPECT_EQ(float8_skip_reason("w", 4096, 2064, small, Float8Recipe::kRowwise), "");
}
