#include "api/ollama.h"

#include <fmt/format.h>

#include <cmath>
#include <ctime>
#include <limits>

namespace ferry::api {

const char* TypeName(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// An integer-valued JSON number within [lo, hi].
StatusOr<int64_t> IntField(const Json& v, std::string_view name, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      return InvalidArgumentError("{}: {} is out of range ({}..{})", name, v.dump(), lo, hi);
    }
    x = v.get<int64_t>();
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) {
      return InvalidArgumentError("{}: expected an integer, got {}", name, v.dump());
    }
    // static_cast<double>(INT64_MAX) rounds up to 2^63, which does not convert: checked apart.
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi) || d >= 0x1p63) {
      return InvalidArgumentError("{}: {} is out of range ({}..{})", name, v.dump(), lo, hi);
    }
    x = static_cast<int64_t>(d);
  } else {
    return InvalidArgumentError("{}: expected an integer, got {}", name, TypeName(v));
  }
  if (x < lo || x > hi) {
    return InvalidArgumentError("{}: {} is out of range ({}..{})", name, x, lo, hi);
  }
  return x;
}

StatusOr<double> NumberField(const Json& v, std::string_view name) {
  if (!v.is_number()) {
    return InvalidArgumentError("{}: expected a number, got {}", name, TypeName(v));
  }
  double d = v.get<double>();
  if (!std::isfinite(d)) return InvalidArgumentError("{}: not a finite number", name);
  return d;
}

StatusOr<bool> BoolField(const Json& v, std::string_view name) {
  if (!v.is_boolean()) {
    return InvalidArgumentError("{}: expected true or false, got {}", name, TypeName(v));
  }
  return v.get<bool>();
}

StatusOr<std::string> StringField(const Json& v, std::string_view name) {
  if (!v.is_string()) {
    return InvalidArgumentError("{}: expected a string, got {}", name, TypeName(v));
  }
  return v.get<std::string>();
}

namespace {

// A field that ferry cannot honour yet: absent, null, or empty is fine.
Status RefuseIfSet(const Json& body, const char* name, std::string_view why) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return Status::Ok();
  if ((it->is_string() || it->is_array() || it->is_object()) && it->empty()) return Status::Ok();
  return InvalidArgumentError("{}: {}", name, why);
}

StatusOr<CommonParams> ParseCommon(const Json& body) {
  CommonParams c;
  auto model = body.find("model");
  if (model == body.end() || model->is_null()) {
    return InvalidArgumentError("model: missing (the name of a model, see GET /api/tags)");
  }
  FERRY_ASSIGN_OR_RETURN(c.model, StringField(*model, "model"));
  if (c.model.empty()) return InvalidArgumentError("model: empty");
  if (auto it = body.find("options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      return InvalidArgumentError("options: expected an object, got {}", TypeName(*it));
    }
    c.options = *it;
  }
  if (auto it = body.find("keep_alive"); it != body.end()) {
    FERRY_ASSIGN_OR_RETURN(c.keep_alive, ParseKeepAliveField(*it));
  }
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(c.stream, BoolField(*it, "stream"));
  }
  if (auto it = body.find("truncate"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(c.truncate, BoolField(*it, "truncate"));
  }
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "format", "structured output is not supported yet"));
  return c;
}

}  // namespace

