#include "api/openai.h"

#include <gtest/gtest.h>

namespace ferry::api::openai {
namespace {

StatusOr<ChatCompletionParams> Chat(std::string_view text) {
  auto body = ParseBody(text);
  if (!body.ok()) return body.status();
  return ParseChatCompletion(*body);
}

StatusOr<CompletionParams> Completions(std::string_view text) {
  auto body = ParseBody(text);
  if (!body.ok()) return body.status();
  return ParseCompletion(*body);
}

void ExpectInvalid(std::string_view body, std::string_view field) {
  auto p = Chat(body);
  ASSERT_FALSE(p.ok()) << body;
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << body;
  EXPECT_NE(p.status().message().find(field), std::string::npos) << p.status().message();
}

TEST(ParseChatCompletion, FieldsMapOntoRequestOptions) {
  auto p = Chat(R"({"model": "m", "messages": [{"role": "developer", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text",
      "text": "there"}]}, {"role": "assistant", "content": null}],
      "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 7,
      "max_completion_tokens": 9, "stop": "\n", "seed": 3, "temperature": 0, "top_p": 0.5,
      "frequency_penalty": 0.25, "presence_penalty": -0.5, "n": 1, "user": "u",
      "ignore_eos": true})");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->common.model, "m");
  EXPECT_TRUE(p->common.stream);
  EXPECT_TRUE(p->include_usage);
  ASSERT_EQ(p->messages.size(), 3u);
  EXPECT_EQ(p->messages[0].role, "system");
  EXPECT_EQ(p->messages[1].content, "hi there");
  EXPECT_EQ(p->messages[2].content, "");

  RequestOptions o;
  ASSERT_TRUE(ParseOptions(p->common.options, &o).ok());
  EXPECT_EQ(o.num_predict, 9);  // max_completion_tokens wins
  ASSERT_EQ(o.stop.size(), 1u);
  EXPECT_EQ(o.stop[0], "\n");
  ASSERT_TRUE(o.sampling.seed.has_value());
  EXPECT_EQ(*o.sampling.seed, 3u);
  EXPECT_EQ(o.sampling.temperature, 0.0f);
  EXPECT_EQ(o.sampling.top_p, 0.5f);
  EXPECT_EQ(o.sampling.frequency_penalty, 0.25f);
  EXPECT_EQ(o.sampling.presence_penalty, -0.5f);
  EXPECT_TRUE(o.ignore_eos);
}

TEST(ParseChatCompletion, OpenAIDefaults) {
  auto p = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_FALSE(p->common.stream);
  EXPECT_FALSE(p->include_usage);
  RequestOptions o;
  ASSERT_TRUE(ParseOptions(p->common.options, &o).ok());
  EXPECT_EQ(o.sampling.temperature, 1.0f);
  EXPECT_EQ(o.sampling.top_p, 1.0f);
  EXPECT_EQ(o.num_predict, -1);
  EXPECT_TRUE(o.stop.empty());
}

