#include "kernels/ref/dequantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

constexpr uint16_t kHalfOne = 0x3c00;       // 1.0
constexpr uint16_t kHalfTwo = 0x4000;       // 2.0
constexpr uint16_t kHalfHalf = 0x3800;      // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;   // 0.25
constexpr uint16_t kHalfEighth = 0x3000;    // 0.125
constexpr uint16_t kHalfMinusOne = 0xbc00;  // -1.0

TEST(BlocksTest, SizesMatchTheTypeTable) {
  EXPECT_EQ(sizeof(BlockQ4_0), Traits(DType::kQ4_0).type_size);
  EXPECT_EQ(sizeof(BlockQ4_1), Traits(DType::kQ4_1).type_size);
  EXPECT_EQ(sizeof(BlockQ5_0), Traits(DType::kQ5_0).type_size);
  EXPECT_EQ(sizeof(BlockQ5_1), Traits(DType::kQ5_1).type_size);
  EXPECT_EQ(sizeof(BlockQ8_0), Traits(DType::kQ8_0).type_size);
  EXPECT_EQ(sizeof(BlockQ8_1), Traits(DType::kQ8_1).type_size);
  EXPECT_EQ(sizeof(BlockQ2_K), Traits(DType::kQ2_K).type_size);
  EXPECT_EQ(sizeof(BlockQ3_K), Traits(DType::kQ3_K).type_size);
  EXPECT_EQ(sizeof(BlockQ4_K), Traits(DType::kQ4_K).type_size);
  EXPECT_EQ(sizeof(BlockQ5_K), Traits(DType::kQ5_K).type_size);
  EXPECT_EQ(sizeof(BlockQ6_K), Traits(DType::kQ6_K).type_size);
  EXPECT_EQ(sizeof(BlockQ8_K), Traits(DType::kQ8_K).type_size);
  EXPECT_EQ(Traits(DType::kQ4_0).block_size, static_cast<uint32_t>(kQK4_0));
}

TEST(BlocksTest, FieldOffsetsMatchTheFileLayout) {
  EXPECT_EQ(offsetof(BlockQ5_1, qh), 4u);
  EXPECT_EQ(offsetof(BlockQ5_1, qs), 8u);
  EXPECT_EQ(offsetof(BlockQ2_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ2_K, d), 80u);
  EXPECT_EQ(offsetof(BlockQ3_K, scales), 96u);
  EXPECT_EQ(offsetof(BlockQ3_K, d), 108u);
  EXPECT_EQ(offsetof(BlockQ4_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qh), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(BlockQ6_K, scales), 192u);
  EXPECT_EQ(offsetof(BlockQ6_K, d), 208u);
  EXPECT_EQ(offsetof(BlockQ8_K, bsums), 260u);
}

// Test-side packers, written from the layout description in blocks.h (the inverse of the
// Unpack* helpers).
void PackScaleMinK4(const int sc[8], const int mn[8], uint8_t s[12]) {
  std::memset(s, 0, 12);
  for (int g = 0; g < 4; ++g) {
    s[g] = static_cast<uint8_t>((sc[g] & 63) | ((sc[g + 4] >> 4) << 6));
    s[g + 4] = static_cast<uint8_t>((mn[g] & 63) | ((mn[g + 4] >> 4) << 6));
    s[g + 8] = static_cast<uint8_t>((sc[g + 4] & 15) | ((mn[g + 4] & 15) << 4));
  }
}

void PackScalesQ3_K(const int S[16], uint8_t s[12]) {
  std::memset(s, 0, 12);
  for (int k = 0; k < 16; ++k) {
    s[k % 8] |= static_cast<uint8_t>((S[k] & 15) << (4 * (k / 8)));
    s[8 + k % 4] |= static_cast<uint8_t>((S[k] >> 4) << (2 * (k / 4)));
  }
}

TEST(BlocksTest, ScaleMinK4RoundTrips) {
  const int sc[8] = {0, 1, 31, 63, 17, 32, 48, 63};
  const int mn[8] = {63, 2, 0, 5, 63, 16, 1, 42};
  uint8_t s[12];
  PackScaleMinK4(sc, mn, s);
  for (int g = 0; g < 8; ++g) {
    int got_sc, got_mn;
    UnpackScaleMinK4(s, g, &got_sc, &got_mn);
    EXPECT_EQ(got_sc, sc[g]) << g;
    EXPECT_EQ(got_mn, mn[g]) << g;
  }
}