StatusOr<Json> ParseBody(std::string_view body) {
  // The parser itself keeps its stack on the heap; this callback drops every array and object
  // below the limit (never built), and notes that there was one.
  bool too_deep = false;
  const Json::parser_callback_t limit_depth = [&too_deep](int depth, Json::parse_event_t event,
                                                          Json&) {
    // `depth` counts the arrays and objects around the one starting.
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  Json j = Json::parse(body, limit_depth, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again with exceptions only to get the position for the message.
    try {
      Json unused = Json::parse(body, limit_depth);
      (void)unused;
    } catch (const Json::exception& e) {
      return InvalidArgumentError("invalid JSON in the request body: {}", e.what());
    }
    return InvalidArgumentError("invalid JSON in the request body");
  }
  if (too_deep) {
    return InvalidArgumentError("the request body nests arrays and objects more than {} deep",
                                kMaxJsonDepth);
  }
  if (!j.is_object()) {
    return InvalidArgumentError("the request body must be a JSON object, got {}", TypeName(j));
  }
  return j;
}

StatusOr<std::optional<sched::KeepAlive>> ParseKeepAliveField(const Json& v) {
  if (v.is_null()) return std::optional<sched::KeepAlive>();
  if (v.is_string()) {
    auto k = sched::ParseKeepAlive(v.get<std::string>());
    if (!k.ok()) return k.status().WithPrefix("keep_alive");
    return std::optional<sched::KeepAlive>(*k);
  }
  if (v.is_number()) {
    auto k = sched::KeepAliveFromSeconds(v.get<double>());
    if (!k.ok()) return k.status().WithPrefix("keep_alive");
    return std::optional<sched::KeepAlive>(*k);
  }
  return InvalidArgumentError("keep_alive: expected a duration (\"5m\") or seconds, got {}",
                              TypeName(v));
}

StatusOr<GenerateParams> ParseGenerate(const Json& body) {
  GenerateParams p;
  FERRY_ASSIGN_OR_RETURN(p.common, ParseCommon(body));
  if (auto it = body.find("prompt"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(p.prompt, StringField(*it, "prompt"));
  }
  if (auto it = body.find("system"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(p.system, StringField(*it, "system"));
  }
  if (auto it = body.find("raw"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(p.raw, BoolField(*it, "raw"));
  }
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "images", "images are not supported (no vision models)"));
  if (auto it = body.find("suffix"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(p.suffix, StringField(*it, "suffix"));
  }
  if (auto it = body.find("template"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(std::string t, StringField(*it, "template"));
    if (!t.empty()) p.template_text = std::move(t);
  }
  if (auto it = body.find("context"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) {
      return InvalidArgumentError("context: expected an array of token ids, got {}", TypeName(*it));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      FERRY_ASSIGN_OR_RETURN(int64_t id, IntField((*it)[i], fmt::format("context[{}]", i), 0,
                                                  std::numeric_limits<int32_t>::max()));
      p.context.push_back(static_cast<int32_t>(id));
    }
  }
  return p;
}

namespace {

Status ParseEmbedShared(const Json& body, EmbedParams* p) {
  FERRY_ASSIGN_OR_RETURN(p->common, ParseCommon(body));
  if (auto it = body.find("truncate"); it == body.end() || it->is_null())
    p->truncate = true;
  else
    p->truncate = p->common.truncate;
  if (auto it = body.find("dimensions"); it != body.end() && !it->is_null()) {
    FERRY_ASSIGN_OR_RETURN(p->dimensions, IntField(*it, "dimensions", 1, 1 << 20));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<EmbedParams> ParseEmbed(const Json& body) {
  EmbedParams p;
  FERRY_RETURN_IF_ERROR(ParseEmbedShared(body, &p));
  auto it = body.find("input");
  if (it == body.end() || it->is_null()) return InvalidArgumentError("input: missing");
  if (it->is_array()) {
    if (it->empty()) return InvalidArgumentError("input: an empty array");
    for (size_t i = 0; i < it->size(); ++i) {
      FERRY_ASSIGN_OR_RETURN(std::string s, StringField((*it)[i], fmt::format("input[{}]", i)));
      p.inputs.push_back(std::move(s));
    }
  } else {
    FERRY_ASSIGN_OR_RETURN(std::string s, StringField(*it, "input"));
    p.inputs.push_back(std::move(s));
  }
  return p;
}

StatusOr<EmbedParams> ParseEmbeddingsLegacy(const Json& body) {
  EmbedParams p;
  FERRY_RETURN_IF_ERROR(ParseEmbedShared(body, &p));
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return InvalidArgumentError("prompt: missing");
  FERRY_ASSIGN_OR_RETURN(std::string s, StringField(*it, "prompt"));
  p.inputs.push_back(std::move(s));
  return p;
}

StatusOr<ChatParams> ParseChat(const Json& body) {
  ChatParams p;
  FERRY_ASSIGN_OR_RETURN(p.common, ParseCommon(body));
  FERRY_RETURN_IF_ERROR(RefuseIfSet(body, "tools", "tool calling is not supported yet"));
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return p;
  if (!it->is_array()) {
    return InvalidArgumentError("messages: expected an array, got {}", TypeName(*it));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) {
      return InvalidArgumentError("{}: expected an object, got {}", where, TypeName(m));
    }
    ChatMessage msg;
    auto role = m.find("role");
    if (role == m.end()) return InvalidArgumentError("{}.role: missing", where);
    FERRY_ASSIGN_OR_RETURN(msg.role, StringField(*role, where + ".role"));
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return InvalidArgumentError("{}.role: \"{}\" is not one of system, user, assistant", where,
                                  msg.role);
    }
    if (auto c = m.find("content"); c != m.end() && !c->is_null()) {
      FERRY_ASSIGN_OR_RETURN(msg.content, StringField(*c, where + ".content"));
    }
    FERRY_RETURN_IF_ERROR(
        RefuseIfSet(m, "images", "images are not supported (no vision models)").WithPrefix(where));
    FERRY_RETURN_IF_ERROR(
        RefuseIfSet(m, "tool_calls", "tool calling is not supported yet").WithPrefix(where));
    p.messages.push_back(std::move(msg));
  }
  return p;
}

Status ParseOptions(const Json& json, RequestOptions* o) {
  if (json.is_null()) return Status::Ok();
  if (!json.is_object()) {
    return InvalidArgumentError("options: expected an object, got {}", TypeName(json));
  }
  constexpr int64_t kMaxCtx = int64_t{1} << 24;
  constexpr int64_t kI32 = std::numeric_limits<int32_t>::max();
  SamplingOptions& s = o->sampling;
  for (const auto& [key, v] : json.items()) {
    const std::string name = "options." + key;
    if (key == "num_ctx") {
      FERRY_ASSIGN_OR_RETURN(o->num_ctx, IntField(v, name, 1, kMaxCtx));
    } else if (key == "num_predict") {
      // Ollama: -1 unlimited, -2 until the context is full; both mean "until done" here.
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, -2, kMaxCtx));
      o->num_predict = n < 0 ? -1 : n;
    } else if (key == "num_keep") {
      // Only matters for truncation, which ferry refuses (400) instead of doing silently.
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, -1, kMaxCtx));
      (void)n;
    } else if (key == "num_batch") {
      FERRY_ASSIGN_OR_RETURN(o->num_batch, IntField(v, name, 1, 65536));
    } else if (key == "num_gpu") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, -1, 100000));
      o->num_gpu = static_cast<int>(n);
    } else if (key == "num_thread") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, 0, 4096));
      o->num_thread = static_cast<int>(n);
    } else if (key == "temperature") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      if (d < 0) return InvalidArgumentError("{}: {} is negative", name, d);
      s.temperature = static_cast<float>(d);
    } else if (key == "top_k") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, 0, kI32));
      s.top_k = static_cast<int32_t>(n);
    } else if (key == "top_p" || key == "min_p") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      if (d < 0 || d > 1) return InvalidArgumentError("{}: {} is outside 0..1", name, d);
      (key == "top_p" ? s.top_p : s.min_p) = static_cast<float>(d);
    } else if (key == "repeat_penalty") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      if (d <= 0) return InvalidArgumentError("{}: {} must be above 0", name, d);
      s.repeat_penalty = static_cast<float>(d);
    } else if (key == "repeat_last_n") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, -1, kI32));
      s.repeat_last_n = static_cast<int32_t>(n);
    } else if (key == "presence_penalty" || key == "frequency_penalty") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      (key == "presence_penalty" ? s.presence_penalty : s.frequency_penalty) =
          static_cast<float>(d);
    } else if (key == "seed") {
      // Ollama: -1 (or any negative) = random.
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, std::numeric_limits<int64_t>::min(),
                                                 std::numeric_limits<int64_t>::max()));
      if (n < 0) {
        s.seed.reset();
      } else {
        s.seed = static_cast<uint64_t>(n);
      }
    } else if (key == "stop") {
      o->stop.clear();
      if (v.is_string()) {
        o->stop.push_back(v.get<std::string>());
      } else if (v.is_array()) {
        for (size_t i = 0; i < v.size(); ++i) {
          FERRY_ASSIGN_OR_RETURN(std::string st, StringField(v[i], fmt::format("{}[{}]", name, i)));
          if (st.empty()) return InvalidArgumentError("{}[{}]: empty stop string", name, i);
          o->stop.push_back(std::move(st));
        }
      } else if (!v.is_null()) {
        return InvalidArgumentError("{}: expected an array of strings, got {}", name, TypeName(v));
      }
    } else if (key == "ignore_eos") {
      FERRY_ASSIGN_OR_RETURN(o->ignore_eos, BoolField(v, name));
    } else if (key == "use_mmap" || key == "use_mlock" || key == "numa" || key == "low_vram" ||
               key == "vocab_only" || key == "penalize_newline" || key == "f16_kv" ||
               key == "logits_all") {
      if (!v.is_boolean() && !v.is_null()) {
        return InvalidArgumentError("{}: expected true or false, got {}", name, TypeName(v));
      }
    } else if (key == "main_gpu") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, 0, 0));
      (void)n;
    } else if (key == "mirostat") {
      FERRY_ASSIGN_OR_RETURN(int64_t n, IntField(v, name, 0, 2));
      if (n != 0) return InvalidArgumentError("{}: mirostat sampling is not supported", name);
    } else if (key == "mirostat_tau" || key == "mirostat_eta") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      (void)d;
    } else if (key == "typical_p" || key == "tfs_z") {
      FERRY_ASSIGN_OR_RETURN(double d, NumberField(v, name));
      if (d != 1.0) return InvalidArgumentError("{}: only 1 (off) is supported", name);
    } else {
      return InvalidArgumentError("{}: unknown option", name);
    }
  }
  Status s_ok = ValidateRequestOptions(*o);
  if (!s_ok.ok()) return s_ok.WithPrefix("options");
  return Status::Ok();
}

