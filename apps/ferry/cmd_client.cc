#include "cmd_client.h"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "cmd_run.h"
#include "interactive.h"
#include "planner/plan.h"
#include "server/server.h"
#include "store/modelfile.h"

namespace ferry::app {
namespace {

using Json = nlohmann::json;

// Ollama's format.HumanBytes: decimal units, "%d" from 10 up, else one decimal when needed.
std::string HumanBytes(uint64_t b) {
  const char* unit = "B";
  double value = static_cast<double>(b);
  if (b >= 1000000000) {
    unit = "GB";
    value /= 1e9;
  } else if (b >= 1000000) {
    unit = "MB";
    value /= 1e6;
  } else if (b >= 1000) {
    unit = "KB";
    value /= 1e3;
  }
  if (value >= 10 || value == std::trunc(value)) {
    return fmt::format("{} {}", static_cast<int64_t>(value), unit);
  }
  return fmt::format("{:.1f} {}", value, unit);
}

// Ollama's format.HumanTime for a time in the future ("4 minutes from now", "Forever").
std::string HumanUntil(double seconds) {
  if (seconds > 20 * 365.25 * 86400) return "Forever";
  const double s = seconds;
  std::string d;
  if (s < 1) {
    d = "Less than a second";
  } else if (s < 2) {
    d = "1 second";
  } else if (s < 60) {
    d = fmt::format("{} seconds", static_cast<int64_t>(s));
  } else if (s < 120) {
    d = "About a minute";
  } else if (s < 3600) {
    d = fmt::format("{} minutes", static_cast<int64_t>(s / 60));
  } else if (s < 7200) {
    d = "About an hour";
  } else if (s < 86400 * 2) {
    d = fmt::format("{} hours", static_cast<int64_t>(s / 3600));
  } else {
    d = fmt::format("{} days", static_cast<int64_t>(s / 86400));
  }
  return d + " from now";
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

// A client of FERRY_HOST; "0.0.0.0" (listen on all) is reached at 127.0.0.1.
struct Target {
  std::string host;
  int port;
  std::string Display() const { return fmt::format("{}:{}", host, port); }
};

StatusOr<Target> TargetOf(const Settings& settings) {
  FERRY_ASSIGN_OR_RETURN(server::HostPort hp, server::ParseHostPort(settings.host));
  if (hp.host == "0.0.0.0") hp.host = "127.0.0.1";
  if (hp.host == "::") hp.host = "::1";
  return Target{hp.host, hp.port};
}

std::string NoServer(const Target& t) {
  return fmt::format("ferry: no server on {} (start one with ferry serve)", t.Display());
}

// The server's error text of a non-200 answer.
std::string ErrorOf(const httplib::Result& r) {
  auto j = Json::parse(r->body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    return j["error"].get<std::string>();
  }
  return fmt::format("HTTP {}", r->status);
}

int RunPs(const Target& t) {
  httplib::Client cli(t.host, t.port);
  cli.set_connection_timeout(5);
  auto r = cli.Get("/api/ps");
  if (!r) return Fail(NoServer(t));
  if (r->status != 200) return Fail(fmt::format("ferry: {}", ErrorOf(r)));
  auto j = Json::parse(r->body, nullptr, false);
  if (!j.is_object() || !j.contains("models") || !j["models"].is_array()) {
    return Fail("ferry: the server's answer is not /api/ps's");
  }
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "KV"}};
  for (const Json& m : j["models"]) {
    auto str = [&](const char* k) {
      return m.contains(k) && m[k].is_string() ? m[k].get<std::string>() : std::string();
    };
    auto num = [&](const char* k) -> uint64_t {
      return m.contains(k) && m[k].is_number() ? m[k].get<uint64_t>() : 0;
    };
    std::string until;
    if (auto at = ParseRfc3339(str("expires_at")); at) {
      until = *at < now ? "Stopping..." : HumanUntil(*at - now);
    }
    const std::string digest = str("digest");
    rows.push_back({str("name"), digest.substr(0, std::min<size_t>(12, digest.size())),
                    HumanBytes(num("size")), ProcessorSplit(num("size"), num("size_vram")),
                    fmt::format("{}", num("context_length")), until,
                    fmt::format("{}/{}", num("kv_blocks_used"), num("kv_blocks_total"))});
  }
  // Ollama's tabwriter: columns padded to the widest cell plus 4 spaces.
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 4, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int RunStop(const Target& t, const std::string& model) {
  httplib::Client cli(t.host, t.port);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(60);
  Json body = {{"model", model}, {"keep_alive", 0}};
  auto r = cli.Post("/api/generate", body.dump(), "application/json");
  if (!r) return Fail(NoServer(t));
  if (r->status != 200) return Fail(fmt::format("ferry: {}", ErrorOf(r)));
  return 0;
}

// The options of `r` that the command line gave, as Ollama's `options` object.
Json GivenOptions(const RequestFlags& r) {
  Json o = Json::object();
  const RequestOptions& v = r.options;
  const SamplingOptions& s = v.sampling;
  auto given = [&](const char* name) {
    auto it = r.flags.find(name);
    return it != r.flags.end() && it->second != nullptr && it->second->count() > 0;
  };
  if (given("num_ctx")) o["num_ctx"] = v.num_ctx;
  if (given("num_predict")) o["num_predict"] = v.num_predict;
  if (given("num_batch")) o["num_batch"] = v.num_batch;
  if (given("num_thread")) o["num_thread"] = v.num_thread;
  if (given("temperature")) o["temperature"] = s.temperature;
  if (given("top_k")) o["top_k"] = s.top_k;
  if (given("top_p")) o["top_p"] = s.top_p;
  if (given("min_p")) o["min_p"] = s.min_p;
  if (given("repeat_penalty")) o["repeat_penalty"] = s.repeat_penalty;
  if (given("repeat_last_n")) o["repeat_last_n"] = s.repeat_last_n;
  if (given("presence_penalty")) o["presence_penalty"] = s.presence_penalty;
  if (given("frequency_penalty")) o["frequency_penalty"] = s.frequency_penalty;
  if (given("seed") && s.seed) o["seed"] = *s.seed;
  if (given("stop")) o["stop"] = v.stop;
  return o;
}

// One streamed request: prints each piece; the answer's text, or the error the server sent.
StatusOr<std::string> StreamTurn(httplib::Client& cli, const std::string& path, const Json& body,
                                 bool verbose) {
  std::string buffer, answer, error;
  Json last;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      const std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      Json j = Json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("error") && j["error"].is_string()) {
        error = j["error"].get<std::string>();
        continue;
      }
      std::string piece;
      if (j.contains("message") && j["message"].is_object() &&
          j["message"].value("content", Json()).is_string()) {
        piece = j["message"]["content"].get<std::string>();
      } else if (j.contains("response") && j["response"].is_string()) {
        piece = j["response"].get<std::string>();
      }
      if (!piece.empty()) {
        // Ctrl-C in an interactive session, or output that cannot be written, cancels the
        // request (the server stops generating when the connection closes).
        if (Interrupted()) return false;
        if (std::fwrite(piece.data(), 1, piece.size(), stdout) != piece.size() ||
            std::fflush(stdout) != 0) {
          return false;
        }
        answer += piece;
      }
      if (j.value("done", false)) last = j;
    }
    return !Interrupted();
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  if (!cli.send(req, res, err)) {
    if (err == httplib::Error::Canceled) {
      std::printf("\n");
      return answer;  // stopped by the user (or an unwritable stdout, which main() reports)
    }
    return UnavailableError("the server stopped answering: {}", httplib::to_string(err));
  }
  if (res.status != 200) {
    auto j = Json::parse(buffer.empty() ? res.body : buffer, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) {
      return InvalidArgumentError("{}", j["error"].get<std::string>());
    }
    return InvalidArgumentError("HTTP {}", res.status);
  }
  std::printf("\n");
  if (!error.empty()) return InternalError("{}", error);
  if (verbose && last.is_object()) {
    auto ns = [&](const char* k) { return last.value(k, int64_t{0}); };
    auto rate = [](int64_t n, int64_t t) { return t > 0 ? n / (t * 1e-9) : 0.0; };
    std::fprintf(stderr, "prompt: %lld tokens, %.2f tok/s; generation: %lld tokens, %.2f tok/s\n",
                 static_cast<long long>(ns("prompt_eval_count")),
                 rate(ns("prompt_eval_count"), ns("prompt_eval_duration")),
                 static_cast<long long>(ns("eval_count")),
                 rate(ns("eval_count"), ns("eval_duration")));
  }
  return answer;
}

}  // namespace