TEST(BlocksTest, ScalesQ3_KRoundTrip) {
  int S[16];
  for (int k = 0; k < 16; ++k) S[k] = (k * 37 + 5) % 64;
  uint8_t s[12];
  PackScalesQ3_K(S, s);
  for (int k = 0; k < 16; ++k) EXPECT_EQ(UnpackScaleQ3_K(s, k), S[k]) << k;
}

TEST(DequantizeTest, CanDequantizeMatchesTheTypeTable) {
  for (uint32_t id = 0; id < 64; ++id) {
    auto t = GetDTypeTraits(id);
    if (!t) continue;
    EXPECT_EQ(CanDequantize(t->type), t->can_dequantize) << t->name;
  }
}

TEST(DequantizeTest, F32F16BF16) {
  const float f32[3] = {1.5f, -0.0f, 3e38f};
  float out[3];
  ASSERT_TRUE(DequantizeRow(DType::kF32, f32, out, 3).ok());
  EXPECT_EQ(std::memcmp(f32, out, sizeof(out)), 0);

  const uint16_t f16[4] = {kHalfOne, 0xc000, 0x0001, 0x7c00};
  float out4[4];
  ASSERT_TRUE(DequantizeRow(DType::kF16, f16, out4, 4).ok());
  EXPECT_EQ(out4[0], 1.0f);
  EXPECT_EQ(out4[1], -2.0f);
  EXPECT_EQ(out4[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(out4[3], INFINITY);

  const uint16_t bf16[3] = {0x3f80, 0xc040, 0x0001};
  ASSERT_TRUE(DequantizeRow(DType::kBF16, bf16, out, 3).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(FloatBits(out[2]), 0x00010000u);
}

TEST(DequantizeTest, Q4_0) {
  BlockQ4_0 b;
  b.d = kHalfHalf;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(DType::kQ4_0, &b, y, 32).ok());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * (j - 8)) << j;            // low nibble j
    EXPECT_EQ(y[j + 16], 0.5f * (15 - j - 8)) << j;  // high nibble 15 - j
  }
  EXPECT_EQ(y[0], -4.0f);
  EXPECT_EQ(y[16], 3.5f);
}

TEST(DequantizeTest, Q4_1) {
  BlockQ4_1 b;
  b.d = kHalfQuarter;
  b.m = kHalfMinusOne;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(DType::kQ4_1, &b, y, 32).ok());
  EXPECT_EQ(y[0], -1.0f);   // 0.25 * 0 - 1
  EXPECT_EQ(y[15], 2.75f);  // 0.25 * 15 - 1
  EXPECT_EQ(y[16], 2.75f);  // high nibble of qs[0] is 15
  EXPECT_EQ(y[31], -1.0f);
  EXPECT_EQ(y[5], 0.25f);
}

TEST(DequantizeTest, Q5_0) {
  BlockQ5_0 b;
  b.d = kHalfOne;
  const uint32_t qh = 0xAAAAAAAAu;  // odd elements have the fifth bit
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (j << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(DType::kQ5_0, &b, y, 32).ok());
  for (int e = 0; e < 32; ++e) {
    const int q = (e % 16) | ((e & 1) << 4);
    EXPECT_EQ(y[e], static_cast<float>(q - 16)) << e;
  }
  EXPECT_EQ(y[0], -16.0f);
  EXPECT_EQ(y[31], 15.0f);
}

