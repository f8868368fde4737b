#include "api/openai.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>

namespace ferry::api::openai {
namespace {

constexpr int64_t kMaxTokens = int64_t{1} << 24;

bool Present(const Json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// A field ferry cannot honour yet: absent, null, false, or empty is fine.
Status RefuseIfSet(const Json& body, const char* key, std::string_view why) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return Status::Ok();
  if (it->is_boolean() && !it->get<bool>()) return Status::Ok();
  if ((it->is_string() || it->is_array() || it->is_object()) && it->empty()) return Status::Ok();
  return InvalidArgumentError("{}: {}", key, why);
}

// The fields chat and completions share: model, stream, stream_options, n and the sampling
// fields (into common->options, in Ollama's names).
Status ParseShared(const Json& body, CommonParams* common, bool* include_usage) {
  if (!Present(body, "model")) {
    return InvalidArgumentError("model: missing (the name of a model, see GET /v1/models)");
  }
  FERRY_ASSIGN_OR_RETURN(common->model, StringField(body["model"], "model"));
  if (common->model.empty()) return InvalidArgumentError("model: empty");
  common->stream = false;
  if (Present(body, "stream")) {
    FERRY_ASSIGN_OR_RETURN(common->stream, BoolField(body["stream"], "stream"));
  }
  if (Present(body, "stream_options")) {
    const Json& so = body["stream_options"];
    if (!so.is_object()) {
      return InvalidArgumentError("stream_options: expected an object, got {}", TypeName(so));
    }
    if (auto it = so.find("include_usage"); it != so.end() && !it->is_null()) {
      FERRY_ASSIGN_OR_RETURN(*include_usage, BoolField(*it, "stream_options.include_usage"));
    }
  }
  if (Present(body, "n")) {
    FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(body["n"], "n", 1, 128));
    if (n != 1) return InvalidArgumentError("n: only 1 choice per request is supported");
  }

  Json& o = common->options;
  o = Json::object();
  // OpenAI's defaults (as Ollama's compatibility layer sets them), not Ollama's 0.8 / 0.9.
  o["temperature"] = 1.0;
  o["top_p"] = 1.0;
  if (Present(body, "temperature")) {
    FERRY_ASSIGN_OR_RETURN(double t, NumberField(body["temperature"], "temperature"));
    if (t < 0 || t > 2) return InvalidArgumentError("temperature: {} is outside 0..2", t);
    o["temperature"] = t;
  }
  if (Present(body, "top_p")) {
    FERRY_ASSIGN_OR_RETURN(double p, NumberField(body["top_p"], "top_p"));
    if (p < 0 || p > 1) return InvalidArgumentError("top_p: {} is outside 0..1", p);
    o["top_p"] = p;
  }
  for (const char* key : {"frequency_penalty", "presence_penalty"}) {
    if (!Present(body, key)) continue;
    FERRY_ASSIGN_OR_RETURN(double d, NumberField(body[key], key));
    if (d < -2 || d > 2) return InvalidArgumentError("{}: {} is outside -2..2", key, d);
    o[key] = d;
  }
  if (Present(body, "seed")) {
    FERRY_ASSIGN_OR_RETURN(int64_t seed,
                           IntField(body["seed"], "seed", std::numeric_limits<int64_t>::min(),
                                    std::numeric_limits<int64_t>::max()));
    o["seed"] = seed;
  }
  // max_completion_tokens is the newer name; it wins when both are sent.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!Present(body, key)) continue;
    FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(body[key], key, 1, kMaxTokens));
    o["num_predict"] = n;
  }
  if (Present(body, "stop")) {
    const Json& v = body["stop"];
    Json stop = Json::array();
    if (v.is_string()) {
      if (v.get<std::string>().empty()) return InvalidArgumentError("stop: empty stop string");
      stop.push_back(v);
    } else if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string where = fmt::format("stop[{}]", i);
        FERRY_ASSIGN_OR_RETURN(std::string s, StringField(v[i], where));
        if (s.empty()) return InvalidArgumentError("{}: empty stop string", where);
        stop.push_back(std::move(s));
      }
    } else {
      return InvalidArgumentError("stop: expected a string or an array of strings, got {}",
                                  TypeName(v));
    }
    o["stop"] = std::move(stop);
  }
  // An extension (llama.cpp's and vLLM's servers take it too): keep generating past
  // end-of-text, for benchmarks that need exactly max_tokens tokens.
  if (Present(body, "ignore_eos")) {
    FERRY_ASSIGN_OR_RETURN(bool b, BoolField(body["ignore_eos"], "ignore_eos"));
    o["ignore_eos"] = b;
  }
  if (Present(body, "user")) {
    FERRY_ASSIGN_OR_RETURN(std::string user, StringField(body["user"], "user"));
    (void)user;  // an end-user id for abuse monitoring: nothing to do locally
  }
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "logit_bias", "logit_bias is not supported yet"));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "logprobs", "logprobs are not supported yet"));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "top_logprobs", "logprobs are not supported yet"));
  return Status::Ok();
}

