#include "store/modelfile.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::store {
namespace {

TEST(ModelfileTest, ParsesEveryInstruction) {
  const std::string text = R"(# a comment
from ./stories.gguf
  # an indented comment

PARAMETER temperature 0.7
parameter stop "<|im_end|>"
PARAMETER stop User:
PARAMETER num_ctx 4096
PARAMETER num_ctx 2048
PARAMETER seed -1
TEMPLATE """{{ if .System }}<|system|>
{{ .System }}{{ end }}
<|user|> {{ .Prompt }}"""
System "You are terse."
MESSAGE user Hello there
MESSAGE assistant """Hi.
How can I help?"""
LICENSE """MIT
text"""
license Apache-2.0
)";
  StatusOr<Modelfile> m = ParseModelfile(text);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->from, "./stories.gguf");
  const ModelExtras& e = m->extras;
  EXPECT_EQ(e.parameters.at("temperature"), std::vector<std::string>{"0.7"});
  EXPECT_EQ(e.parameters.at("stop"), (std::vector<std::string>{"<|im_end|>", "User:"}));
  EXPECT_EQ(e.parameters.at("num_ctx"), std::vector<std::string>{"2048"});  // last wins
  EXPECT_EQ(e.parameters.at("seed"), std::vector<std::string>{"-1"});
  EXPECT_EQ(*e.template_text,
            "{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n<|user|> {{ .Prompt }}");
  EXPECT_EQ(*e.system, "You are terse.");
  ASSERT_EQ(e.messages.size(), 2u);
  EXPECT_EQ(e.messages[0], (ModelfileMessage{"user", "Hello there"}));
  EXPECT_EQ(e.messages[1], (ModelfileMessage{"assistant", "Hi.\nHow can I help?"}));
  EXPECT_EQ(e.licenses, (std::vector<std::string>{"MIT\ntext", "Apache-2.0"}));
}

TEST(ModelfileTest, QuotesAndBlanks) {
  StatusOr<Modelfile> m = ParseModelfile(
      "FROM x\nSYSTEM \"  padded  \"\nPARAMETER stop \"a \"b\" c\"\nTEMPLATE \"\"\"\"\"\"\n");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m->extras.system, "  padded  ");
  EXPECT_EQ(m->extras.parameters.at("stop"), std::vector<std::string>{"a \"b\" c"});
  EXPECT_EQ(*m->extras.template_text, "");
  // Bare values keep inner blanks and '#'; CRLF line ends are trimmed.
  m = ParseModelfile("FROM  my model \r\nSYSTEM say # hi\r\n");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->from, "my model");
  EXPECT_EQ(*m->extras.system, "say # hi");
}

