#include "base/bytes.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(BytesTest, Format) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(4 * kGiB), "4.00 GiB");
  EXPECT_EQ(FormatBytes(253113024), "241 MiB");
}

TEST(BytesTest, Parse) {
  EXPECT_EQ(*ParseBytes("123"), 123u);
  EXPECT_EQ(*ParseBytes("4KiB"), 4096u);
  EXPECT_EQ(*ParseBytes("4k"), 4096u);
  EXPECT_EQ(*ParseBytes("24GiB"), 24 * kGiB);
  EXPECT_EQ(*ParseBytes("1.5 G"), 3 * kGiB / 2);
  EXPECT_EQ(*ParseBytes("512MB"), 512 * kMiB);
}

TEST(BytesTest, ParseRejects) {
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("-5G").ok());
  EXPECT_FALSE(ParseBytes("5X").ok());
  EXPECT_FALSE(ParseBytes("GiB").ok());
  EXPECT_FALSE(ParseBytes("1.2.3").ok());
  EXPECT_EQ(ParseBytes("99999999999T").status().code(), StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace ferry
