// libFuzzer target for the HTTP request decoding (src/api/ollama.h, src/api/openai.h).
//
// Every input is a request body for ParseBody. What parses goes through every request parser
// the server has: Ollama's ParseGenerate, ParseChat, ParseEmbed, ParseEmbeddingsLegacy and
// OpenAI's ParseChatCompletion, ParseCompletion, ParseEmbeddings; then the parsed options
// through ParseOptions, keep_alive through ParseKeepAliveField, each message's content through
// ParseContent, and the model name through NormalizeModelName. Checked, as the headers say:
//   - parsing never throws (an escaping exception aborts, which libFuzzer reports);
//   - every refusal is InvalidArgument with a message, and its error bodies (Ollama's and
//     OpenAI's) are JSON objects that parse back;
//   - options ParseOptions accepts pass ValidateRequestOptions;
//   - what the OpenAI parsers put into `options` (Ollama's names) ParseOptions accepts, so a
//     client never sees an error about a field it did not send;
//   - Line and Sse of the body give one JSON value that parses back.
// A broken invariant calls __builtin_trap() so that libFuzzer reports the input as a crash.
#include <cstdint>
#include <string>
#include <string_view>

#include "api/ollama.h"
#include "api/openai.h"
#include "runtime/request.h"
#include "fuzz_check.h"

namespace ferry::api {
namespace {

using ferry::fuzz::Check;

bool IsJsonObject(std::string_view text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  return !j.is_discarded() && j.is_object();
}

// A refusal: InvalidArgument with a message, which both APIs can send as a JSON error body.
void CheckRefusal(const Status& s) {
  Check(s.code() == StatusCode::kInvalidArgument);
  Check(!s.message().empty());
  Check(HttpStatusFor(s) == 400);
  Check(IsJsonObject(ErrorJson(s.message())));
  Check(IsJsonObject(openai::ErrorJson(400, s.message())));
}

template <typename T>
bool Accepted(const StatusOr<T>& r) {
  if (!r.ok()) CheckRefusal(r.status());
  return r.ok();
}

void CheckOptions(const Json& options, bool must_accept) {
  RequestOptions o;
  Status s = ParseOptions(options, &o);
  if (s.ok()) {
    Check(ValidateRequestOptions(o).ok());
  } else {
    Check(!must_accept);
    CheckRefusal(s);
  }
}

void CheckCommon(const CommonParams& c) {
  Check(!c.model.empty());
  StatusOr<std::string> name = NormalizeModelName(c.model);
  Check(name.ok() && !name->empty());
  Check(c.options.is_object());
}

void CheckBody(const Json& body) {
  if (StatusOr<GenerateParams> p = ParseGenerate(body); Accepted(p)) {
    CheckCommon(p->common);
    CheckOptions(p->common.options, false);
    if (p->template_text) Check(!p->template_text->empty());
    for (int32_t id : p->context) Check(id >= 0);
  }
  if (StatusOr<ChatParams> p = ParseChat(body); Accepted(p)) {
    CheckCommon(p->common);
    CheckOptions(p->common.options, false);
    for (const ChatMessage& m : p->messages) {
      Check(m.role == "system" || m.role == "user" || m.role == "assistant");
    }
  }
  for (auto parse : {ParseEmbed, ParseEmbeddingsLegacy}) {
    if (StatusOr<EmbedParams> p = parse(body); Accepted(p)) {
      CheckCommon(p->common);
      Check(!p->inputs.empty());
      Check(p->dimensions >= 0);
    }
  }
  if (auto p = openai::ParseChatCompletion(body); Accepted(p)) {
    CheckCommon(p->common);
    CheckOptions(p->common.options, true);
    Check(!p->messages.empty());
    for (const ChatMessage& m : p->messages) {
      Check(m.role == "system" || m.role == "user" || m.role == "assistant");
    }
  }
  if (auto p = openai::ParseCompletion(body); Accepted(p)) {
    CheckCommon(p->common);
    CheckOptions(p->common.options, true);
    Check(!p->prompt.empty());
  }
  if (auto p = openai::ParseEmbeddings(body); Accepted(p)) {
    Check(!p->common.model.empty());
    Check(!p->inputs.empty());
  }

  // The pieces on their own, whatever else the body holds.
  if (auto it = body.find("options"); it != body.end()) CheckOptions(*it, false);
  if (auto it = body.find("keep_alive"); it != body.end()) {
    (void)Accepted(ParseKeepAliveField(*it));
  }
  if (auto it = body.find("messages"); it != body.end() && it->is_array()) {
    for (const Json& m : *it) {
      if (!m.is_object()) continue;
      if (auto c = m.find("content"); c != m.end()) {
        (void)Accepted(openai::ParseContent(*c, "messages[].content"));
      }
    }
  }
  Check(IsJsonObject(Line(body)));
  const std::string sse = openai::Sse(body);
  Check(sse.starts_with("data: ") && sse.ends_with("\n\n"));
  Check(IsJsonObject(std::string_view(sse).substr(6)));
}

}  // namespace
}  // namespace ferry::api

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::api;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ferry::StatusOr<Json> body = ParseBody(text);
  if (!body.ok()) {
    CheckRefusal(body.status());
    return 0;
  }
  Check(body->is_object());
  CheckBody(*body);
  return 0;
}
