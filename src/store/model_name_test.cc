#include "store/model_name.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::store {
namespace {

TEST(ModelNameTest, DefaultsAndForms) {
  struct Case {
    std::string text, host, name_space, model, tag;
  };
  const Case cases[] = {
      {"gemma3", "registry.ollama.ai", "library", "gemma3", "latest"},
      {"gemma3:270m", "registry.ollama.ai", "library", "gemma3", "270m"},
      {"me/tiny:v1.0", "registry.ollama.ai", "me", "tiny", "v1.0"},
      {"example.com/me/tiny:q4_K_M", "example.com", "me", "tiny", "q4_K_M"},
      {"localhost:5000/me/tiny", "localhost:5000", "me", "tiny", "latest"},
      {"localhost:5000/me/tiny:x", "localhost:5000", "me", "tiny", "x"},
      {"llama3.2", "registry.ollama.ai", "library", "llama3.2", "latest"},
      {"_a-b.c:_T-1.x", "registry.ollama.ai", "library", "_a-b.c", "_T-1.x"},
  };
  for (const Case& c : cases) {
    StatusOr<ModelName> n = ParseModelName(c.text);
    ASSERT_TRUE(n.ok()) << c.text << ": " << n.status().ToString();
    EXPECT_EQ(n->host, c.host) << c.text;
    EXPECT_EQ(n->name_space, c.name_space) << c.text;
    EXPECT_EQ(n->model, c.model) << c.text;
    EXPECT_EQ(n->tag, c.tag) << c.text;
  }
}

TEST(ModelNameTest, Printing) {
  EXPECT_EQ(ParseModelName("gemma3")->DisplayName(), "gemma3:latest");
  EXPECT_EQ(ParseModelName("me/x:1")->DisplayName(), "me/x:1");
  EXPECT_EQ(ParseModelName("h.io/me/x:1")->DisplayName(), "h.io/me/x:1");
  EXPECT_EQ(ParseModelName("gemma3")->FullName(), "registry.ollama.ai/library/gemma3:latest");
  EXPECT_EQ(ParseModelName("me/x:1")->ManifestPath(), "registry.ollama.ai/me/x/1");
  // The full name parses back to the same name.
  ModelName n = *ParseModelName("h.io/me/x:1");
  EXPECT_EQ(*ParseModelName(n.FullName()), n);
}

TEST(ModelNameTest, Rejections) {
  struct Case {
    std::string text;
    std::string message_part;  // the error must name the problem
  };
  const Case cases[] = {
      {"", "empty"},
      {"/etc/passwd", "path"},
      {"~/models/x", "path"},
      {"\\x", "path"},
      {"..", ".."},
      {"../x", ".."},
      {"a/../b", ".."},
      {"a/b/../c", ".."},
      {"x:..", ".."},
      {"a:b:c", "more than one ':'"},
      {"a:", "empty tag"},
      {":tag", "empty model name"},
      {"a//b", "empty namespace"},
      {"a/b/", "empty model name"},
      {"a/b/c/d", "at most 3"},
      {".hidden", "must start with"},
      {"-x", "must start with"},
      {"me/-x", "must start with"},
      {"x:-t", "must start with"},
      {"x:.t", "must start with"},
      {"a b", "' '"},
      {"a\\b", "'\\'"},
      {"a@sha256", "'@'"},
      {"x\n", "byte 0x0a"},
      {"na:me/x", "':'"},
      {"x:" + std::string(129, 't'), "more than 128"},
      {std::string(81, 'm'), "more than 80"},
      {std::string(81, 'n') + "/m", "more than 80"},
      {std::string(351, 'h') + "/n/m", "more than 350"},
  };
  for (const Case& c : cases) {
    StatusOr<ModelName> n = ParseModelName(c.text);
    ASSERT_FALSE(n.ok()) << "accepted: " << c.text;
    EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(n.status().message().find(c.message_part), std::string::npos)
        << c.text << " -> " << n.status().message();
  }
  // Just within the limits.
  EXPECT_TRUE(ParseModelName("x:" + std::string(128, 't')).ok());
  EXPECT_TRUE(ParseModelName(std::string(80, 'm')).ok());
}

}  // namespace
}  // namespace ferry::store
