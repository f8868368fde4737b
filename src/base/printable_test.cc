#include "base/printable.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(PrintableTest, PlainTextAndUnicodePassUnchanged) {
  EXPECT_EQ(Printable("Gemma 3 270m"), "Gemma 3 270m");
  EXPECT_EQ(Printable("caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80");
  EXPECT_EQ(Printable(""), "");
}

// The reproduction from the hardening issue: a model name that retitles the terminal and
// clears the screen.
TEST(PrintableTest, EscapeSequencesAreShownNotRun) {
  const std::string name = "evil\x1b]0;pwned\x07\x1b[2J";
  const std::string shown = Printable(name);
  EXPECT_EQ(shown, "evil\\x1b]0;pwned\\x07\\x1b[2J");
  EXPECT_EQ(shown.find('\x1b'), std::string::npos);
  // C1 controls (CSI is U+009B) and DEL.
  EXPECT_EQ(Printable("a\xC2\x9B"
                      "2Jb\x7F"),
            "a\\u009B2Jb\\x7f");
}

TEST(PrintableTest, NewlinesOnlyInMultilineText) {
  EXPECT_EQ(Printable("a\nb\tc\r"), "a\\x0ab\\x09c\\x0d");
  EXPECT_EQ(Printable("a\nb\tc\r", /*multiline=*/true), "a\nb\tc\\x0d");
}

TEST(PrintableTest, InvalidUtf8AndBackslashes) {
  EXPECT_EQ(Printable("\xff\xC3"), "\\xff\\xc3");
  EXPECT_EQ(Printable("\xC0\xAF"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(Printable("\xED\xA0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(Printable("a\\x1b"), "a\\\\x1b");               // not confused with an escape
}

}  // namespace
}  // namespace ferry