StatusOr<std::string> NormalizeModelName(std::string_view name) {
  if (name.empty()) return InvalidArgumentError("model: empty");
  std::string n(name);
  constexpr std::string_view kLatest = ":latest";
  if (n.size() > kLatest.size() && n.ends_with(kLatest)) n.resize(n.size() - kLatest.size());
  return n;
}

int HttpStatusFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kResourceExhausted:
      // The queue bound is the one ResourceExhausted the server sees at Submit for a model
      // that can fit; the planner's "does not fit" is a load failure (Ollama: 500).
      return status.message().find("queue") != std::string::npos ? 503 : 500;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::string ErrorJson(std::string_view message) {
  Json j;
  j["error"] = std::string(message);
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ModelNotFoundMessage(std::string_view model) {
  return fmt::format("model \"{}\" not found, try pulling it first", model);
}

std::string FormatRfc3339Nano(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    secs -= 1;
  }
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::string s = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (frac != 0) {
    std::string f = fmt::format("{:09}", frac);
    while (!f.empty() && f.back() == '0') f.pop_back();
    s += "." + f;
  }
  return s + "Z";
}

void AddFinalFields(const GenerateStats& stats, const FinalTimes& times, Json* line) {
  Json& j = *line;
  j["done"] = true;
  j["done_reason"] = std::string(DoneReasonName(stats.done_reason));
  j["total_duration"] = times.total_ns;
  j["load_duration"] = times.load_ns;
  j["prompt_eval_count"] = stats.prompt_eval_count;
  j["prompt_eval_duration"] = stats.prompt_eval_ns;
  j["eval_count"] = stats.eval_count;
  j["eval_duration"] = stats.eval_ns;
  j["prompt_cached_count"] = stats.prompt_reused_count;
}

std::string Line(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

Json GgufValueToJson(const gguf::Value& v) {
  return std::visit(
      [](const auto& x) -> Json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, gguf::Array>) {
          Json items = Json::array();
          for (size_t i = 0; i < x.size(); ++i) items.push_back(GgufValueToJson(x.at(i)));
          return items;
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, uint16_t> ||
                             std::is_same_v<T, uint32_t> || std::is_same_v<T, uint64_t>) {
          return static_cast<uint64_t>(x);
        } else if constexpr (std::is_same_v<T, int8_t> || std::is_same_v<T, int16_t> ||
                             std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_same_v<T, float>) {
          return static_cast<double>(x);
        } else {
          return x;
        }
      },
      v.data);
}

}  // namespace ferry::api
