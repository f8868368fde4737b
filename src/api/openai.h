// OpenAI's HTTP API on the wire (/v1/chat/completions, /v1/completions, /v1/models): request
// bodies parsed into the same params as Ollama's routes (the sampling fields become an Ollama
// `options` object, so RequestOptions stays the one definition of a request's options), and
// the JSON of responses: whole answers, SSE chunks, usage, errors in OpenAI's shape.
// docs/serving.md documents what is accepted and refused.
//
// Parsing never throws: a malformed body, a wrong type or an unsupported feature is an
// InvalidArgument whose message names the field ("temperature: expected a number, ...").
//
// Thread-safety: pure functions over plain values (NewId draws from a locked generator); any
// thread.
#ifndef FERRY_API_OPENAI_H_
#define FERRY_API_OPENAI_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/ollama.h"
#include "base/status.h"
#include "runtime/request.h"

namespace ferry::api::openai {

// POST /v1/chat/completions. `common.options` holds the sampling fields in Ollama's names
// (max_tokens/max_completion_tokens -> num_predict, stop, seed, temperature, top_p,
// frequency_penalty, presence_penalty, and the extension ignore_eos); temperature and top_p
// default to 1 as OpenAI's do.
struct ChatCompletionParams {
  CommonParams common;                // stream defaults to false, as OpenAI's
  std::vector<ChatMessage> messages;  // at least one
  bool include_usage = false;         // stream_options.include_usage
};

// POST /v1/completions.
struct CompletionParams {
  CommonParams common;
  std::string prompt;
  bool include_usage = false;
};

// POST /v1/embeddings: `input` a string or an array of strings (token arrays are refused),
// `encoding_format` "float" (default) or "base64" (little-endian f32, what the openai package
// asks for), `dimensions`, `user` (ignored).
struct EmbeddingsParams {
  CommonParams common;
  std::vector<std::string> inputs;
  bool base64 = false;
  int64_t dimensions = 0;  // > 0: the first `dimensions` values, normalized again
};
StatusOr<EmbeddingsParams> ParseEmbeddings(const Json& body);

// The bytes of `v` (little-endian f32) in standard base64 with padding.
std::string Base64Floats(std::span<const float> v);

// Content as a string, or an array of {"type": "text", "text": ...} parts (joined); other part
// types (images, audio) are refused. `name` is the field's path for messages.
StatusOr<std::string> ParseContent(const Json& content, std::string_view name);

// Request bodies. Refused with InvalidArgument naming the field: a missing model or messages,
// wrong types, n other than 1, and what ferry does not have yet (tools, response_format,
// logprobs, suffix, echo, best_of, logit_bias).
StatusOr<ChatCompletionParams> ParseChatCompletion(const Json& body);
StatusOr<CompletionParams> ParseCompletion(const Json& body);

// "stop" or "length" (a cancelled generation never reaches the wire as a finish reason).
std::string_view FinishReason(DoneReason reason);

// usage: prompt_tokens (the whole prompt, cached tokens included), completion_tokens (tokens
// sampled), total_tokens.
Json Usage(const GenerateStats& stats);

// An id such as "chatcmpl-3f9a0c1b2d4e5f60718293a4" (prefix + 24 random hex digits).
std::string NewId(std::string_view prefix);

// What every object of one answer shares.
struct ResponseHead {
  std::string id;       // chatcmpl-... or cmpl-...
  int64_t created = 0;  // Unix seconds
  std::string model;    // as the client sent it
};

// Whole answers: "chat.completion" with choices[0].message, "text_completion" with
// choices[0].text; both with usage.
Json ChatCompletion(const ResponseHead& head, const std::string& content,
                    const GenerateStats& stats);
Json Completion(const ResponseHead& head, const std::string& text, const GenerateStats& stats);

// Stream chunks. A chat chunk carries `delta` ({"role": "assistant", "content": ...} in the
// first, {"content": ...} after, {} in the last) and finish_reason (null until the last); a
// completion chunk carries `text`. UsageChunk: empty choices and usage (include_usage).
Json ChatChunk(const ResponseHead& head, const Json& delta, std::optional<DoneReason> finish);
Json CompletionChunk(const ResponseHead& head, const std::string& text,
                     std::optional<DoneReason> finish);
Json UsageChunk(const ResponseHead& head, bool chat, const GenerateStats& stats);

// One server-sent event: "data: {json}\n\n" (invalid UTF-8 replaced, never thrown).
std::string Sse(const Json& value);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// OpenAI's error type for an HTTP status: invalid_request_error (400, 413 and other 4xx),
// not_found_error (404), server_error (5xx).
std::string_view ErrorType(int http_status);
// {"error": {"message", "type", "param": null, "code": null}}.
Json Error(int http_status, std::string_view message);
std::string ErrorJson(int http_status, std::string_view message);

// A /v1/models entry: {"id", "object": "model", "created", "owned_by": "library"}.
Json ModelObject(std::string_view id, int64_t created);

}  // namespace ferry::api::openai

#endif  // FERRY_API_OPENAI_H_