std::mutex id_mu;

}  // namespace

StatusOr<EmbeddingsParams> ParseEmbeddings(const Json& body) {
  EmbeddingsParams p;
  if (!Present(body, "model")) {
    return InvalidArgumentError("model: missing (the name of a model, see GET /v1/models)");
  }
  FERRY_ASSIGN_OR_RETURN(p.common.model, StringField(body["model"], "model"));
  if (p.common.model.empty()) return InvalidArgumentError("model: empty");
  p.common.stream = false;
  if (!Present(body, "input")) return InvalidArgumentError("input: missing");
  const Json& input = body["input"];
  if (input.is_array()) {
    if (input.empty()) return InvalidArgumentError("input: an empty array");
    for (size_t i = 0; i < input.size(); ++i) {
      if (input[i].is_number() || input[i].is_array()) {
        return InvalidArgumentError("input[{}]: token arrays are not supported; send text", i);
      }
      FERRY_ASSIGN_OR_RETURN(std::string s, StringField(input[i], fmt::format("input[{}]", i)));
      p.inputs.push_back(std::move(s));
    }
  } else {
    FERRY_ASSIGN_OR_RETURN(std::string s, StringField(input, "input"));
    p.inputs.push_back(std::move(s));
  }
  if (Present(body, "encoding_format")) {
    FERRY_ASSIGN_OR_RETURN(std::string f, StringField(body["encoding_format"], "encoding_format"));
    if (f != "float" && f != "base64") {
      return InvalidArgumentError("encoding_format: \"{}\" is not float or base64", f);
    }
    p.base64 = f == "base64";
  }
  if (Present(body, "dimensions")) {
    FERRY_ASSIGN_OR_RETURN(p.dimensions, IntField(body["dimensions"], "dimensions", 1, 1 << 20));
  }
  if (Present(body, "user")) FERRY_RETURN_IF_ERROR(StringField(body["user"], "user").status());
  return p;
}

std::string Base64Floats(std::span<const float> v) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(v.size() * sizeof(float), '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    for (int k = 0; k < 4; ++k) bytes[4 * i + k] = static_cast<char>((u >> (8 * k)) & 0xff);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t chunk = 0;
    for (size_t k = 0; k < 3; ++k) {
      chunk = (chunk << 8) | (k < n ? static_cast<uint8_t>(bytes[i + k]) : 0u);
    }
    for (size_t k = 0; k < 4; ++k) {
      out += k <= n ? kAlphabet[(chunk >> (18 - 6 * k)) & 63] : '=';
    }
  }
  return out;
}

