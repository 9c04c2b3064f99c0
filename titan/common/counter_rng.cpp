#include "titan/common/counter_rng.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <functional>
#include <limits>
#include <numbers>

namespace titan {

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// 53 random bits from two words, as a double in [0, 1).
inline double unit(uint32_t a, uint32_t b) {
  return static_cast<double>((static_cast<uint64_t>(a) << 21) ^ (b >> 11)) * 0x1.0p-53;
}

// Calls f(box element index, global flat index, count) for every run of consecutive elements
// of the box (one per row of the box, rows in parallel).
void for_each_run(const CounterRng::Box& box, const std::function<void(int64_t, int64_t, int64_t)>& f) {
  const size_t nd = box.shape.size();
  if (nd == 0) {
    f(0, 0, 1);
    return;
  }
  const int64_t inner = box.sizes[nd - 1];
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= box.sizes[d];
  if (inner == 0 || rows == 0) return;
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / inner), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      // Global flat index of the row's first element.
      int64_t rest = r, global = 0, stride = box.shape[nd - 1];
      for (size_t d = nd - 1; d-- > 0;) {
        const int64_t coord = rest % box.sizes[d] + box.offsets[d];
        rest /= box.sizes[d];
        global += coord * stride;
        stride *= box.shape[d];
      }
      f(r * inner, global + box.offsets[nd - 1], inner);
    }
  });
}

// Standard normals for elements [g, g + n) into out: Box-Muller in float on each Philox block,
// whose two values are elements 2k and 2k + 1.
void normals(const CounterRng& rng, float* out, int64_t g, int64_t n) {
  uint32_t w[4];
  for (int64_t j = 0; j < n;) {
    const uint64_t e = static_cast<uint64_t>(g + j);
    rng.block(e >> 1, w);
    const float u1 = 1.0f - static_cast<float>(w[0] >> 8) * 0x1.0p-24f;  // (0, 1]
    const float u2 = static_cast<float>(w[2] >> 8) * 0x1.0p-24f;
    const float r = std::sqrt(-2.0f * std::log(u1)), theta = 2.0f * std::numbers::pi_v<float> * u2;
    const float pair[2] = {r * std::cos(theta), r * std::sin(theta)};
    for (uint64_t k = e & 1; k < 2 && j < n; ++k, ++j) out[j] = pair[k];
  }
}

}  // namespace

CounterRng::CounterRng(uint64_t seed, std::string_view name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the name
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  const uint64_t k = splitmix64(seed ^ splitmix64(h));
  key_[0] = static_cast<uint32_t>(k);
  key_[1] = static_cast<uint32_t>(k >> 32);
}

void CounterRng::block(uint64_t i, uint32_t out[4]) const {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u, kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c[4] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), 0u, 0u};
  uint32_t k0 = key_[0], k1 = key_[1];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c[0], hi0, lo0);
    mulhilo(kMul1, c[2], hi1, lo1);
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n1 = lo1, n2 = hi0 ^ c[3] ^ k1, n3 = lo0;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  out[0] = c[0], out[1] = c[1], out[2] = c[2], out[3] = c[3];
}

double CounterRng::uniform(uint64_t i) const {
  uint32_t w[4];
  block(i >> 1, w);
  return (i & 1) ? unit(w[2], w[3]) : unit(w[0], w[1]);
}

double CounterRng::normal(uint64_t i) const {
  float v;
  normals(*this, &v, static_cast<int64_t>(i), 1);
  return v;
}

void CounterRng::fill_normal(float* out, const Box& box, double mean, double std) const {
  for_each_run(box, [&](int64_t k, int64_t g, int64_t n) {
    normals(*this, out + k, g, n);
    for (int64_t j = 0; j < n; ++j) out[k + j] = static_cast<float>(mean + std * out[k + j]);
  });
}

