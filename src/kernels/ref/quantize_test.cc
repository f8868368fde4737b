#include "kernels/ref/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ref/dequantize.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

TEST(QuantizeTest, F16AndBF16) {
  const float x[4] = {1.0f, -2.0f, 1.0f + std::ldexp(1.0f, -11), 65520.0f};
  uint16_t h[4];
  ASSERT_TRUE(QuantizeRow(DType::kF16, x, h, 4).ok());
  EXPECT_EQ(h[0], 0x3c00);
  EXPECT_EQ(h[1], 0xc000);
  EXPECT_EQ(h[2], 0x3c00);  // tie to even
  EXPECT_EQ(h[3], 0x7c00);  // overflow
  ASSERT_TRUE(QuantizeRow(DType::kBF16, x, h, 4).ok());
  EXPECT_EQ(h[0], 0x3f80);
  EXPECT_EQ(h[1], 0xc000);
  float f32[4];
  ASSERT_TRUE(QuantizeRow(DType::kF32, x, f32, 4).ok());
  EXPECT_EQ(std::memcmp(x, f32, sizeof(x)), 0);
}

// Q4_0 with max = -8 first: d = 1, q = trunc(x + 8.5) clipped to 0..15.
TEST(QuantizeTest, Q4_0KnownBlock) {
  float x[32] = {};
  x[0] = -8.0f;
  x[1] = 8.0f;    // same |x| later: max stays -8; q = 16 -> clipped to 15
  x[2] = 7.0f;    // 15
  x[3] = -0.5f;   // trunc(8.0) = 8 (a tie rounds up)
  x[4] = -0.51f;  // trunc(7.99) = 7
  x[5] = 0.49f;   // 8
  x[6] = -7.6f;   // trunc(0.9) = 0
  BlockQ4_0 b;
  ASSERT_TRUE(QuantizeRow(DType::kQ4_0, x, &b, 32).ok());
  EXPECT_EQ(b.d, 0x3c00);  // -8 / -8 = 1
  const int want[7] = {0, 15, 15, 8, 7, 8, 0};
  for (int e = 0; e < 7; ++e) EXPECT_EQ(b.qs[e] & 15, want[e]) << e;
  for (int e = 7; e < 16; ++e) EXPECT_EQ(b.qs[e] & 15, 8) << e;  // zeros
  for (int e = 0; e < 16; ++e) EXPECT_EQ(b.qs[e] >> 4, 8) << e;  // elements 16..31 are 0

  // +8 first: d = -1, so x = -8 maps to trunc(16.5) -> 15 and x = 8 to 0.
  std::swap(x[0], x[1]);
  ASSERT_TRUE(QuantizeRow(DType::kQ4_0, x, &b, 32).ok());
  EXPECT_EQ(b.d, 0xbc00);
  EXPECT_EQ(b.qs[0] & 15, 0);
  EXPECT_EQ(b.qs[1] & 15, 15);
}

TEST(QuantizeTest, Q4_0AllZeros) {
  float x[32] = {};
  BlockQ4_0 b;
  ASSERT_TRUE(QuantizeRow(DType::kQ4_0, x, &b, 32).ok());
  EXPECT_EQ(b.d, 0x8000);  // 0 / -8 = -0 (as numpy)
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], 0x88);
  float y[32];
  ASSERT_TRUE(DequantizeRow(DType::kQ4_0, &b, y, 32).ok());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(QuantizeTest, Q4_1KnownBlock) {
  float x[32];
  for (int e = 0; e < 32; ++e) x[e] = static_cast<float>(e % 16);  // min 0, max 15: d = 1
  x[3] = 0.5f;                                                     // trunc(1.0) = 1
  x[4] = 0.49f;                                                    // 0
  x[5] = 14.5f;                                                    // 15
  BlockQ4_1 b;
  ASSERT_TRUE(QuantizeRow(DType::kQ4_1, x, &b, 32).ok());
  EXPECT_EQ(b.d, 0x3c00);
  EXPECT_EQ(b.m, 0x0000);
  EXPECT_EQ(b.qs[3] & 15, 1);
  EXPECT_EQ(b.qs[4] & 15, 0);
  EXPECT_EQ(b.qs[5] & 15, 15);
  EXPECT_EQ(b.qs[6], 6 | (6 << 4));
  EXPECT_EQ(b.qs[15], 15 | (15 << 4));
}

