// Ollama's HTTP API on the wire: request bodies parsed into native structs (RequestOptions is
// the one definition of a request's options), and the JSON of responses (stream lines, the
// final record with nanosecond durations, errors), with Ollama's field names and status codes.
// docs/serving.md documents what is accepted and refused.
//
// Parsing never throws: every malformed body, wrong type, unknown option or out-of-range value
// is an InvalidArgument whose message names the field ("options.num_ctx: ...").
//
// Thread-safety: pure functions over plain values; any thread.
#ifndef FERRY_API_OLLAMA_H_
#define FERRY_API_OLLAMA_H_

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "gguf/gguf.h"
#include "runtime/request.h"
#include "sched/keep_alive.h"

namespace ferry::api {

using Json = nlohmann::ordered_json;

// A GGUF metadata value as JSON: numbers as numbers, strings, bools, arrays as arrays (the
// model_info of /api/show, and `ferry show --json`).
Json GgufValueToJson(const gguf::Value& v);

// The fields generate and chat share.
struct CommonParams {
  std::string model;                           // as sent ("stories260K", "stories260K:latest")
  Json options = Json::object();               // the raw `options` object (ParseOptions reads it)
  std::optional<sched::KeepAlive> keep_alive;  // absent: the model keeps its own
  bool stream = true;                          // Ollama's default
  // A prompt longer than num_ctx: false answers 400; true (chat only) drops the oldest
  // messages, keeping the system messages and the last message, until it fits.
  bool truncate = false;
};

// POST /api/generate.
struct GenerateParams {
  CommonParams common;
  std::string prompt;
  std::string system;
  bool raw = false;
  std::optional<std::string> template_text;  // `template`: a Go template for this request
  std::string suffix;                        // fill-in-the-middle (the template's .Suffix)
  std::vector<int32_t> context;  // `context` of an earlier answer: tokens the prompt follows
};

struct ChatMessage {
  std::string role;  // system, user, assistant (tool is refused: no tools yet)
  std::string content;
};

// POST /api/chat.
struct ChatParams {
  CommonParams common;
  std::vector<ChatMessage> messages;
};

// POST /api/embed (`input`: a string or an array of strings; `truncate` defaults to true;
// `dimensions`) and the older POST /api/embeddings (`prompt`: one string; truncate true).
struct EmbedParams {
  CommonParams common;
  std::vector<std::string> inputs;
  bool truncate = true;    // an input longer than num_ctx keeps its first num_ctx tokens
  int64_t dimensions = 0;  // > 0: the first `dimensions` values, normalized again
};

// Typed readers of one JSON field, shared by the codecs (Ollama's, OpenAI's): InvalidArgument
// naming `name` for a wrong type ("temperature: expected a number, got a string"), or a value
// out of range. IntField takes integer-valued numbers only (1.0 yes, 1.5 and "1" no).
const char* TypeName(const Json& v);  // "null", "a boolean", "a number", ...
StatusOr<int64_t> IntField(const Json& v, std::string_view name, int64_t lo, int64_t hi);
StatusOr<double> NumberField(const Json& v, std::string_view name);  // finite
StatusOr<bool> BoolField(const Json& v, std::string_view name);
StatusOr<std::string> StringField(const Json& v, std::string_view name);

// Parses a body as a JSON object: InvalidArgument ("invalid JSON: ...") otherwise, and for
// arrays and objects nested more than kMaxJsonDepth levels deep (the body is level 1): JSON
// values are copied, compared and printed recursively, so a body of a million '[' would
// overflow the stack of whoever handles it.
inline constexpr int kMaxJsonDepth = 128;
StatusOr<Json> ParseBody(std::string_view body);

// Request bodies. Refused with InvalidArgument naming the field: a missing/empty model, wrong
// types, and features ferry does not have yet (images, format, template, suffix, context,
// tools), so a client never gets a silently different answer.
StatusOr<GenerateParams> ParseGenerate(const Json& body);
StatusOr<ChatParams> ParseChat(const Json& body);
StatusOr<EmbedParams> ParseEmbed(const Json& body);
StatusOr<EmbedParams> ParseEmbeddingsLegacy(const Json& body);

// `keep_alive` as Ollama takes it: a duration string ("5m"), or a number of seconds; negative =
// forever. Null/absent: nullopt.
StatusOr<std::optional<sched::KeepAlive>> ParseKeepAliveField(const Json& value);

// Applies an `options` object onto `options` (which holds the defaults). Ollama's names:
// num_ctx num_predict num_keep num_batch num_gpu num_thread temperature top_k top_p min_p
// repeat_penalty repeat_last_n presence_penalty frequency_penalty seed stop, plus ferry's
// ignore_eos. Ollama options that do not change results here (use_mmap, use_mlock, numa,
// low_vram, vocab_only, main_gpu 0, penalize_newline) are accepted and ignored; mirostat,
// typical_p and tfs_z only at their neutral values. Anything else, a wrong type (an integer
// option given 1.5 or "8"), or a value out of range is InvalidArgument naming the option.
Status ParseOptions(const Json& json, RequestOptions* options);

// Ollama's model names: "name" or "name:latest" address the same model; "" is refused.
// Returns the name without the ":latest" tag.
StatusOr<std::string> NormalizeModelName(std::string_view name);

// The HTTP status of an error, in one place: InvalidArgument/OutOfRange 400, NotFound 404,
// ResourceExhausted 503 (queue full; a model that cannot fit is 500 as Ollama's load failure),
// Unavailable 503, Unimplemented 501, the rest 500.
int HttpStatusFor(const Status& status);
// {"error": message}.
std::string ErrorJson(std::string_view message);
// Ollama's words for errors clients match on.
std::string ModelNotFoundMessage(std::string_view model);  // model "x" not found, try ...
inline constexpr std::string_view kQueueFullMessage =
    "server busy, please try again.  maximum pending requests exceeded";

// RFC 3339 with nanoseconds in UTC, as Go's time.RFC3339Nano writes it
// ("2024-05-01T10:11:12.123456789Z", trailing zeros of the fraction dropped).
std::string FormatRfc3339Nano(std::chrono::system_clock::time_point t);

// The timing fields of Ollama's final record.
struct FinalTimes {
  int64_t total_ns = 0;  // from the request's arrival to its end
  int64_t load_ns = 0;   // from submission to admission (includes loading the model)
};

// Adds the final record's fields to `line`: done true, done_reason, total_duration,
// load_duration, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration
// (nanoseconds), and ferry's prompt_cached_count (prompt tokens reused from the cache).
void AddFinalFields(const GenerateStats& stats, const FinalTimes& times, Json* line);

// One NDJSON line (JSON + "\n"); invalid UTF-8 is replaced, never thrown.
std::string Line(const Json& value);

}  // namespace ferry::api

#endif  // FERRY_API_OLLAMA_H_