std::optional<double> ParseRfc3339(const std::string& text) {
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  double frac = 0;
  if (static_cast<size_t>(consumed) < text.size() && text[consumed] == '.') {
    frac = std::strtod(("0" + text.substr(consumed)).c_str(), nullptr);
  }
  return static_cast<double>(timegm(&tm)) + frac;
}

std::optional<std::string> GetFromRunningServer(const Settings& settings, const std::string& path) {
  auto t = TargetOf(settings);
  if (!t.ok()) return std::nullopt;
  httplib::Client cli(t->host, t->port);
  cli.set_connection_timeout(1);
  cli.set_read_timeout(30);
  auto probe = cli.Get("/");
  if (!probe || probe->status != 200 || probe->body.find("ferry") == std::string::npos) {
    return std::nullopt;
  }
  auto r = cli.Get(path);
  if (!r || r->status != 200) return std::nullopt;
  return r->body;
}

bool RunThroughServer(const Settings& settings, const RunOptions& o, int* exit_code) {
  auto t = TargetOf(settings);
  if (!t.ok()) return false;
  httplib::Client cli(t->host, t->port);
  cli.set_connection_timeout(1);
  cli.set_read_timeout(600);
  auto probe = cli.Get("/");
  if (!probe || probe->status != 200 || probe->body.find("ferry") == std::string::npos) {
    return false;
  }
  if (o.verbose) std::fprintf(stderr, "ferry: through the server on %s\n", t->Display().c_str());
  Json options = GivenOptions(o.request);
  RequestOptions effective = o.request.options;  // validates /set parameter as ferry run does
  std::string system = o.raw ? "" : o.system;
  Json messages = Json::array();
  auto turn = [&](const std::string& text) -> Status {
    Json body = {{"model", o.model}, {"options", options}, {"stream", true}};
    if (o.raw) {
      body["prompt"] = text;
      body["raw"] = true;
      return StreamTurn(cli, "/api/generate", body, o.verbose).status();
    }
    Json sent = Json::array();
    if (!system.empty()) sent.push_back({{"role", "system"}, {"content", system}});
    for (const Json& m : messages) sent.push_back(m);
    sent.push_back({{"role", "user"}, {"content", text}});
    body["messages"] = sent;
    auto answer = StreamTurn(cli, "/api/chat", body, o.verbose);
    if (!answer.ok()) return answer.status();
    // A reply stopped with Ctrl-C stays in the conversation as far as it went.
    messages.push_back({{"role", "user"}, {"content", text}});
    messages.push_back({{"role", "assistant"}, {"content", *answer}});
    return Status::Ok();
  };
  if (o.prompt) {
    Status s = turn(*o.prompt);
    if (!s.ok()) std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
    *exit_code = s.ok() ? 0 : 1;
    return true;
  }
  SessionHooks hooks;
  hooks.turn = turn;
  hooks.clear = [&] { messages = Json::array(); };
  hooks.set_system = [&](const std::string& text) { system = text; };
  hooks.set_parameter = [&](const std::string& name,
                            const std::vector<std::string>& values) -> Status {
    RequestOptions next = effective;
    FERRY_RETURN_IF_ERROR(ApplyParameter(name, values, next));
    FERRY_RETURN_IF_ERROR(ValidateRequestOptions(next));
    effective = next;
    if (name == "stop") {
      options["stop"] = values;
    } else if (store::FindParameterType(name) == store::ParameterType::kInt) {
      options[name] = std::stoll(values.front());
    } else {
      options[name] = std::stod(values.front());
    }
    return Status::Ok();
  };
  hooks.show = [&](const std::string& what) -> StatusOr<std::string> {
    if (what == "parameters") return FormatSessionParameters(effective);
    if (what == "system") {
      return system.empty() ? std::string("No system message was specified for this model.")
                            : system;
    }
    auto r = cli.Post("/api/show", Json{{"model", o.model}}.dump(), "application/json");
    if (!r || r->status != 200) return UnavailableError("the server did not show {}", o.model);
    Json j = Json::parse(r->body, nullptr, false);
    if (!j.is_object()) return UnavailableError("the server's /api/show answer is not JSON");
    if (what == "template") {
      const std::string tmpl = j.value("template", std::string());
      return tmpl.empty() ? std::string("No chat template: prompts are sent raw.") : tmpl;
    }
    const Json details = j.value("details", Json::object());
    const Json info = j.value("model_info", Json::object());
    const std::string arch = info.value("general.architecture", std::string());
    auto number = [&](const std::string& key) -> uint64_t {
      auto it = info.find(key);
      return it != info.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
    };
    return FormatSessionInfo(arch, number("general.parameter_count"),
                             number(arch + ".context_length"), number(arch + ".embedding_length"),
                             details.value("quantization_level", std::string()));
  };
  *exit_code = RunSession(settings, o.model, hooks);
  return true;
}

void AddClientCommands(CLI::App& app, ClientCommandOptions& options) {
  options.ps = app.add_subcommand("ps", "List the models a running ferry serve has loaded");
  options.stop = app.add_subcommand("stop", "Unload a model from a running ferry serve");
  options.stop->add_option("model", options.model, "Model name")->required();
}

bool RunClientCommand(const Settings& settings, const ClientCommandOptions& options,
                      int* exit_code) {
  const bool ps = options.ps != nullptr && options.ps->parsed();
  const bool stop = options.stop != nullptr && options.stop->parsed();
  if (!ps && !stop) return false;
  auto t = TargetOf(settings);
  if (!t.ok()) {
    *exit_code = Fail(fmt::format("ferry: {}", t.status().message()));
    return true;
  }
  *exit_code = ps ? RunPs(*t) : RunStop(*t, options.model);
  return true;
}

}  // namespace ferry::app