TEST(QuantizeTest, Q5_0AndQ5_1KnownBlocks) {
  float x[32];
  for (int e = 0; e < 32; ++e) x[e] = static_cast<float>(e - 16);  // -16..15
  BlockQ5_0 b0;
  ASSERT_TRUE(QuantizeRow(DType::kQ5_0, x, &b0, 32).ok());
  EXPECT_EQ(b0.d, 0x3c00);  // max = -16: d = 1, q = x + 16
  uint32_t qh;
  std::memcpy(&qh, b0.qh, 4);
  EXPECT_EQ(qh, 0xFFFF0000u);  // q >= 16 exactly for e >= 16
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b0.qs[j], j | (j << 4)) << j;

  BlockQ5_1 b1;
  ASSERT_TRUE(QuantizeRow(DType::kQ5_1, x, &b1, 32).ok());
  EXPECT_EQ(Fp16ToFloat(b1.d), 1.0f);  // (15 - -16) / 31
  EXPECT_EQ(Fp16ToFloat(b1.m), -16.0f);
  std::memcpy(&qh, b1.qh, 4);
  EXPECT_EQ(qh, 0xFFFF0000u);
}

TEST(QuantizeTest, Q8_0RoundsHalfAwayFromZero) {
  float x[32] = {};
  x[0] = -127.0f;  // d = 1
  x[1] = 0.5f;
  x[2] = -0.5f;
  x[3] = 2.5f;
  x[4] = -2.5f;
  x[5] = 1.49f;
  x[6] = 126.5f;
  BlockQ8_0 b;
  ASSERT_TRUE(QuantizeRow(DType::kQ8_0, x, &b, 32).ok());
  EXPECT_EQ(b.d, 0x3c00);
  const int want[7] = {-127, 1, -1, 3, -3, 1, 127};
  for (int e = 0; e < 7; ++e) EXPECT_EQ(b.qs[e], want[e]) << e;

  float zeros[32] = {};
  ASSERT_TRUE(QuantizeRow(DType::kQ8_0, zeros, &b, 32).ok());
  EXPECT_EQ(b.d, 0x0000);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(b.qs[e], 0);
}

// ---- round trips ----

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

struct Errors {
  double relative_rms;  // rms(y - x) / rms(x)
  double max_abs;
};

Errors RoundTrip(DType type, const std::vector<float>& x, std::vector<float>* y_out = nullptr) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint64_t> storage(*RowBytes(type, static_cast<uint64_t>(n)) / 8 + 1);
  EXPECT_TRUE(QuantizeRow(type, x.data(), storage.data(), n).ok());
  std::vector<float> y(x.size());
  EXPECT_TRUE(DequantizeRow(type, storage.data(), y.data(), n).ok());
  double err2 = 0, x2 = 0, max_abs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i])) << i;
    const double d = static_cast<double>(y[i]) - x[i];
    err2 += d * d;
    x2 += static_cast<double>(x[i]) * x[i];
    max_abs = std::max(max_abs, std::fabs(d));
  }
  if (y_out) *y_out = y;
  return {x2 > 0 ? std::sqrt(err2 / x2) : std::sqrt(err2), max_abs};
}

