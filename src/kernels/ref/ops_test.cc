// RopeRef and YaRN's pieces (ggml's rope_yarn, rope_yarn_ramp, ggml_rope_yarn_corr_dims; the
// YaRN paper, arXiv:2309.00071). The forward pass is checked against llama.cpp in
// model/model_test.cc (synthetic-qwen2yarn-*, synthetic-llamafreqs-*); these pin the math itself.
#include "kernels/ref/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

namespace ferry {
namespace {

constexpr double kPi = std::numbers::pi;

// One head of `head_dim` with a unit vector (1, 0) in every rotated pair, rotated at `pos`.
// Returns the head; pair i's output is then (cos, sin) of its angle times its magnitude.
std::vector<float> RotateUnitPairs(const RopeParams& p, int64_t head_dim, int64_t pos) {
  std::vector<float> x(static_cast<size_t>(head_dim), 0.0f);
  const int64_t half = p.n_rot / 2;
  for (int64_t i = 0; i < half; ++i) x[static_cast<size_t>(p.neox ? i : 2 * i)] = 1.0f;
  for (int64_t i = p.n_rot; i < head_dim; ++i) x[static_cast<size_t>(i)] = 7.0f;
  RopeRef(x.data(), 1, head_dim, pos, p);
  return x;
}

// Pair i of a rotated head: (angle in (-pi, pi], magnitude).
std::pair<double, double> Pair(const RopeParams& p, const std::vector<float>& y, int64_t i) {
  const double a = y[static_cast<size_t>(p.neox ? i : 2 * i)];
  const double b = y[static_cast<size_t>(p.neox ? i + p.n_rot / 2 : 2 * i + 1)];
  return {std::atan2(b, a), std::hypot(a, b)};
}

// Angle difference wrapped to (-pi, pi].
double Wrap(double d) { return std::remainder(d, 2.0 * kPi); }

RopeParams Yarn(float factor) {
  RopeParams p;
  p.n_rot = 64;
  p.neox = true;
  p.base = 1e6f;
  p.freq_scale = 1.0f / factor;
  p.ext_factor = 1.0f;
  p.n_ctx_orig = 64;
  return p;
}

TEST(RopeRefTest, PlainAnglesPairingAndPassThrough) {
  for (bool neox : {false, true}) {
    RopeParams p;
    p.n_rot = 8;
    p.neox = neox;
    p.base = 10000.0f;
    const std::vector<float> y = RotateUnitPairs(p, 12, 5);
    for (int64_t i = 0; i < 4; ++i) {
      auto [angle, mag] = Pair(p, y, i);
      EXPECT_NEAR(Wrap(angle - 5.0 * std::pow(10000.0, -2.0 * i / 8)), 0.0, 2e-6) << i;
      EXPECT_NEAR(mag, 1.0, 1e-6);
    }
    for (int64_t i = 8; i < 12; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 7.0f);
  }
}

TEST(RopeRefTest, LinearScalingFreqFactorsAndAttnFactor) {
  RopeParams p;
  p.n_rot = 4;
  p.base = 100.0f;
  p.freq_scale = 0.5f;
  const float ff[2] = {1.0f, 4.0f};
  p.freq_factors = ff;
  p.attn_factor = 0.8f;  // without YaRN: the magnitude, nothing else
  const std::vector<float> y = RotateUnitPairs(p, 4, 3);
  auto [a0, m0] = Pair(p, y, 0);
  auto [a1, m1] = Pair(p, y, 1);
  EXPECT_NEAR(Wrap(a0 - 3.0 * 0.5), 0.0, 1e-6);
  EXPECT_NEAR(Wrap(a1 - 3.0 * 0.1 * 0.5 / 4.0), 0.0, 1e-6);  // 100^(-1/2) = 0.1
  EXPECT_NEAR(m0, 0.8, 1e-6);
  EXPECT_NEAR(m1, 0.8, 1e-6);
}

TEST(RopeRefTest, YarnCorrDims) {
  // The synthetic qwen2yarn model (as llama.cpp's ROPE nodes compute it: the ramp spans 0..6).
  RopeYarnDims d = RopeYarnCorrDims(Yarn(4.0f));
  EXPECT_EQ(d.lo, 0.0f);  // corr(32) = -2.65, clamped at 0
  EXPECT_EQ(d.hi, 6.0f);  // corr(1) = 5.38, rounded up
  // A Llama-2-sized head: n_rot 128, base 1e4, 4096 positions: corr(32) = 20.9, corr(1) = 45.0.
  RopeParams p = Yarn(4.0f);
  p.n_rot = 128;
  p.base = 10000.0f;
  p.n_ctx_orig = 4096;
  d = RopeYarnCorrDims(p);
  EXPECT_EQ(d.lo, 20.0f);
  EXPECT_EQ(d.hi, 46.0f);
  // Clamped at n_rot - 1 when even the slowest pair turns more than beta_slow times.
  p.n_ctx_orig = 1 << 30;
  p.n_rot = 8;
  EXPECT_EQ(RopeYarnCorrDims(p).hi, 7.0f);
}

TEST(RopeRefTest, YarnRampEndpoints) {
  const RopeYarnDims d{2.0f, 6.0f};
  EXPECT_EQ(RopeYarnRamp(d, 0), 1.0f);
  EXPECT_EQ(RopeYarnRamp(d, 2), 1.0f);  // lo: fully extrapolated
  EXPECT_EQ(RopeYarnRamp(d, 3), 0.75f);
  EXPECT_EQ(RopeYarnRamp(d, 4), 0.5f);
  EXPECT_EQ(RopeYarnRamp(d, 6), 0.0f);  // hi: fully interpolated
  EXPECT_EQ(RopeYarnRamp(d, 31), 0.0f);
  // lo == hi: a step, the width taken as 0.001.
  const RopeYarnDims step{3.0f, 3.0f};
  EXPECT_EQ(RopeYarnRamp(step, 3), 1.0f);
  EXPECT_EQ(RopeYarnRamp(step, 4), 0.0f);
}

TEST(RopeRefTest, YarnWithFactorOneIsPlainRope) {
  // s = 1: both angles coincide and YaRN's magnitude is 1 + 0.1 ln 1 = 1.
  RopeParams plain = Yarn(1.0f);
  plain.ext_factor = 0.0f;
  const RopeParams yarn = Yarn(1.0f);
  for (int64_t pos : {0, 1, 17, 200}) {
    std::vector<float> a(64), b(64);
    for (size_t i = 0; i < a.size(); ++i) a[i] = b[i] = std::sin(static_cast<float>(i) + 0.3f);
    RopeRef(a.data(), 1, 64, pos, plain);
    RopeRef(b.data(), 1, 64, pos, yarn);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << pos << " " << i;
  }
}

TEST(RopeRefTest, YarnMixesExtrapolatedAndInterpolatedAngles) {
  const float factor = 4.0f;
  RopeParams p = Yarn(factor);
  p.attn_factor = 0.9f;
  const RopeYarnDims d = RopeYarnCorrDims(p);  // [0, 6]
  const int64_t pos = 100;
  const std::vector<float> y = RotateUnitPairs(p, 64, pos);
  const double mscale = 0.9 * (1.0 + 0.1 * std::log(factor));
  for (int64_t i = 0; i < 32; ++i) {
    const double theta_e = pos * std::pow(1e6, -2.0 * i / 64);
    const double r = RopeYarnRamp(d, i);
    const double want = theta_e / factor * (1.0 - r) + theta_e * r;
    auto [angle, mag] = Pair(p, y, i);
    EXPECT_NEAR(Wrap(angle - want), 0.0, 2e-5) << i;
    EXPECT_NEAR(mag, mscale, 1e-6) << i;
  }
  // The endpoints: pair 0 keeps the unscaled angle, pairs from 6 on are interpolated.
  EXPECT_NEAR(Wrap(Pair(p, y, 0).first - pos), 0.0, 2e-5);
  const double theta6 = pos * std::pow(1e6, -12.0 / 64);
  EXPECT_NEAR(Wrap(Pair(p, y, 6).first - theta6 / factor), 0.0, 1e-6);
}

}  // namespace
}  // namespace ferry