TEST(DequantizeTest, Q5_1) {
  BlockQ5_1 b;
  b.d = kHalfTwo;
  b.m = kHalfHalf;
  const uint8_t qh[4] = {0x01, 0x00, 0x00, 0x80};  // elements 0 and 31
  std::memcpy(b.qh, qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = 0xF3;  // low 3, high 15
  float y[32];
  ASSERT_TRUE(DequantizeRow(DType::kQ5_1, &b, y, 32).ok());
  EXPECT_EQ(y[0], 2.0f * 19 + 0.5f);
  EXPECT_EQ(y[1], 2.0f * 3 + 0.5f);
  EXPECT_EQ(y[16], 2.0f * 15 + 0.5f);
  EXPECT_EQ(y[31], 2.0f * 31 + 0.5f);
}

TEST(DequantizeTest, Q8_0) {
  BlockQ8_0 b[2];
  b[0].d = kHalfEighth;
  b[1].d = kHalfMinusOne;
  for (int e = 0; e < 32; ++e) {
    b[0].qs[e] = static_cast<int8_t>(e - 16);
    b[1].qs[e] = static_cast<int8_t>(e == 0 ? -128 : 127);
  }
  float y[64];
  ASSERT_TRUE(DequantizeRow(DType::kQ8_0, b, y, 64).ok());
  for (int e = 0; e < 32; ++e) EXPECT_EQ(y[e], (e - 16) / 8.0f) << e;
  EXPECT_EQ(y[32], 128.0f);
  EXPECT_EQ(y[33], -127.0f);
}

TEST(DequantizeTest, Q2_K) {
  BlockQ2_K b;
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  std::memset(b.scales, 0x21, sizeof(b.scales));  // scale 1, min 2
  b.scales[5] = 0x4F;                             // group 5: scale 15, min 4
  std::memset(b.qs, 0xE4, sizeof(b.qs));          // 2-bit fields 0, 1, 2, 3
  float y[256];
  ASSERT_TRUE(DequantizeRow(DType::kQ2_K, &b, y, 256).ok());
  // Element e = 128h + 32j + l has q = j; y = 1 * q - 0.5 * 2 outside group 5.
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[32], 0.0f);
  EXPECT_EQ(y[64], 1.0f);
  EXPECT_EQ(y[79], 1.0f);
  EXPECT_EQ(y[96], 2.0f);
  EXPECT_EQ(y[128], -1.0f);
  EXPECT_EQ(y[255], 2.0f);
  // Group 5 is elements 80..95 (j = 2): 15 * 2 - 0.5 * 4.
  EXPECT_EQ(y[80], 28.0f);
  EXPECT_EQ(y[95], 28.0f);
}

TEST(DequantizeTest, Q3_K) {
  BlockQ3_K b;
  b.d = kHalfOne;
  int S[16];
  for (int k = 0; k < 16; ++k) S[k] = 33;  // signed scale +1
  S[15] = 0;                               // signed scale -32
  S[2] = 63;                               // +31
  PackScalesQ3_K(S, b.scales);
  std::memset(b.hmask, 0xFF, sizeof(b.hmask));
  b.hmask[3] = 0xFE;                      // element 3 (h 0, j 0): no high bit -> q - 4
  b.hmask[4] = 0x7F;                      // element 128 + 96 + 4 (h 1, j 3) likewise
  std::memset(b.qs, 0xE4, sizeof(b.qs));  // q_low = j
  float y[256];
  ASSERT_TRUE(DequantizeRow(DType::kQ3_K, &b, y, 256).ok());
  EXPECT_EQ(y[0], 0.0f);    // group 0: scale 1, q 0
  EXPECT_EQ(y[3], -4.0f);   // q 0 - 4
  EXPECT_EQ(y[32], 31.0f);  // group 2 (elements 32..47, j 1): scale 31, q 1
  EXPECT_EQ(y[64], 2.0f);
  EXPECT_EQ(y[96], 3.0f);
  EXPECT_EQ(y[228], -1.0f);  // group 14, q 3 - 4
  EXPECT_EQ(y[229], 3.0f);
  EXPECT_EQ(y[240], -96.0f);  // group 15: scale -32, q 3
  EXPECT_EQ(y[255], -96.0f);
}

TEST(DequantizeTest, Q4_K) {
  BlockQ4_K b;
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  const int sc[8] = {1, 2, 3, 4, 60, 61, 62, 63};
  const int mn[8] = {0, 1, 2, 3, 40, 41, 42, 43};
  PackScaleMinK4(sc, mn, b.scales);
  std::memset(b.qs, 0x5A, sizeof(b.qs));  // even groups q 10, odd groups q 5
  float y[256];
  ASSERT_TRUE(DequantizeRow(DType::kQ4_K, &b, y, 256).ok());
  for (int g = 0; g < 8; ++g) {
    const float q = g % 2 == 0 ? 10.0f : 5.0f;
    const float want = sc[g] * q - 0.5f * mn[g];
    EXPECT_EQ(y[32 * g], want) << g;
    EXPECT_EQ(y[32 * g + 31], want) << g;
  }
  EXPECT_EQ(y[0], 10.0f);
  EXPECT_EQ(y[255], 63 * 5 - 21.5f);
}