// Bounds for N(0, 1) data, 256 * 64 values. With step s and rounding to nearest, the error is
// about uniform on [-s/2, s/2], so its rms is s / sqrt(12) (relative to rms(x) = 1). In a block
// of 32 normals the largest |x| is about 2.3 and the range about 4.3 on average, so:
//   Q8_0 s = 2.3/127 -> 0.0052;  Q5_0 s = 2.3/16 -> 0.041;  Q5_1 s = 4.3/31 -> 0.040;
//   Q4_0 s = 2.3/8 -> 0.083;     Q4_1 s = 4.3/15 -> 0.083.
// (Measured with this seed: 0.0054, 0.043, 0.038, 0.087, 0.078.) The K-quants fit each group's
// scale (and min) by weighted least squares instead of spanning its extremes: Q4_K (16 levels
// per group of 32, like Q4_1, plus 6-bit quantized group scales) measures 0.071; Q6_K (64
// levels per group of 16 whose |max| is about 1.8: s = 3.6/63 -> 0.016) measures 0.018.
// The bounds leave about 20-30% headroom; F16 and BF16 are bounded by their relative rounding
// error (2^-11 and 2^-8, times ~1/sqrt(3) for rms).
TEST(QuantizeRoundTripTest, GaussianErrorBounds) {
  const std::vector<float> x = Gaussian(256 * 64, 1234);
  const struct {
    DType type;
    double bound;
  } kCases[] = {
      {DType::kF32, 0.0},    {DType::kF16, 3e-4},  {DType::kBF16, 3e-3}, {DType::kQ8_0, 0.007},
      {DType::kQ5_0, 0.055}, {DType::kQ5_1, 0.05}, {DType::kQ4_0, 0.11}, {DType::kQ4_1, 0.1},
      {DType::kQ4_K, 0.1},   {DType::kQ6_K, 0.03},
  };
  for (const auto& c : kCases) {
    const Errors e = RoundTrip(c.type, x);
    EXPECT_LE(e.relative_rms, c.bound) << DTypeName(c.type);
    RecordProperty(std::string(DTypeName(c.type)), std::to_string(e.relative_rms));
  }
}

// The fitted K-quants must not be worse than the plain min/max grids with as many levels.
TEST(QuantizeRoundTripTest, KQuantsBeatTheirLegacyCounterparts) {
  const std::vector<float> x = Gaussian(256 * 64, 99);
  EXPECT_LT(RoundTrip(DType::kQ4_K, x).relative_rms, RoundTrip(DType::kQ4_1, x).relative_rms);
  EXPECT_LT(RoundTrip(DType::kQ6_K, x).relative_rms, RoundTrip(DType::kQ5_0, x).relative_rms / 2);
}

// Every value of a legacy type lands within half a step of the input, plus the fp16 rounding of
// d and m (|q| * |d - d_exact| + |m - m_exact| <= 2^-9 * max|x|). Exception: Q4_0 and Q5_0 put
// the block's largest |x| on level -8 (-16) and clip the opposite sign at +7 (+15), so a value
// near -max is off by up to a whole step.
TEST(QuantizeRoundTripTest, LegacyTypesStayWithinHalfAStep) {
  const std::vector<float> x = Gaussian(32 * 512, 7, 3.0f);
  const struct {
    DType type;
    float steps;  // step = amax / steps (symmetric) or (max - min) / steps
    bool symmetric;
  } kCases[] = {{DType::kQ4_0, 8, true},
                {DType::kQ5_0, 16, true},
                {DType::kQ8_0, 127, true},
                {DType::kQ4_1, 15, false},
                {DType::kQ5_1, 31, false}};
  for (const auto& c : kCases) {
    std::vector<float> y;
    RoundTrip(c.type, x, &y);
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0, lo = x[32 * b], hi = x[32 * b];
      for (int e = 0; e < 32; ++e) {
        amax = std::max(amax, std::fabs(x[32 * b + e]));
        lo = std::min(lo, x[32 * b + e]);
        hi = std::max(hi, x[32 * b + e]);
      }
      const float step = c.symmetric ? amax / c.steps : (hi - lo) / c.steps;
      const float half_steps = (c.type == DType::kQ4_0 || c.type == DType::kQ5_0) ? 1.0f : 0.5f;
      const float bound = half_steps * step + std::ldexp(amax, -9) + 1e-6f;
      for (int e = 0; e < 32; ++e) {
        const size_t i = 32 * b + e;
        ASSERT_LE(std::fabs(y[i] - x[i]), bound) << DTypeName(c.type) << " element " << i;
      }
    }
  }
}

