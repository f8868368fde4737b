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

TEST(ActivationTest, SiluMulIsBitwiseTheReference) {
  const std::vector<float> x = Inputs();
  std::vector<float> up(x.size(), 1.5f);
  ThreadPool pool(2);
  std::vector<float> got = x;
  SiluMul(got.data(), up.data(), static_cast<int64_t>(got.size()), &pool);
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = SiluRef(x[i]) * 1.5f;
    ASSERT_EQ(std::memcmp(&got[i], &want, 4), 0) << "x " << x[i];
  }
}

}  // namespace
}  // namespace ferry