TEST(DequantizeTest, Q5_K) {
  BlockQ5_K b;
  b.d = kHalfTwo;
  b.dmin = kHalfOne;
  const int sc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const int mn[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  PackScaleMinK4(sc, mn, b.scales);
  std::memset(b.qh, 0x55, sizeof(b.qh));  // groups 0, 2, 4, 6 get the fifth bit
  b.qh[7] = 0x54;                         // ... except element 7 of group 0
  std::memset(b.qs, 0x5A, sizeof(b.qs));
  float y[256];
  ASSERT_TRUE(DequantizeRow(DType::kQ5_K, &b, y, 256).ok());
  for (int g = 0; g < 8; ++g) {
    const float q = g % 2 == 0 ? 26.0f : 5.0f;
    EXPECT_EQ(y[32 * g + 1], 2.0f * sc[g] * q - mn[g]) << g;
  }
  EXPECT_EQ(y[7], 2.0f * 1 * 10 - 8);
}

TEST(DequantizeTest, Q6_K) {
  BlockQ6_K b;
  b.d = kHalfHalf;
  for (int g = 0; g < 16; ++g) b.scales[g] = static_cast<int8_t>(g - 8);
  std::memset(b.ql, 0x21, sizeof(b.ql));  // low nibble 1, high nibble 2
  std::memset(b.qh, 0xE4, sizeof(b.qh));  // 2-bit fields 0, 1, 2, 3
  b.ql[64 + 32 + 5] = 0x2F;               // element 128 + 32 + 5: low bits 15
  float y[256];
  ASSERT_TRUE(DequantizeRow(DType::kQ6_K, &b, y, 256).ok());
  // Element 128h + 32j + l: j 0: 1 | 0 << 4; j 1: 1 | 1 << 4; j 2: 2 | 2 << 4; j 3: 2 | 3 << 4.
  const int q[4] = {1 - 32, 17 - 32, 34 - 32, 50 - 32};
  for (int e = 0; e < 256; ++e) {
    if (e == 128 + 32 + 5) continue;
    const float scale = 0.5f * static_cast<float>(e / 16 - 8);
    EXPECT_EQ(y[e], scale * static_cast<float>(q[(e / 32) % 4])) << e;
  }
  EXPECT_EQ(y[0], 0.5f * -8 * -31);
  EXPECT_EQ(y[128 + 32 + 5], 0.5f * (10 - 8) * (31 - 32));
}

TEST(DequantizeTest, ZeroElementsIsFine) {
  float y = 42.0f;
  EXPECT_TRUE(DequantizeRow(DType::kQ4_K, nullptr, &y, 0).ok());
  EXPECT_TRUE(DequantizeRow(DType::kF16, nullptr, &y, 0).ok());
  EXPECT_EQ(y, 42.0f);
}

TEST(DequantizeTest, RejectsBadElementCounts) {
  std::vector<uint8_t> src(4096, 0);
  std::vector<float> dst(1024, 7.0f);
  for (auto [type, n] : std::initializer_list<std::pair<DType, int64_t>>{{DType::kQ4_0, 31},
                                                                         {DType::kQ8_0, 48},
                                                                         {DType::kQ4_K, 100},
                                                                         {DType::kQ6_K, 32},
                                                                         {DType::kQ2_K, 257},
                                                                         {DType::kF32, -1},
                                                                         {DType::kQ4_0, -32}}) {
    Status s = DequantizeRow(type, src.data(), dst.data(), n);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << DTypeName(type) << " " << n;
  }
  for (float v : dst) ASSERT_EQ(v, 7.0f);  // untouched
}

TEST(DequantizeTest, RejectsTypesWithoutAKernel) {
  std::vector<uint8_t> src(4096, 0);
  std::vector<float> dst(1024);
  for (DType type :
       {DType::kQ8_1, DType::kQ8_K, DType::kIQ2_XXS, DType::kIQ4_NL, DType::kI8, DType::kF64,
        DType::kTQ1_0, DType::kMXFP4, static_cast<DType>(4), static_cast<DType>(1000)}) {
    Status s = DequantizeRow(type, src.data(), dst.data(), 256);
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << static_cast<uint32_t>(type);
  }
  EXPECT_NE(
      DequantizeRow(static_cast<DType>(1000), src.data(), dst.data(), 256).message().find("1000"),
      std::string::npos);
}

// A row of several blocks decodes block by block.
TEST(DequantizeTest, RowOfManyBlocks) {
  std::vector<BlockQ8_0> blocks(5);
  for (int b = 0; b < 5; ++b) {
    blocks[b].d = FloatToFp16(static_cast<float>(b + 1));
    for (int e = 0; e < 32; ++e) blocks[b].qs[e] = static_cast<int8_t>(e);
  }
  std::vector<float> y(160);
  ASSERT_TRUE(DequantizeRow(DType::kQ8_0, blocks.data(), y.data(), 160).ok());
  for (int b = 0; b < 5; ++b) {
    for (int e = 0; e < 32; ++e) EXPECT_EQ(y[32 * b + e], static_cast<float>((b + 1) * e));
  }
}

}  // namespace
}  // namespace ferry