// Shapes that stress the K-quant scale search: all-positive (min clamps to 0), all-negative,
// constant, all-zero, tiny and huge magnitudes, sparse outliers, mixed-scale groups.
TEST(QuantizeRoundTripTest, KQuantsOnAwkwardData) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  auto make = [&](auto f) {
    std::vector<float> x(256 * 4);
    for (size_t i = 0; i < x.size(); ++i) x[i] = f(i);
    return x;
  };
  const struct {
    const char* name;
    std::vector<float> x;
    double q4_k_bound, q6_k_bound;
  } kCases[] = {
      {"relu", make([&](size_t) { return std::max(0.0f, uniform(rng) * 2 - 1); }), 0.1, 0.03},
      {"positive", make([&](size_t) { return 1.0f + uniform(rng); }), 0.05, 0.03},
      {"negative", make([&](size_t) { return -1.0f - uniform(rng); }), 0.05, 0.03},
      {"constant", make([](size_t) { return 0.75f; }), 1e-3, 1e-3},
      {"small", make([&](size_t) { return (uniform(rng) - 0.5f) * 0.1f; }), 0.1, 0.03},
      {"huge", make([&](size_t) { return (uniform(rng) - 0.5f) * 1e4f; }), 0.1, 0.03},
      {"outliers",
       make([&](size_t i) { return i % 97 == 0 ? 50.0f : (uniform(rng) - 0.5f) * 0.1f; }), 0.1,
       0.03},
      {"mixed groups",
       make([&](size_t i) { return (uniform(rng) - 0.5f) * ((i / 16) % 3 == 0 ? 10.0f : 0.1f); }),
       0.1, 0.03},
  };
  for (const auto& c : kCases) {
    EXPECT_LE(RoundTrip(DType::kQ4_K, c.x).relative_rms, c.q4_k_bound) << c.name;
    EXPECT_LE(RoundTrip(DType::kQ6_K, c.x).relative_rms, c.q6_k_bound) << c.name;
  }
  const std::vector<float> zeros(512, 0.0f);
  std::vector<float> y;
  EXPECT_EQ(RoundTrip(DType::kQ4_K, zeros, &y).max_abs, 0.0);
  EXPECT_EQ(RoundTrip(DType::kQ6_K, zeros, &y).max_abs, 0.0);
}

// The super-block scales are fp16, whose smallest step is 2^-24: for values around 1e-5 the
// Q6_K scale d (about max|x| / 32 / 128) underflows and the block decodes to zeros (as in
// llama.cpp). The output stays finite and never larger than the input.
TEST(QuantizeRoundTripTest, TinyValuesUnderflowTheFp16Scale) {
  std::vector<float> x = Gaussian(256, 11, 1e-5f);
  for (DType type : {DType::kQ4_K, DType::kQ6_K}) {
    std::vector<float> y;
    const Errors e = RoundTrip(type, x, &y);
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    for (float v : y) EXPECT_LE(std::fabs(v), 1.01f * amax) << DTypeName(type);
    EXPECT_LE(e.relative_rms, 1.0) << DTypeName(type);
  }
}

TEST(QuantizeTest, Q6_KUsesTheFullScaleRange) {
  const std::vector<float> x = Gaussian(256, 3);
  BlockQ6_K b;
  ASSERT_TRUE(QuantizeRow(DType::kQ6_K, x.data(), &b, 256).ok());
  int extreme = 0;
  for (int g = 0; g < 16; ++g) extreme = std::max(extreme, std::abs(int{b.scales[g]}));
  EXPECT_EQ(extreme, 128);  // the largest group scale maps to -128
}

TEST(QuantizeTest, RejectsBadElementCounts) {
  std::vector<float> x(1024, 1.0f);
  std::vector<uint8_t> dst(4096, 0xAB);
  for (auto [type, n] : std::initializer_list<std::pair<DType, int64_t>>{{DType::kQ4_0, 31},
                                                                         {DType::kQ8_0, 48},
                                                                         {DType::kQ4_K, 100},
                                                                         {DType::kQ6_K, 128},
                                                                         {DType::kF16, -1},
                                                                         {DType::kQ5_1, -32}}) {
    Status s = QuantizeRow(type, x.data(), dst.data(), n);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << DTypeName(type) << " " << n;
  }
  for (uint8_t v : dst) ASSERT_EQ(v, 0xAB);  // untouched
}

TEST(QuantizeTest, RejectsTypesWithoutAQuantizer) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> dst(4096);
  for (DType type : {DType::kQ2_K, DType::kQ3_K, DType::kQ5_K, DType::kQ8_1, DType::kQ8_K,
                     DType::kIQ4_NL, DType::kI32, static_cast<DType>(5)}) {
    EXPECT_EQ(QuantizeRow(type, x.data(), dst.data(), 256).code(), StatusCode::kUnimplemented)
        << static_cast<uint32_t>(type);
    EXPECT_FALSE(CanQuantize(type));
  }
}

}  // namespace
}  // namespace ferry
