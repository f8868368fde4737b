#include "kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/ref/ops.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

// Every fp16 value, values around the +-10 cut-offs, and random floats (not fp16-exact).
std::vector<float> Inputs() {
  std::vector<float> x;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(f)) x.push_back(f);
  }
  for (float f : {-10.0f, 10.0f, -9.999f, 9.999f, -10.001f, 10.001f, 0.0f, -0.0f}) x.push_back(f);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int i = 0; i < 100000; ++i) x.push_back(normal(rng));
  return x;
}

TEST(ActivationTest, GeluTanhF16MulIsBitwiseTheReference) {
  const std::vector<float> x = Inputs();
  std::vector<float> up(x.size());
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& u : up) u = normal(rng);
  ThreadPool pool(3);
  for (KernelPath path : {KernelPath::kPortable, KernelPath::kBest}) {  // kBest: F16C + AVX2
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> got = x;
      GeluTanhF16Mul(got.data(), up.data(), static_cast<int64_t>(got.size()), p, path);
      for (size_t i = 0; i < x.size(); ++i) {
        const float want = GeluTanhF16Ref(x[i]) * up[i];
        ASSERT_EQ(std::memcmp(&got[i], &want, 4), 0)
            << "x " << x[i] << " got " << got[i] << " want " << want
            << (path == KernelPath::kPortable ? " portable" : " avx2");
      }
    }
  }
}

TEST(ActivationTest, SiluMulPortableIsBitwiseTheReference) {
  const std::vector<float> x = Inputs();
  std::vector<float> up(x.size(), 1.5f);
  ThreadPool pool(2);
  std::vector<float> got = x;
  SiluMul(got.data(), up.data(), static_cast<int64_t>(got.size()), &pool, KernelPath::kPortable);
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = SiluRef(x[i]) * 1.5f;
    ASSERT_EQ(std::memcmp(&got[i], &want, 4), 0) << "x " << x[i];
  }
}

TEST(ActivationTest, SiluMulAvx2IsWithinAFewUlpOfTheReference) {
  if (!CpuHasAvx2Kernels()) GTEST_SKIP() << "no AVX2 on this CPU";
  const std::vector<float> x = Inputs();
  std::vector<float> up(x.size(), 1.5f);
  ThreadPool pool(3);
  std::vector<float> got = x, alone(x.size());
  SiluMul(got.data(), up.data(), static_cast<int64_t>(got.size()), &pool, KernelPath::kBest);
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(x[i])) {
      // +inf stays inf; -inf gives -inf (the reference: inf / inf = NaN).
      EXPECT_EQ(got[i], x[i] > 0 ? x[i] * 1.5f : -INFINITY) << "x " << x[i];
      continue;
    }
    const double want = static_cast<double>(SiluRef(x[i])) * 1.5;
    const double err = std::fabs(got[i] - want);
    // A few ulp; below e^-87 the reference is subnormal or 0 and the kernel's e^-x is clamped.
    ASSERT_LE(err, 4e-7 * std::fabs(want) + 1e-30) << "x " << x[i] << " got " << got[i];
    if (want != 0.0) worst = std::max(worst, err / std::fabs(want));
    // Where an element sits (vector body or tail) does not change it.
    float g = x[i];
    SiluMul(&g, &up[i], 1, nullptr, KernelPath::kBest);
    alone[i] = g;
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(x[i])) continue;
    ASSERT_EQ(std::memcmp(&alone[i], &got[i], 4), 0) << "x " << x[i];
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

}  // namespace
}  // namespace ferry