StatusOr<std::string> ParseContent(const Json& content, std::string_view name) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return InvalidArgumentError("{}: expected a string or an array of content parts, got {}", name,
                                TypeName(content));
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    const std::string where = fmt::format("{}[{}]", name, i);
    if (!part.is_object()) {
      return InvalidArgumentError("{}: expected an object, got {}", where, TypeName(part));
    }
    auto type = part.find("type");
    if (type == part.end()) return InvalidArgumentError("{}.type: missing", where);
    FERRY_ASSIGN_OR_RETURN(std::string t, StringField(*type, where + ".type"));
    if (t != "text") {
      return InvalidArgumentError("{}.type: \"{}\" is not supported (only \"text\" parts)", where,
                                  t);
    }
    auto tx = part.find("text");
    if (tx == part.end()) return InvalidArgumentError("{}.text: missing", where);
    FERRY_ASSIGN_OR_RETURN(std::string s, StringField(*tx, where + ".text"));
    text += s;
  }
  return text;
}

StatusOr<ChatCompletionParams> ParseChatCompletion(const Json& body) {
  ChatCompletionParams p;
  FERRY_RETURN_IF_ERROR(ParseShared(body, &p.common, &p.include_usage));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "tools", "tool calling is not supported yet"));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "functions", "function calling is not supported yet"));
  if (Present(body, "response_format")) {
    const Json& rf = body["response_format"];
    if (!rf.is_object()) {
      return InvalidArgumentError("response_format: expected an object, got {}", TypeName(rf));
    }
    auto type = rf.find("type");
    if (type == rf.end() || !type->is_string() || type->get<std::string>() != "text") {
      return InvalidArgumentError(
          "response_format: only {{\"type\": \"text\"}} is supported (no structured output yet)");
    }
  }
  if (!Present(body, "messages")) return InvalidArgumentError("messages: missing");
  const Json& msgs = body["messages"];
  if (!msgs.is_array()) {
    return InvalidArgumentError("messages: expected an array, got {}", TypeName(msgs));
  }
  if (msgs.empty()) return InvalidArgumentError("messages: empty");
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Json& m = msgs[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) {
      return InvalidArgumentError("{}: expected an object, got {}", where, TypeName(m));
    }
    ChatMessage msg;
    auto role = m.find("role");
    if (role == m.end()) return InvalidArgumentError("{}.role: missing", where);
    FERRY_ASSIGN_OR_RETURN(msg.role, StringField(*role, where + ".role"));
    if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for system
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return InvalidArgumentError(
          "{}.role: \"{}\" is not one of system, developer, user, assistant", where, msg.role);
    }
    if (auto c = m.find("content"); c != m.end()) {
      FERRY_ASSIGN_OR_RETURN(msg.content, ParseContent(*c, where + ".content"));
    }
    FERRY_RETURN_IF_ERROR(
        RefuseIfSet(m, "tool_calls", "tool calling is not supported yet").WithPrefix(where));
    p.messages.push_back(std::move(msg));
  }
  return p;
}

StatusOr<CompletionParams> ParseCompletion(const Json& body) {
  CompletionParams p;
  FERRY_RETURN_IF_ERROR(ParseShared(body, &p.common, &p.include_usage));
  FERRY_RETURN_IF_ERROR(
      RefuseIfSet(body, "suffix", "suffix (fill-in-the-middle) is not supported"));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "echo", "echo is not supported"));
  if (Present(body, "best_of")) {
    FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(body["best_of"], "best_of", 1, 128));
    if (n != 1) return InvalidArgumentError("best_of: only 1 is supported");
  }
  if (!Present(body, "prompt")) return InvalidArgumentError("prompt: missing");
  const Json& prompt = body["prompt"];
  if (prompt.is_array()) {
    // A batch of prompts is n answers; one prompt in an array is the same as the string.
    if (prompt.size() != 1) {
      return InvalidArgumentError("prompt: only one prompt per request is supported");
    }
    FERRY_ASSIGN_OR_RETURN(p.prompt, StringField(prompt[0], "prompt[0]"));
  } else {
    FERRY_ASSIGN_OR_RETURN(p.prompt, StringField(prompt, "prompt"));
  }
  if (p.prompt.empty()) return InvalidArgumentError("prompt: empty");
  return p;
}

