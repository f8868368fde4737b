#include "sched/keep_alive.h"

#include <gtest/gtest.h>

namespace ferry::sched {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

nanoseconds Parse(std::string_view text) {
  auto k = ParseKeepAlive(text);
  EXPECT_TRUE(k.ok()) << text << ": " << k.status().ToString();
  return k.ok() ? k->duration : nanoseconds(12345);
}

TEST(KeepAliveTest, DurationStrings) {
  EXPECT_EQ(Parse("5m"), minutes(5));
  EXPECT_EQ(Parse("1h30m"), hours(1) + minutes(30));
  EXPECT_EQ(Parse("10s"), seconds(10));
  EXPECT_EQ(Parse("250ms"), milliseconds(250));
  EXPECT_EQ(Parse("1.5h"), minutes(90));
  EXPECT_EQ(Parse("1m30.5s"), seconds(90) + milliseconds(500));
  EXPECT_EQ(Parse("3us"), nanoseconds(3000));
  EXPECT_EQ(Parse("3\xC2\xB5s"), nanoseconds(3000));
  EXPECT_EQ(Parse("7ns"), nanoseconds(7));
  EXPECT_EQ(Parse("0s"), nanoseconds(0));
  EXPECT_EQ(Parse(" 2m "), minutes(2));
  EXPECT_EQ(Parse("+2m"), minutes(2));
}

TEST(KeepAliveTest, NumbersAreSeconds) {
  EXPECT_EQ(Parse("300"), minutes(5));
  EXPECT_EQ(Parse("0"), nanoseconds(0));
  EXPECT_EQ(Parse("2.5"), milliseconds(2500));
  auto k = KeepAliveFromSeconds(30);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->duration, seconds(30));
  EXPECT_TRUE(KeepAliveFromSeconds(-1)->forever());
  EXPECT_FALSE(KeepAliveFromSeconds(std::nan("")).ok());
  EXPECT_FALSE(KeepAliveFromSeconds(1e12).ok());
}

TEST(KeepAliveTest, NegativeMeansForever) {
  for (const char* text : {"-1", "-1m", "-0.5s", "-300"}) {
    auto k = ParseKeepAlive(text);
    ASSERT_TRUE(k.ok()) << text;
    EXPECT_TRUE(k->forever()) << text;
  }
  EXPECT_FALSE(ParseKeepAlive("5m")->forever());
  EXPECT_FALSE(ParseKeepAlive("0")->forever());
}

TEST(KeepAliveTest, BadStringsAreRefusedWithTheText) {
  for (const char* text :
       {"", "  ", "m", "5x", "5d", "5m3", "abc", "1..5s", "--1m", "5 m", "1e3s", "inf"}) {
    auto k = ParseKeepAlive(text);
    EXPECT_FALSE(k.ok()) << "'" << text << "'";
    if (!k.ok()) {
      EXPECT_EQ(k.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(k.status().message().find("keep_alive"), std::string::npos);
    }
  }
  EXPECT_FALSE(ParseKeepAlive("9999999h").ok());  // beyond ~292 years
}

TEST(KeepAliveTest, FormatsLikeGo) {
  EXPECT_EQ(FormatKeepAlive(KeepAlive::Forever()), "forever");
  EXPECT_EQ(FormatKeepAlive(KeepAlive{minutes(5)}), "5m0s");
  EXPECT_EQ(FormatKeepAlive(KeepAlive{hours(1) + minutes(30)}), "1h30m0s");
  EXPECT_EQ(FormatKeepAlive(KeepAlive{milliseconds(250)}), "250ms");
  EXPECT_EQ(FormatKeepAlive(KeepAlive{nanoseconds(0)}), "0s");
  EXPECT_EQ(FormatKeepAlive(KeepAlive{seconds(10)}), "10s");
}

}  // namespace
}  // namespace ferry::sched