TEST(ModelfileTest, Errors) {
  struct Case {
    std::string text;
    StatusCode code;
    std::string message_part;
  };
  const Case cases[] = {
      {"FROM x\n\nFROBNICATE y\n", StatusCode::kInvalidArgument, "line 3: unknown instruction"},
      {"FROM x\nADAPTER ./lora.gguf\n", StatusCode::kUnimplemented, "line 2: ADAPTER"},
      {"FROM x\nrequires 0.5\n", StatusCode::kUnimplemented, "line 2"},
      {"PARAMETER top_k 4\n", StatusCode::kInvalidArgument, "no FROM"},
      {"# only a comment\n", StatusCode::kInvalidArgument, "no FROM"},
      {"FROM x\nFROM y\n", StatusCode::kInvalidArgument, "line 2: a second FROM"},
      {"FROM\n", StatusCode::kInvalidArgument, "line 1: FROM needs a value"},
      {"FROM x\nPARAMETER top_k four\n", StatusCode::kInvalidArgument, "line 2"},
      {"FROM x\nPARAMETER top_k 4.5\n", StatusCode::kInvalidArgument, "integer"},
      {"FROM x\nPARAMETER temperature hot\n", StatusCode::kInvalidArgument, "number"},
      {"FROM x\nPARAMETER temperature inf\n", StatusCode::kInvalidArgument, "number"},
      {"FROM x\nPARAMETER num_ctx\n", StatusCode::kInvalidArgument, "line 2"},
      {"FROM x\nPARAMETER\n", StatusCode::kInvalidArgument, "line 2"},
      {"FROM x\nPARAMETER mirostat 1\n", StatusCode::kInvalidArgument,
       "line 2: unknown parameter \"mirostat\""},
      {"FROM x\nPARAMETER stop \"\"\n", StatusCode::kInvalidArgument, "non-empty"},
      {"FROM x\nMESSAGE tool hi\n", StatusCode::kInvalidArgument, "line 2: MESSAGE role"},
      {"FROM x\nSYSTEM \"open\n", StatusCode::kInvalidArgument, "line 2: SYSTEM value's quote"},
      {"FROM x\nTEMPLATE \"\"\"never\nclosed\n", StatusCode::kInvalidArgument,
       "line 2: TEMPLATE value's \"\"\" is never closed"},
      {"FROM x\nSYSTEM \"\"\"a\nb\"\"\" extra\nPARAMETER top_k 1\n", StatusCode::kInvalidArgument,
       "line 3: text after"},
      // Line numbers keep counting through a multi-line value.
      {"FROM x\nSYSTEM \"\"\"a\nb\nc\"\"\"\nBOGUS 1\n", StatusCode::kInvalidArgument, "line 5"},
  };
  for (const Case& c : cases) {
    StatusOr<Modelfile> m = ParseModelfile(c.text);
    ASSERT_FALSE(m.ok()) << "accepted: " << c.text;
    EXPECT_EQ(m.status().code(), c.code) << c.text << " -> " << m.status().ToString();
    EXPECT_NE(m.status().message().find(c.message_part), std::string::npos)
        << c.text << " -> " << m.status().message();
  }
}

TEST(ModelfileTest, ValidateParameter) {
  EXPECT_TRUE(ValidateParameter("num_gpu", "-1").ok());
  EXPECT_TRUE(ValidateParameter("top_p", "0.95").ok());
  EXPECT_TRUE(ValidateParameter("min_p", "1e-3").ok());
  EXPECT_FALSE(ValidateParameter("num_thread", "").ok());
  EXPECT_FALSE(ValidateParameter("num_thread", "8 ").ok());
  EXPECT_FALSE(ValidateParameter("seed", "99999999999999999999").ok());
  EXPECT_EQ(FindParameterType("stop"), ParameterType::kStringList);
  EXPECT_EQ(FindParameterType("repeat_penalty"), ParameterType::kFloat);
  EXPECT_EQ(FindParameterType("num_keep"), ParameterType::kInt);
  EXPECT_FALSE(FindParameterType("use_mmap").has_value());
}

TEST(ModelfileTest, FormatRoundTrip) {
  Modelfile m;
  m.from = "/models/blobs/sha256-abc";
  m.extras.template_text = "{{ .System }}\n{{ .Prompt }}";
  m.extras.system = " leading blank";
  m.extras.parameters["stop"] = {"<|im_end|>", "\"quoted\"", "two words", "\"\"x"};
  m.extras.parameters["temperature"] = {"0.25"};
  m.extras.parameters["num_ctx"] = {"8192"};
  m.extras.messages = {{"user", "hi"}, {"assistant", "line one\nline \"two\" end"}};
  m.extras.licenses = {"MIT", ""};
  const std::string text = FormatModelfile(m);
  EXPECT_NE(text.find("FROM /models/blobs/sha256-abc\n"), std::string::npos) << text;
  EXPECT_NE(text.find("PARAMETER num_ctx 8192\n"), std::string::npos) << text;
  EXPECT_NE(text.find("TEMPLATE \"\"\"{{ .System }}\n{{ .Prompt }}\"\"\"\n"), std::string::npos)
      << text;
  StatusOr<Modelfile> back = ParseModelfile(text);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << text;
  EXPECT_EQ(*back, m) << text;
}

}  // namespace
}  // namespace ferry::store