std::string_view FinishReason(DoneReason reason) {
  return reason == DoneReason::kLength ? "length" : "stop";
}

Json Usage(const GenerateStats& stats) {
  const int64_t prompt = stats.prompt_eval_count + stats.prompt_reused_count;
  Json u;
  u["prompt_tokens"] = prompt;
  u["completion_tokens"] = stats.eval_count;
  u["total_tokens"] = prompt + stats.eval_count;
  return u;
}

std::string NewId(std::string_view prefix) {
  static std::mt19937_64 gen{std::random_device{}()};
  uint64_t a, b;
  {
    std::lock_guard<std::mutex> lock(id_mu);
    a = gen();
    b = gen();
  }
  return fmt::format("{}{:016x}{:08x}", prefix, a, static_cast<uint32_t>(b));
}

namespace {

Json Head(const ResponseHead& head, const char* object) {
  Json j;
  j["id"] = head.id;
  j["object"] = object;
  j["created"] = head.created;
  j["model"] = head.model;
  j["system_fingerprint"] = "fp_ferry";
  return j;
}

Json Finish(std::optional<DoneReason> finish) {
  return finish ? Json(std::string(FinishReason(*finish))) : Json(nullptr);
}

}  // namespace

Json ChatCompletion(const ResponseHead& head, const std::string& content,
                    const GenerateStats& stats) {
  Json j = Head(head, "chat.completion");
  Json choice;
  choice["index"] = 0;
  choice["message"] = {{"role", "assistant"}, {"content", content}};
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(stats.done_reason);
  j["choices"] = Json::array({choice});
  j["usage"] = Usage(stats);
  return j;
}

Json Completion(const ResponseHead& head, const std::string& text, const GenerateStats& stats) {
  Json j = Head(head, "text_completion");
  Json choice;
  choice["index"] = 0;
  choice["text"] = text;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(stats.done_reason);
  j["choices"] = Json::array({choice});
  j["usage"] = Usage(stats);
  return j;
}

Json ChatChunk(const ResponseHead& head, const Json& delta, std::optional<DoneReason> finish) {
  Json j = Head(head, "chat.completion.chunk");
  Json choice;
  choice["index"] = 0;
  choice["delta"] = delta;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = Finish(finish);
  j["choices"] = Json::array({choice});
  return j;
}

Json CompletionChunk(const ResponseHead& head, const std::string& text,
                     std::optional<DoneReason> finish) {
  Json j = Head(head, "text_completion");
  Json choice;
  choice["index"] = 0;
  choice["text"] = text;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = Finish(finish);
  j["choices"] = Json::array({choice});
  return j;
}

Json UsageChunk(const ResponseHead& head, bool chat, const GenerateStats& stats) {
  Json j = Head(head, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = Json::array();
  j["usage"] = Usage(stats);
  return j;
}

std::string Sse(const Json& value) {
  return "data: " + value.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n\n";
}

std::string_view ErrorType(int http_status) {
  if (http_status == 404) return "not_found_error";
  if (http_status >= 400 && http_status < 500) return "invalid_request_error";
  return "server_error";
}

Json Error(int http_status, std::string_view message) {
  Json e;
  e["message"] = std::string(message);
  e["type"] = std::string(ErrorType(http_status));
  e["param"] = nullptr;
  e["code"] = nullptr;
  return Json{{"error", e}};
}

std::string ErrorJson(int http_status, std::string_view message) {
  return Error(http_status, message).dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json ModelObject(std::string_view id, int64_t created) {
  Json j;
  j["id"] = std::string(id);
  j["object"] = "model";
  j["created"] = created;
  j["owned_by"] = "library";
  return j;
}

}  // namespace ferry::api::openai
