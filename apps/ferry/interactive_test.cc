#include "interactive.h"

#include <gtest/gtest.h>

namespace ferry::app {
namespace {

using Kind = SessionCommand::Kind;

TEST(ParseSessionLineTest, PlainTextIsAMessage) {
  SessionCommand c = ParseSessionLine("Why is the sky blue?");
  EXPECT_EQ(c.kind, Kind::kMessage);
  EXPECT_EQ(c.text, "Why is the sky blue?");
}

TEST(ParseSessionLineTest, HelpByeAndClear) {
  EXPECT_EQ(ParseSessionLine("/?").kind, Kind::kHelp);
  EXPECT_EQ(ParseSessionLine("/help").kind, Kind::kHelp);
  EXPECT_EQ(ParseSessionLine("  /bye  ").kind, Kind::kBye);
  EXPECT_EQ(ParseSessionLine("/clear").kind, Kind::kClear);
}

TEST(ParseSessionLineTest, SetParameterTakesANameAndValues) {
  SessionCommand c = ParseSessionLine("/set parameter temperature 0");
  ASSERT_EQ(c.kind, Kind::kSetParameter);
  EXPECT_EQ(c.values, (std::vector<std::string>{"temperature", "0"}));
  c = ParseSessionLine("/set parameter stop <end> ###");
  ASSERT_EQ(c.kind, Kind::kSetParameter);
  EXPECT_EQ(c.values, (std::vector<std::string>{"stop", "<end>", "###"}));
  c = ParseSessionLine("/set parameter temperature");
  EXPECT_EQ(c.kind, Kind::kUsage);
  EXPECT_NE(c.text.find("/set parameter NAME VALUE"), std::string::npos);
}

TEST(ParseSessionLineTest, SetSystemKeepsTheTextAsTyped) {
  SessionCommand c = ParseSessionLine("/set system You are  a pirate.");
  ASSERT_EQ(c.kind, Kind::kSetSystem);
  EXPECT_EQ(c.text, "You are  a pirate.");
  c = ParseSessionLine("/set system \"Talk like a pirate\"");
  EXPECT_EQ(c.text, "Talk like a pirate");
  c = ParseSessionLine("/set system");
  ASSERT_EQ(c.kind, Kind::kSetSystem);
  EXPECT_EQ(c.text, "");
}

TEST(ParseSessionLineTest, ShowNamesWhat) {
  for (const char* what : {"info", "parameters", "template", "system"}) {
    SessionCommand c = ParseSessionLine(std::string("/show ") + what);
    ASSERT_EQ(c.kind, Kind::kShow) << what;
    EXPECT_EQ(c.text, what);
  }
  EXPECT_EQ(ParseSessionLine("/show").kind, Kind::kUsage);
  EXPECT_EQ(ParseSessionLine("/show license").kind, Kind::kUsage);
}

TEST(ParseSessionLineTest, UnknownCommandIsNamedNotSentToTheModel) {
  SessionCommand c = ParseSessionLine("/frobnicate now");
  ASSERT_EQ(c.kind, Kind::kUsage);
  EXPECT_EQ(c.text, "Unknown command '/frobnicate'. Type /? for help");
}

TEST(FormatSessionParametersTest, ShowsEveryOptionAndEscapesStops) {
  RequestOptions o;
  o.stop = {"\n\n"};
  const std::string text = FormatSessionParameters(o);
  EXPECT_NE(text.find("temperature         0.8"), std::string::npos) << text;
  EXPECT_NE(text.find("num_ctx             2048"), std::string::npos) << text;
  EXPECT_NE(text.find("stop                \"\\n\\n\""), std::string::npos) << text;
}

}  // namespace
}  // namespace ferry::app
