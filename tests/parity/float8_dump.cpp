// Writes titan.cpp's side of the float8 and MX parity check: for each recipe and dtype, a random
// input, weight and output gradient, and what kernels::float8_linear (emulated) or
// kernels::mx_linear gives for the output and both gradients. tests/parity/test_float8_parity.py
// runs torchao's Float8Linear (emulate) or its mxfp8 mx_mm (emulated) on the same tensors and
// compares.
// usage: float8_dump --out FILE
#include <torch/serialize.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "titan/kernels/float8.h"
#include "titan/kernels/mx.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out") {
    std::fprintf(stderr, "usage: float8_dump --out FILE\n");
    return 2;
  }
  using titan::kernels::Float8Recipe;
  using Layer = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& w)>;
  c10::Dict<std::string, at::Tensor> dict;
  int64_t seed = 0;
  // One case: inputs of the given shapes (in `dtype`), `edit` adds the edge cases, the layer runs
  // forward and backward; everything goes under "<recipe>/<dtype>/".
  auto add = [&](const std::string& recipe, at::ScalarType dtype, int64_t B, int64_t T, int64_t K, int64_t N,
                 const std::function<void(at::Tensor&, at::Tensor&)>& edit, const Layer& layer) {
    at::manual_seed(++seed);
    at::Tensor x = at::randn({B, T, K}) * 3, w = at::randn({N, K}) * 0.05, go = at::randn({B, T, N}) * 1e-3;
    edit(x, go);
    x = x.to(dtype).requires_grad_(true);
    w = w.to(dtype).requires_grad_(true);
    go = go.to(dtype);
    at::Tensor out = layer(x, w);
    out.backward(go);
    const std::string p = recipe + "/" + (dtype == at::kFloat ? "float32" : "bfloat16") + "/";
    dict.insert(p + "x", x.detach().clone());
    dict.insert(p + "w", w.detach().clone());
    dict.insert(p + "go", go.clone());
    dict.insert(p + "out", out.detach().clone());
    dict.insert(p + "grad_x", x.grad().clone());
    dict.insert(p + "grad_w", w.grad().clone());
  };
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    // Float8: M = 39 rows, not a multiple of anything.
    for (Float8Recipe recipe : {Float8Recipe::kTensorwise, Float8Recipe::kRowwise, Float8Recipe::kRowwiseWithGwHp}) {
      titan::kernels::Float8Config config;
      config.recipe = recipe;
      config.emulate = true;
      add(titan::kernels::float8_recipe_name(recipe), dtype, 3, 13, 64, 48,
          [](at::Tensor& x, at::Tensor& go) {
            x[1][2].zero_();    // a row with amax 0: the 1e-12 floor
            x[0][0][5] = 900;   // an outlier: the rest of its row and tensor lose precision
            go[2][1][3] = 1e-9;  // tiny values
          },
          [&config](const at::Tensor& x, const at::Tensor& w) { return titan::kernels::float8_linear(x, w, config); });
    }
    // MX: the tokens (64), K and N multiples of the 32-element block.
    for (const char* recipe : {"mxfp8_cublas", "mxfp8_cublas_rceil"}) {
      const auto mode = *titan::kernels::mx_recipe(recipe);
      add(recipe, dtype, 4, 16, 64, 96,
          [](at::Tensor& x, at::Tensor& go) {
            x[1][2].narrow(0, 0, 32).zero_();  // an all-zero block
            x[0][0][5] = 900;                  // an outlier: only its block loses precision
            go[2][1][3] = 1e-30;               // a tiny value
          },
          [mode](const at::Tensor& x, const at::Tensor& w) { return titan::kernels::mx_linear(x, w, mode); });
    }
  }
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(argv[2], std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return 0;
}
