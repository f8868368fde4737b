#include "kernels/cpu/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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

}  // namespace
}  // namespace ferry
