#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <set>
#include <string>

namespace ferry {
namespace {

struct Expected {
  uint32_t id;
  const char* name;
  uint32_t block_size;
  uint32_t type_size;
  bool can_dequantize;
};

// ggml's type table (ggml.c type_traits; the same as gguf-py's GGML_QUANT_SIZES except Q8_1,
// which gguf-py 0.19.0 still lists with a stale 40 bytes: ggml's block_q8_1 is 2 + 2 + 32 = 36).
constexpr Expected kExpected[] = {
    {0, "f32", 1, 4, true},          {1, "f16", 1, 2, true},
    {2, "q4_0", 32, 18, true},       {3, "q4_1", 32, 20, true},
    {6, "q5_0", 32, 22, true},       {7, "q5_1", 32, 24, true},
    {8, "q8_0", 32, 34, true},       {9, "q8_1", 32, 36, false},
    {10, "q2_K", 256, 84, true},     {11, "q3_K", 256, 110, true},
    {12, "q4_K", 256, 144, true},    {13, "q5_K", 256, 176, true},
    {14, "q6_K", 256, 210, true},    {15, "q8_K", 256, 292, false},
    {16, "iq2_xxs", 256, 66, false}, {17, "iq2_xs", 256, 74, false},
    {18, "iq3_xxs", 256, 98, false}, {19, "iq1_s", 256, 50, false},
    {20, "iq4_nl", 32, 18, false},   {21, "iq3_s", 256, 110, false},
    {22, "iq2_s", 256, 82, false},   {23, "iq4_xs", 256, 136, false},
    {24, "i8", 1, 1, false},         {25, "i16", 1, 2, false},
    {26, "i32", 1, 4, false},        {27, "i64", 1, 8, false},
    {28, "f64", 1, 8, false},        {29, "iq1_m", 256, 56, false},
    {30, "bf16", 1, 2, true},        {34, "tq1_0", 256, 54, false},
    {35, "tq2_0", 256, 66, false},   {39, "mxfp4", 32, 17, false},
};

TEST(DTypeTest, TableMatchesGgml) {
  for (const Expected& e : kExpected) {
    SCOPED_TRACE(e.name);
    auto t = GetDTypeTraits(e.id);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(static_cast<uint32_t>(t->type), e.id);
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block_size);
    EXPECT_EQ(t->type_size, e.type_size);
    EXPECT_EQ(t->can_dequantize, e.can_dequantize);
    // Traits() and DTypeName() read the same row.
    EXPECT_EQ(Traits(t->type).type_size, e.type_size);
    EXPECT_EQ(DTypeName(t->type), e.name);
  }
}

TEST(DTypeTest, UnknownIdsHaveNoTraits) {
  std::set<uint32_t> known;
  for (const Expected& e : kExpected) known.insert(e.id);
  for (uint32_t id = 0; id < 256; ++id) {
    EXPECT_EQ(GetDTypeTraits(id).has_value(), known.count(id) == 1) << id;
  }
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 0xffffffffu}) {
    EXPECT_FALSE(GetDTypeTraits(id).has_value()) << id;
  }
}

TEST(DTypeTest, KSuperBlockIs256) {
  EXPECT_EQ(kQK_K, 256);
  for (DType t :
       {DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_K}) {
    EXPECT_EQ(Traits(t).block_size, static_cast<uint32_t>(kQK_K));
  }
}

TEST(DTypeTest, ParsesNamesCaseInsensitively) {
  for (const Expected& e : kExpected) {
    auto t = ParseDType(e.name);
    ASSERT_TRUE(t.ok()) << e.name;
    EXPECT_EQ(static_cast<uint32_t>(*t), e.id);
    std::string upper = e.name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto u = ParseDType(upper);
    ASSERT_TRUE(u.ok()) << upper;
    EXPECT_EQ(*u, *t);
  }
  EXPECT_EQ(*ParseDType("Q4_K"), DType::kQ4_K);
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
}

TEST(DTypeTest, RejectsUnknownNames) {
  for (const char* name : {"", "q4", "q4_k_m", "f32 ", "float32", "q4_2"}) {
    auto t = ParseDType(name);
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(DTypeTest, RowBytes) {
  EXPECT_EQ(*RowBytes(DType::kF32, 10), 40u);
  EXPECT_EQ(*RowBytes(DType::kF16, 3), 6u);
  EXPECT_EQ(*RowBytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(*RowBytes(DType::kQ4_K, 512), 288u);
  EXPECT_EQ(*RowBytes(DType::kQ6_K, 256), 210u);
  EXPECT_EQ(*RowBytes(DType::kQ8_0, 0), 0u);
  // Not a multiple of the block size.
  auto bad = RowBytes(DType::kQ4_K, 100);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(RowBytes(DType::kQ8_0, 33).ok());
  // 2^62 f32 elements are 2^64 bytes: overflow.
  auto huge = RowBytes(DType::kF32, uint64_t{1} << 62);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*RowBytes(DType::kF32, (uint64_t{1} << 62) - 1), UINT64_MAX - 3);  // 2^64 - 4
}

}  // namespace
}  // namespace ferry
