#include "kernels/cpu/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tensor/fp16.h"

namespace ferry {
namespace {

// Every one of the 65536 fp16 values, at every alignment and length remainder the vector loop
// and its tail see: the fast path equals the reference bit for bit (NaN for NaN).
TEST(ConvertTest, F16ToF32MatchesTheReferenceForEveryValue) {
  std::vector<uint16_t> all(65536 + 7);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);  // odd: a permutation
  for (int64_t offset : {0, 1, 3}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9},
                      int64_t{65536}}) {
      std::vector<float> fast(static_cast<size_t>(n) + 1, -1.0f), ref(static_cast<size_t>(n));
      ConvertF16ToF32(all.data() + offset, fast.data(), n);
      ConvertF16ToF32(all.data() + offset, ref.data(), n, KernelPath::kPortable);
      for (int64_t i = 0; i < n; ++i) {
        const float r = Fp16ToFloat(all[static_cast<size_t>(offset + i)]);
        uint32_t a, b, c;
        std::memcpy(&a, &fast[static_cast<size_t>(i)], 4);
        std::memcpy(&b, &ref[static_cast<size_t>(i)], 4);
        std::memcpy(&c, &r, 4);
        EXPECT_EQ(b, c) << i;  // the portable path is the reference
        if (std::isnan(r)) {
          EXPECT_TRUE(std::isnan(fast[static_cast<size_t>(i)])) << i;
        } else {
          ASSERT_EQ(a, c) << "fp16 bits " << all[static_cast<size_t>(offset + i)];
        }
      }
      EXPECT_EQ(fast[static_cast<size_t>(n)], -1.0f);  // nothing written past n
    }
  }
}

// Floats around every fp16 value and rounding boundary (the midpoints between neighbours, both
// sides of them, overflow, subnormals), plus random bit patterns: the fast path equals
// FloatToFp16 bit for bit, NaN for NaN, at every tail length.
TEST(ConvertTest, F32ToF16MatchesTheReference) {
  std::vector<float> x;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFloat(static_cast<uint16_t>(h));
    if (!std::isfinite(f)) continue;
    x.push_back(f);
    x.push_back(std::nextafter(f, INFINITY));
    x.push_back(std::nextafter(f, -INFINITY));
    const float g = Fp16ToFloat(static_cast<uint16_t>(h + 1));
    if (std::isfinite(g) && (h & 0x7fff) != 0x7bff) {
      const float mid = 0.5f * (f + g);  // exact in f32: a tie
      x.push_back(mid);
      x.push_back(std::nextafter(mid, INFINITY));
      x.push_back(std::nextafter(mid, -INFINITY));
    }
  }
  for (float f : {65504.0f, 65519.0f, 65520.0f, 70000.0f, 1e30f, -1e30f, INFINITY, -INFINITY,
                  1e-8f, -1e-8f, 0.0f, -0.0f, NAN}) {
    x.push_back(f);
  }
  std::mt19937 rng(9);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
  }
  for (int64_t offset : {0, 1, 5}) {
    const int64_t n = static_cast<int64_t>(x.size()) - offset;
    std::vector<uint16_t> fast(static_cast<size_t>(n) + 1, 0xABCD);
    ConvertF32ToF16(x.data() + offset, fast.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float f = x[static_cast<size_t>(offset + i)];
      const uint16_t want = FloatToFp16(f);
      if (std::isnan(f)) {
        EXPECT_TRUE(std::isnan(Fp16ToFloat(fast[static_cast<size_t>(i)]))) << i;
      } else {
        ASSERT_EQ(fast[static_cast<size_t>(i)], want) << "x " << f;
      }
    }
    EXPECT_EQ(fast[static_cast<size_t>(n)], 0xABCD);  // nothing written past n
  }
}

}  // namespace
}  // namespace ferry
