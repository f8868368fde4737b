#include "chat/chat_template.h"

#include <gtest/gtest.h>

namespace ferry::chat {
namespace {

ChatTemplate Must(std::string_view jinja, std::string_view arch, bool llama3 = false) {
  auto t = ChatTemplate::Detect(jinja, arch, llama3);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

// The formats of docs/chat-templates.md for one user turn "Hi" (BOS is left to the tokenizer).
TEST(ChatTemplateTest, OneUserTurn) {
  std::vector<Message> hi = {{"user", "Hi"}};
  EXPECT_EQ(*Must("", "gemma3").Render(hi, true),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(*Must("{{ '<|start_header_id|>' }}", "llama").Render(hi, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(*Must("<|im_start|>You are Qwen, created by Alibaba Cloud", "qwen2").Render(hi, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*Must("", "qwen3").Render(hi, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*Must("[INST]", "llama").Render(hi, true), "[INST] Hi [/INST]");
}

TEST(ChatTemplateTest, GemmaSystemAndTurns) {
  ChatTemplate t = Must("{{ '<start_of_turn>' }}", "gemma3");
  std::vector<Message> conv = {{"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello"},
                               {"user", "Bye"}};
  EXPECT_EQ(*t.Render(conv, true),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello"
            "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  std::vector<Message> bad = {{"user", "a"}, {"user", "b"}};
  EXPECT_FALSE(t.Render(bad, true).ok());
}

TEST(ChatTemplateTest, Errors) {
  EXPECT_FALSE(ChatTemplate::Detect("{% for m in messages %}{{ m.content }}", "llama", false).ok());
  EXPECT_FALSE(ChatTemplate::Detect("", "llama", false).ok());
  EXPECT_TRUE(ChatTemplate::Detect("", "llama", true).ok());
  ChatTemplate t = Must("", "gemma3");
  EXPECT_FALSE(t.Render({}, true).ok());
  EXPECT_FALSE(t.Render({{"robot", "x"}}, true).ok());
}

}  // namespace
}  // namespace ferry::chat
