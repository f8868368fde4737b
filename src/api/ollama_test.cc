#include "api/ollama.h"

#include <gtest/gtest.h>

namespace ferry::api {
namespace {

Status Opts(std::string_view text, RequestOptions* o) {
  auto body = ParseBody(text);
  if (!body.ok()) return body.status();
  return ParseOptions(*body, o);
}

void ExpectInvalid(std::string_view options, std::string_view field) {
  RequestOptions o;
  Status s = Opts(options, &o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << options;
  EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
}

TEST(ParseOptions, OllamaNamesFillRequestOptions) {
  RequestOptions o;
  ASSERT_TRUE(Opts(R"({"num_ctx": 8192, "num_predict": 12, "temperature": 0, "top_k": 5,
                      "top_p": 0.5, "min_p": 0.1, "repeat_penalty": 1.2, "repeat_last_n": -1,
                      "presence_penalty": 0.3, "frequency_penalty": 0.4, "seed": 42,
                      "stop": ["a", "bb"], "num_batch": 64, "num_gpu": 0, "num_thread": 2,
                      "num_keep": 4, "use_mmap": true, "ignore_eos": true})",
                   &o)
                  .ok());
  EXPECT_EQ(o.num_ctx, 8192);
  EXPECT_EQ(o.num_predict, 12);
  EXPECT_EQ(o.sampling.temperature, 0.0f);
  EXPECT_EQ(o.sampling.top_k, 5);
  EXPECT_FLOAT_EQ(o.sampling.top_p, 0.5f);
  EXPECT_FLOAT_EQ(o.sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(o.sampling.repeat_penalty, 1.2f);
  EXPECT_EQ(o.sampling.repeat_last_n, -1);
  EXPECT_FLOAT_EQ(o.sampling.presence_penalty, 0.3f);
  EXPECT_FLOAT_EQ(o.sampling.frequency_penalty, 0.4f);
  ASSERT_TRUE(o.sampling.seed.has_value());
  EXPECT_EQ(*o.sampling.seed, 42u);
  EXPECT_EQ(o.stop, (std::vector<std::string>{"a", "bb"}));
  EXPECT_EQ(o.num_batch, 64);
  EXPECT_EQ(o.num_gpu, 0);
  EXPECT_EQ(o.num_thread, 2);
  EXPECT_TRUE(o.ignore_eos);
}

TEST(ParseOptions, IntegerValuedFloatsAndNegativeSeed) {
  RequestOptions o;
  o.sampling.seed = 7;
  ASSERT_TRUE(Opts(R"({"num_ctx": 2048.0, "seed": -1, "num_predict": -2, "stop": "x"})", &o).ok());
  EXPECT_EQ(o.num_ctx, 2048);
  EXPECT_FALSE(o.sampling.seed.has_value());
  EXPECT_EQ(o.num_predict, -1);
  EXPECT_EQ(o.stop, std::vector<std::string>{"x"});
}

// Found writing fuzz/http_request_fuzz (a UBSan report there): a seed of 9223372036854775807.0 is
// the double 2^63, which passed the range check against INT64_MAX (rounded up to 2^63) and
// overflowed the conversion to int64 (undefined behaviour; INT64_MIN on x86, a random seed).
TEST(ParseOptions, FloatAtTwoToThe63IsOutOfRange) {
  RequestOptions o;
  Status s = Opts(R"({"seed": 9223372036854775807.0})", &o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("options.seed"), std::string::npos) << s.ToString();
  ASSERT_TRUE(Opts(R"({"seed": 9223372036854774784.0})", &o).ok());  // the double below 2^63
  ASSERT_TRUE(o.sampling.seed.has_value());
  EXPECT_EQ(*o.sampling.seed, 9223372036854774784u);
  ASSERT_TRUE(Opts(R"({"seed": -9223372036854775808.0})", &o).ok());  // -2^63 converts
  EXPECT_FALSE(o.sampling.seed.has_value());
}

TEST(ParseOptions, ErrorsNameTheField) {
  ExpectInvalid(R"({"num_ctx": -5})", "options.num_ctx");
  ExpectInvalid(R"({"num_ctx": 0})", "options.num_ctx");
  ExpectInvalid(R"({"num_ctx": 99999999999})", "options.num_ctx");
  ExpectInvalid(R"({"num_ctx": "2048"})", "options.num_ctx");
  ExpectInvalid(R"({"num_ctx": 1.5})", "options.num_ctx");
  ExpectInvalid(R"({"num_predict": -3})", "options.num_predict");
  ExpectInvalid(R"({"temperature": "hot"})", "options.temperature");
  ExpectInvalid(R"({"temperature": -1})", "options.temperature");
  ExpectInvalid(R"({"top_p": 1.5})", "options.top_p");
  ExpectInvalid(R"({"repeat_penalty": 0})", "options.repeat_penalty");
  ExpectInvalid(R"({"stop": [1]})", "options.stop[0]");
  ExpectInvalid(R"({"stop": 3})", "options.stop");
  ExpectInvalid(R"({"num_batch": 0})", "options.num_batch");
  ExpectInvalid(R"({"mirostat": 2})", "options.mirostat");
  ExpectInvalid(R"({"typical_p": 0.5})", "options.typical_p");
  ExpectInvalid(R"({"no_such_option": 1})", "options.no_such_option");
  ExpectInvalid(R"({"ignore_eos": 1})", "options.ignore_eos");
}

TEST(ParseBody, BrokenJsonAndNonObjects) {
  EXPECT_EQ(ParseBody("{\"model\": ").status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ParseBody("{\"model\": ").status().message().find("invalid JSON"), std::string::npos);
  EXPECT_EQ(ParseBody("[1, 2]").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseBody("{}").ok());
}

// Found writing fuzz/http_request_fuzz (which crashes on it): 200,000 nested arrays in
// `options` (a 400 KB body) overflowed the stack when ParseGenerate copied the options
// (nlohmann copies recursively).
TEST(ParseBody, DeepNestingIsRefused) {
  auto nested = [](int levels, bool closed) {
    std::string inner = std::string(levels, '[') + (closed ? std::string(levels, ']') : "");
    return "{\"model\": \"m\", \"options\": {\"a\": " + inner + (closed ? "}}" : "");
  };
  // The body is level 1, options level 2: kMaxJsonDepth - 2 arrays fit.
  auto ok = ParseBody(nested(kMaxJsonDepth - 2, true));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  auto gen = ParseGenerate(*ok);
  EXPECT_TRUE(gen.ok()) << gen.status().ToString();
  auto deeper = ParseBody(nested(kMaxJsonDepth - 1, true));
  EXPECT_EQ(deeper.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(deeper.status().message().find("more than 128 deep"), std::string::npos)
      << deeper.status().ToString();
  for (bool closed : {true, false}) {
    auto s = ParseBody(nested(1000000, closed));
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << closed;
  }
}

TEST(ParseGenerate, FieldsAndTypeErrors) {
  auto p = ParseGenerate(*ParseBody(R"({"model": "m", "prompt": "hi", "system": "s", "raw": true,
                                        "stream": false, "keep_alive": "10m"})"));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->common.model, "m");
  EXPECT_EQ(p->prompt, "hi");
  EXPECT_EQ(p->system, "s");
  EXPECT_TRUE(p->raw);
  EXPECT_FALSE(p->common.stream);
  ASSERT_TRUE(p->common.keep_alive.has_value());
  EXPECT_EQ(p->common.keep_alive->duration, std::chrono::minutes(10));

  auto def = ParseGenerate(*ParseBody(R"({"model": "m"})"));
  ASSERT_TRUE(def.ok());
  EXPECT_TRUE(def->common.stream);
  EXPECT_FALSE(def->common.keep_alive.has_value());

  auto zero = ParseGenerate(*ParseBody(R"({"model": "m", "keep_alive": 0})"));
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->common.keep_alive->duration.count(), 0);

  struct Case {
    const char* body;
    const char* field;
  } cases[] = {
      {R"({"prompt": "x"})", "model"},
      {R"({"model": 3})", "model"},
      {R"({"model": "m", "prompt": 3})", "prompt"},
      {R"({"model": "m", "stream": "yes"})", "stream"},
      {R"({"model": "m", "raw": 1})", "raw"},
      {R"({"model": "m", "options": []})", "options"},
      {R"({"model": "m", "keep_alive": "5 days"})", "keep_alive"},
      {R"({"model": "m", "keep_alive": true})", "keep_alive"},
      {R"({"model": "m", "images": ["abc"]})", "images"},
      {R"({"model": "m", "format": "json"})", "format"},
  };
  for (const Case& c : cases) {
    auto r = ParseGenerate(*ParseBody(c.body));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status().message();
  }
}

TEST(ParseChat, MessagesAndErrors) {
  auto p = ParseChat(*ParseBody(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
      {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]})"));
  ASSERT_TRUE(p.ok()) << p.status().message();
  ASSERT_EQ(p->messages.size(), 4u);
  EXPECT_EQ(p->messages[0].role, "system");
  EXPECT_EQ(p->messages[3].content, "again");
  auto bad_role = ParseChat(*ParseBody(R"({"model": "m", "messages": [{"role": "x"}]})"));
  EXPECT_NE(bad_role.status().message().find("messages[0].role"), std::string::npos);
  auto bad_content =
      ParseChat(*ParseBody(R"({"model": "m", "messages": [{"role": "user", "content": 1}]})"));
  EXPECT_NE(bad_content.status().message().find("messages[0].content"), std::string::npos);
  auto not_array = ParseChat(*ParseBody(R"({"model": "m", "messages": {}})"));
  EXPECT_NE(not_array.status().message().find("messages"), std::string::npos);
  auto tools = ParseChat(*ParseBody(R"({"model": "m", "tools": [{"type": "function"}]})"));
  EXPECT_EQ(tools.status().code(), StatusCode::kInvalidArgument);
}

TEST(Wire, FinalRecordHasOllamasFieldsInNanoseconds) {
  GenerateStats st;
  st.done_reason = DoneReason::kLength;
  st.prompt_eval_count = 11;
  st.prompt_reused_count = 3;
  st.prompt_eval_ns = 1500;
  st.eval_count = 7;
  st.eval_ns = 2500000;
  Json j;
  AddFinalFields(st, FinalTimes{9000000, 4000}, &j);
  EXPECT_EQ(j["done"], true);
  EXPECT_EQ(j["done_reason"], "length");
  EXPECT_EQ(j["total_duration"], 9000000);
  EXPECT_EQ(j["load_duration"], 4000);
  EXPECT_EQ(j["prompt_eval_count"], 11);
  EXPECT_EQ(j["prompt_eval_duration"], 1500);
  EXPECT_EQ(j["eval_count"], 7);
  EXPECT_EQ(j["eval_duration"], 2500000);
  EXPECT_EQ(j["prompt_cached_count"], 3);
  EXPECT_EQ(Line(Json{{"a", 1}}), "{\"a\":1}\n");
  // Invalid UTF-8 is replaced, never thrown.
  EXPECT_NO_THROW(Line(Json{{"response", std::string("\xff")}}));
}

TEST(Wire, Rfc3339Nano) {
  using namespace std::chrono;
  system_clock::time_point t{seconds(1714558272)};
  EXPECT_EQ(FormatRfc3339Nano(t), "2024-05-01T10:11:12Z");
  EXPECT_EQ(FormatRfc3339Nano(t + nanoseconds(123456789)), "2024-05-01T10:11:12.123456789Z");
  EXPECT_EQ(FormatRfc3339Nano(t + milliseconds(500)), "2024-05-01T10:11:12.5Z");
}

TEST(Wire, StatusCodes) {
  EXPECT_EQ(HttpStatusFor(InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpStatusFor(OutOfRangeError("x")), 400);
  EXPECT_EQ(HttpStatusFor(NotFoundError("x")), 404);
  EXPECT_EQ(HttpStatusFor(ResourceExhaustedError("queue full: 2 requests wait")), 503);
  EXPECT_EQ(HttpStatusFor(ResourceExhaustedError("m does not fit: needs 1 GiB")), 500);
  EXPECT_EQ(HttpStatusFor(UnavailableError("x")), 503);
  EXPECT_EQ(HttpStatusFor(UnimplementedError("x")), 501);
  EXPECT_EQ(HttpStatusFor(InternalError("x")), 500);
  EXPECT_EQ(ModelNotFoundMessage("x"), "model \"x\" not found, try pulling it first");
  EXPECT_EQ(ErrorJson("bad \"x\""), "{\"error\":\"bad \\\"x\\\"\"}");
}

TEST(Names, LatestTagIsTheSameModel) {
  EXPECT_EQ(*NormalizeModelName("m:latest"), "m");
  EXPECT_EQ(*NormalizeModelName("m"), "m");
  EXPECT_EQ(NormalizeModelName("").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::api
