// Writes titan.cpp's side of the float8 and MX parity check: for each recipe and dtype, a random
// input, weight and output gradient, and what kernels::float8_linear (emulated) or
// kernels::mx_linear gives for the output and both gradients. tests/parity/test_float8_parity.py
// runs torchao's Float8Linear (emulate) or its mxfp8 mx_mm (emulated) on the same tensors and
// compares.
// usage: float8_dump --out FILE
#include <torch/serialize.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "titan/kernels/float8.h"
#include "titan/kernels/mx.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--out") {
    std::fprintf(stderr, "usage: float8_dump --out FILE\n");
    return 2;
  }
  using titan::kernels::Float8Recipe;
  c10::Dict<std::string, at::Tensor> dict;
  const int64_t B = 3, T = 13, K = 64, N = 48;  // M = 39 rows: not a multiple of anything
  int64_t seed = 0;
  for (Float8Recipe recipe : {Float8Recipe::kTensorwise, Float8Recipe::kRowwise, Float8Recipe::kRowwiseWithGwHp}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      at::manual_seed(++seed);
      at::Tensor x = at::randn({B, T, K}) * 3, w = at::randn({N, K}) * 0.05, go = at::randn({B, T, N}) * 1e-3;
      x[1][2].zero_();                   // a row with amax 0: the 1e-12 floor
      x[0][0][5] = 900;                  // an outlier: the rest of its row and tensor lose precision
      go[2][1][3] = 1e-9;                // tiny values
      x = x.to(dtype).requires_grad_(true);
      w = w.to(dtype).requires_grad_(true);
      go = go.to(dtype);
      titan::kernels::Float8Config config;
      config.recipe = recipe;
      config.emulate = true;
      at::Tensor out = titan::kernels::float8_linear(x, w, config);
      out.backward(go);
      const std::string p = std::string(titan::kernels::float8_recipe_name(recipe)) + "/" +
                            (dtype == at::kFloat ? "float32" : "bfloat16") + "/";
      dict.insert(p + "x", x.detach().clone());
      dict.insert(p + "w", w.detach().clone());
      dict.insert(p + "go", go.clone());
      dict.insert(p + "out", out.detach().clone());
      dict.insert(p + "grad_x", x.grad().clone());
      dict.insert(p + "grad_w", w.grad().clone());
    }
  }
  // MX: the tokens (B*T = 64), K and N multiples of the 32-element block.
  for (const char* recipe : {"mxfp8_cublas", "mxfp8_cublas_rceil"}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      at::manual_seed(++seed);
      at::Tensor x = at::randn({4, 16, 64}) * 3, w = at::randn({96, 64}) * 0.05, go = at::randn({4, 16, 96}) * 1e-3;
      x[1][2].narrow(0, 0, 32).zero_();  // an all-zero block
      x[0][0][5] = 900;                  // an outlier: only its block loses precision
      go[2][1][3] = 1e-30;               // a tiny value
      x = x.to(dtype).requires_grad_(true);
      w = w.to(dtype).requires_grad_(true);
      go = go.to(dtype);
      at::Tensor out = titan::kernels::mx_linear(x, w, *titan::kernels::mx_recipe(recipe));
      out.backward(go);
      const std::string p = std::string(recipe) + "/" + (dtype == at::kFloat ? "float32" : "bfloat16") + "/";
      dict.insert(p + "x", x.detach().clone());
      dict.insert(p + "w", w.detach().clone());
      dict.insert(p + "go", go.clone());
      dict.insert(p + "out", out.detach().clone());
      dict.insert(p + "grad_x", x.grad().clone());
      dict.insert(p + "grad_w", w.grad().clone());
    }
  }
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(argv[2], std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return 0;
}