TEST(ParseChatCompletion, RefusalsNameTheField) {
  const std::string m = R"("model": "m", "messages": [{"role": "user", "content": "x"}])";
  ExpectInvalid(R"({"messages": []})", "model");
  ExpectInvalid(R"({"model": "m"})", "messages");
  ExpectInvalid(R"({"model": "m", "messages": []})", "messages");
  ExpectInvalid(R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})",
                "messages[0].role");
  ExpectInvalid(R"({"model": "m", "messages": [{"role": "user", "content": 5}]})",
                "messages[0].content");
  ExpectInvalid(R"({"model": "m", "messages": [{"role": "user", "content":
                   [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
                "messages[0].content[0].type");
  ExpectInvalid("{" + m + R"(, "n": 2})", "n:");
  ExpectInvalid("{" + m + R"(, "temperature": "hot"})", "temperature");
  ExpectInvalid("{" + m + R"(, "temperature": 3})", "temperature");
  ExpectInvalid("{" + m + R"(, "top_p": 1.5})", "top_p");
  ExpectInvalid("{" + m + R"(, "max_tokens": 1.5})", "max_tokens");
  ExpectInvalid("{" + m + R"(, "max_tokens": 0})", "max_tokens");
  ExpectInvalid("{" + m + R"(, "max_completion_tokens": "9"})", "max_completion_tokens");
  ExpectInvalid("{" + m + R"(, "stop": 5})", "stop");
  ExpectInvalid("{" + m + R"(, "stop": ["a", 1]})", "stop[1]");
  ExpectInvalid("{" + m + R"(, "seed": 0.5})", "seed");
  ExpectInvalid("{" + m + R"(, "stream": "yes"})", "stream");
  ExpectInvalid("{" + m + R"(, "stream_options": {"include_usage": 1}})",
                "stream_options.include_usage");
  ExpectInvalid("{" + m + R"(, "frequency_penalty": 2.5})", "frequency_penalty");
  ExpectInvalid("{" + m + R"(, "tools": [{"type": "function"}]})", "tools");
  ExpectInvalid("{" + m + R"(, "response_format": {"type": "json_object"}})", "response_format");
  ExpectInvalid("{" + m + R"(, "logprobs": true})", "logprobs");
  ExpectInvalid("{" + m + R"(, "ignore_eos": 1})", "ignore_eos");
  // Accepted: the neutral values of what is refused otherwise.
  EXPECT_TRUE(Chat("{" + m + R"(, "logprobs": false, "tools": [], "response_format":
                   {"type": "text"}, "stop": null})")
                  .ok());
}

TEST(ParseCompletion, PromptAndRefusals) {
  auto p = Completions(R"({"model": "m", "prompt": ["once"], "max_tokens": 4})");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->prompt, "once");
  EXPECT_EQ(p->common.options["num_predict"], 4);
  for (const char* body :
       {R"({"model": "m", "prompt": "x", "suffix": "y"})",
        R"({"model": "m", "prompt": ["a", "b"]})", R"({"model": "m", "prompt": 3})",
        R"({"model": "m"})", R"({"model": "m", "prompt": "x", "echo": true})",
        R"({"model": "m", "prompt": "x", "best_of": 2})"}) {
    auto r = Completions(body);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << body;
  }
  EXPECT_NE(Completions(R"({"model": "m", "prompt": "x", "suffix": "y"})")
                .status()
                .message()
                .find("suffix"),
            std::string::npos);
}

TEST(Responses, Shapes) {
  ResponseHead head{"chatcmpl-1", 1700000000, "m"};
  GenerateStats stats;
  stats.done_reason = DoneReason::kLength;
  stats.prompt_eval_count = 3;
  stats.prompt_reused_count = 2;
  stats.eval_count = 4;
  Json whole = ChatCompletion(head, "hello", stats);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 4);
  EXPECT_EQ(whole["usage"]["total_tokens"], 9);

  Json first = ChatChunk(head, Json{{"role", "assistant"}, {"content", "he"}}, std::nullopt);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(ChatChunk(head, Json::object(), DoneReason::kStop)["choices"][0]["finish_reason"],
            "stop");
  Json usage = UsageChunk(head, true, stats);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 9);
  Json text = CompletionChunk(head, "x", std::nullopt);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "x");

  EXPECT_EQ(Sse(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
  // Invalid UTF-8 is replaced, never thrown.
  EXPECT_NO_THROW(Sse(Json{{"a", std::string("\xff")}}));
}

TEST(Errors, OpenAIShape) {
  Json e = Error(404, "model \"x\" not found");
  EXPECT_EQ(e["error"]["message"], "model \"x\" not found");
  EXPECT_EQ(e["error"]["type"], "not_found_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_TRUE(e["error"]["code"].is_null());
  EXPECT_EQ(ErrorType(400), "invalid_request_error");
  EXPECT_EQ(ErrorType(413), "invalid_request_error");
  EXPECT_EQ(ErrorType(500), "server_error");
  EXPECT_EQ(ErrorType(503), "server_error");
}

TEST(NewId, PrefixAndUnique) {
  std::string a = NewId("chatcmpl-"), b = NewId("chatcmpl-");
  EXPECT_EQ(a.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(a.size(), 9u + 24u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace ferry::api::openai