void CounterRng::fill_trunc_normal(float* out, const Box& box, double std, double lo, double hi) const {
  if (lo <= -6 * std && hi >= 6 * std) {
    // Bounds beyond 6 std cut off less than 2e-9 of the mass: a clamped normal is the same
    // distribution for any practical purpose, and much cheaper than the inverse CDF.
    for_each_run(box, [&](int64_t k, int64_t g, int64_t n) {
      normals(*this, out + k, g, n);
      for (int64_t j = 0; j < n; ++j)
        out[k + j] = static_cast<float>(std::fmin(std::fmax(std * out[k + j], lo), hi));
    });
    return;
  }
  // torch's trunc_normal_: a uniform in [2 cdf(lo) - 1, 2 cdf(hi) - 1] through erfinv, scaled
  // by std * sqrt(2), clamped.
  auto cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double a = 2 * cdf(lo / std) - 1, b = 2 * cdf(hi / std) - 1;
  for_each_run(box, [&](int64_t k, int64_t g, int64_t n) {
    for (int64_t j = 0; j < n; ++j) {
      const double v = erfinv(a + (b - a) * uniform(static_cast<uint64_t>(g + j))) * std * std::numbers::sqrt2;
      out[k + j] = static_cast<float>(std::fmin(std::fmax(v, lo), hi));
    }
  });
}

double erfinv(double x) {
  if (x <= -1.0) return -std::numeric_limits<double>::infinity();
  if (x >= 1.0) return std::numeric_limits<double>::infinity();
  // Giles' single-precision approximation ("Approximating the erfinv function", 2010) as the
  // start, then Newton steps on erf(y) - x = 0 to double precision.
  double w = -std::log((1.0 - x) * (1.0 + x)), p;
  if (w < 6.25) {
    w -= 3.125;
    p = -3.6444120640178196996e-21;
    for (double c : {-1.685059138182016589e-19, 1.2858480715256400167e-18, 1.115787767802518096e-17,
                     -1.333171662854620906e-16, 2.0972767875968561637e-17, 6.6376381343583238325e-15,
                     -4.0545662729752068639e-14, -8.1519341976054721522e-14, 2.6335093153082322977e-12,
                     -1.2975133253453532498e-11, -5.4154120542946279317e-11, 1.051212273321532285e-09,
                     -4.1126339803469836976e-09, -2.9070369957882005086e-08, 4.2347877827932403518e-07,
                     -1.3654692000834678645e-06, -1.3882523362786468719e-05, 0.0001867342080340571352,
                     -0.00074070253416626697512, -0.0060336708714301490533, 0.24015818242558961693,
                     1.6536545626831027356})
      p = c + p * w;
  } else if (w < 16.0) {
    w = std::sqrt(w) - 3.25;
    p = 2.2137376921775787049e-09;
    for (double c : {9.0756561938885390979e-08, -2.7517406297064545428e-07, 1.8239629214389227755e-08,
                     1.5027403968909827627e-06, -4.013867526981545969e-06, 2.9234449089955446044e-06,
                     1.2475304481671778723e-05, -4.7318229009055733981e-05, 6.8284851459573175448e-05,
                     2.4031110387097893999e-05, -0.0003550375203628474796, 0.00095328937973738049703,
                     -0.0016882755560235047313, 0.0024914420961078508066, -0.0037512085075692412107,
                     0.005370914553590063617, 1.0052589676941592334, 3.0838856104922207635})
      p = c + p * w;
  } else {
    w = std::sqrt(w) - 5.0;
    p = -2.7109920616438573243e-11;
    for (double c : {-2.5556418169965252055e-10, 1.5076572693500548083e-09, -3.7894654401267369937e-09,
                     7.6157012080783393804e-09, -1.4960026627149240478e-08, 2.9147953450901080826e-08,
                     -6.7711997758452339498e-08, 2.2900482228026654717e-07, -9.9298272942317002539e-07,
                     4.5260625972231537039e-06, -1.9681778105531670567e-05, 7.5995277030017761139e-05,
                     -0.00021503011930044477347, -0.00013871931833623122026, 1.0103004648645343977,
                     4.8499064014085844221})
      p = c + p * w;
  }
  double y = p * x;
  y -= (std::erf(y) - x) / (2.0 / std::sqrt(std::numbers::pi) * std::exp(-y * y));  // one Newton step
  return y;
}

}  // namespace titan
