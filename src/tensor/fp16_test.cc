#include "tensor/fp16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ferry {
namespace {

// binary16 value by its definition, computed in double (independent of Fp16ToFloat).
double HalfValue(uint16_t h) {
  const int sign = h >> 15;
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(1.0 + mant / 1024.0, exp - 15);
  }
  return sign ? -v : v;
}

TEST(Fp16Test, DecodesEveryHalfByDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFloat(static_cast<uint16_t>(h));
    const double want = HalfValue(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      // The payload moves to the top of the f32 mantissa, unchanged (numpy does the same).
      EXPECT_EQ(FloatBits(f), ((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), want) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0) << h;
    }
  }
}

TEST(Fp16Test, EveryHalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_EQ(FloatToFp16(Fp16ToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

// f32 from its bit pattern, to write test cases exactly.
float F(uint32_t bits) { return BitsToFloat(bits); }

TEST(Fp16Test, RoundsToNearestEvenInTheNormalRange) {
  EXPECT_EQ(FloatToFp16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToFp16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToFp16(0.1f), 0x2e66);  // 0.0999755859375 is nearer than 0.10009765625
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
  EXPECT_EQ(FloatToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(FloatToFp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Just above and below a tie.
  EXPECT_EQ(FloatToFp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  EXPECT_EQ(FloatToFp16(std::nextafter(1.0f + 3 * std::ldexp(1.0f, -11), 0.0f)), 0x3c01);
  // Rounding up carries into the exponent: 2 - 2^-12 -> 2.
  EXPECT_EQ(FloatToFp16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
  EXPECT_EQ(FloatToFp16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToFp16(0.0f), 0x0000);
}

TEST(Fp16Test, OverflowsToInfinity) {
  EXPECT_EQ(FloatToFp16(65504.0f), 0x7bff);                        // largest half
  EXPECT_EQ(FloatToFp16(std::nextafter(65520.0f, 0.0f)), 0x7bff);  // below the tie
  EXPECT_EQ(FloatToFp16(65520.0f), 0x7c00);                        // tie -> even -> inf
  EXPECT_EQ(FloatToFp16(-65520.0f), 0xfc00);
  EXPECT_EQ(FloatToFp16(1e10f), 0x7c00);
  EXPECT_EQ(FloatToFp16(F(0x7f7fffffu)), 0x7c00);  // FLT_MAX
  EXPECT_EQ(FloatToFp16(INFINITY), 0x7c00);
  EXPECT_EQ(FloatToFp16(-INFINITY), 0xfc00);
}

TEST(Fp16Test, RoundsIntoAndOutOfSubnormals) {
  const float tiny = std::ldexp(1.0f, -24);  // smallest subnormal half
  EXPECT_EQ(FloatToFp16(tiny), 0x0001);
  EXPECT_EQ(FloatToFp16(-tiny), 0x8001);
  EXPECT_EQ(FloatToFp16(tiny / 2), 0x0000);  // tie with 0 -> 0 (even)
  EXPECT_EQ(FloatToFp16(-tiny / 2), 0x8000);
  EXPECT_EQ(FloatToFp16(std::nextafter(tiny / 2, 1.0f)), 0x0001);  // above the tie
  EXPECT_EQ(FloatToFp16(std::nextafter(tiny / 2, 0.0f)), 0x0000);
  EXPECT_EQ(FloatToFp16(1.5f * tiny), 0x0002);     // tie 1|2 -> 2
  EXPECT_EQ(FloatToFp16(2.5f * tiny), 0x0002);     // tie 2|3 -> 2
  EXPECT_EQ(FloatToFp16(1023.0f * tiny), 0x03ff);  // largest subnormal
  EXPECT_EQ(FloatToFp16(1023.5f * tiny), 0x0400);  // tie -> smallest normal
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToFp16(1e-30f), 0x0000);
  EXPECT_EQ(FloatToFp16(F(0x00000001u)), 0x0000);  // f32 subnormal
  EXPECT_EQ(FloatToFp16(-F(0x00000001u)), 0x8000);
  // Every f32 in the subnormal-half range rounds like round-half-even of x * 2^24.
  for (uint32_t bits = 0x33000000u; bits < 0x38800000u; bits += 97) {
    const float x = F(bits);
    const double scaled = static_cast<double>(x) * 16777216.0;  // exact
    const double want = std::nearbyint(scaled);                 // ties to even
    ASSERT_EQ(FloatToFp16(x), static_cast<uint16_t>(want)) << std::hex << bits;
  }
}

TEST(Fp16Test, NaNKeepsSignAndPayloadLikeNumpy) {
  EXPECT_EQ(FloatToFp16(F(0x7fc00000u)), 0x7e00);  // the default quiet NaN
  EXPECT_EQ(FloatToFp16(F(0xffc00000u)), 0xfe00);
  EXPECT_EQ(FloatToFp16(F(0x7fa00000u)), 0x7d00);  // signaling NaN: not quieted
  EXPECT_EQ(FloatToFp16(F(0xff812345u)), 0xfc09);  // payload truncated to its top 10 bits
  EXPECT_EQ(FloatToFp16(F(0x7f800001u)), 0x7c01);  // top bits zero: still a NaN
}

// Compares against the compiler's binary16 type where it has one (GCC 12+ on x86-64, Clang).
#if defined(__FLT16_MANT_DIG__)
TEST(Fp16Test, MatchesCompilerFloat16OnAStrideOfAllFloats) {
  for (uint64_t bits = 0; bits <= 0xffffffffu; bits += 251) {
    const float x = F(static_cast<uint32_t>(bits));
    if (std::isnan(x)) continue;  // NaN payload rules differ between implementations
    const _Float16 h = static_cast<_Float16>(x);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(FloatToFp16(x), want) << std::hex << bits;
  }
}
#endif

TEST(Bf16Test, DecodesByShifting) {
  for (uint32_t b = 0; b < 65536; ++b) {
    ASSERT_EQ(FloatBits(Bf16ToFloat(static_cast<uint16_t>(b))), b << 16);
  }
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc040), -3.0f);
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(F(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(FloatToBf16(F(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(FloatToBf16(F(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBf16(F(0x3f807fffu)), 0x3f80);
  EXPECT_EQ(FloatToBf16(F(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to infinity
  EXPECT_EQ(FloatToBf16(-INFINITY), 0xff80);
  EXPECT_EQ(FloatToBf16(F(0x00000001u)), 0x0000);  // f32 subnormal
  for (uint32_t b = 0; b < 65536; ++b) {           // every bf16 value (NaN included) round-trips
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(static_cast<uint16_t>(b))),
              ((b & 0x7fffu) > 0x7f80u) ? (b | 0x40u) : b)
        << std::hex << b;
  }
}

TEST(Bf16Test, NaNBecomesQuiet) {
  EXPECT_EQ(FloatToBf16(F(0x7f800001u)), 0x7fc0);
  EXPECT_EQ(FloatToBf16(F(0xff800001u)), 0xffc0);
  EXPECT_EQ(FloatToBf16(F(0x7fc00000u)), 0x7fc0);
  EXPECT_EQ(FloatToBf16(F(0x7fa5ffffu)), 0x7fe5);  // top payload bits kept, no rounding carry
}

}  // namespace
}  // namespace ferry
