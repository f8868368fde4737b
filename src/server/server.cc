#include "server/server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <exception>
#include <filesystem>

#include "api/ollama.h"
#include "api/openai.h"
#include "base/log.h"
#include "server/replies.h"
#include "store/modelfile.h"

namespace ferry::server {
namespace {

using api::Json;
using Clock = std::chrono::steady_clock;

constexpr char kNdjson[] = "application/x-ndjson";
constexpr char kShutdownMessage[] = "server is shutting down";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t NsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count();
}

std::string Now() { return api::FormatRfc3339Nano(std::chrono::system_clock::now()); }

// Errors of OpenAI's routes (/v1/...) in OpenAI's shape, the others in Ollama's.
void SendErrorFor(const httplib::Request& req, httplib::Response& res, int status,
                  std::string_view message) {
  if (req.path.starts_with("/v1/")) {
    SendOpenAIError(res, status, message);
  } else {
    SendError(res, status, message);
  }
}

// "260K", "1.2M", "270.4M", "7.2B": Ollama's parameter_size.
std::string ParameterSize(uint64_t n) {
  if (n >= 1000000000) return fmt::format("{:.1f}B", n / 1e9);
  if (n >= 1000000) return fmt::format("{:.1f}M", n / 1e6);
  if (n >= 1000) return fmt::format("{:.0f}K", n / 1e3);
  return fmt::format("{}", n);
}

Json Details(const ModelInfo& info) {
  Json d;
  d["parent_model"] = "";
  d["format"] = "gguf";
  d["family"] = info.architecture;
  d["families"] = Json::array({info.architecture});
  d["parameter_size"] = ParameterSize(info.parameter_count);
  d["quantization_level"] = info.file_type_name;
  return d;
}

Json Details(const store::ModelDetails& d) {
  Json j;
  j["parent_model"] = "";
  j["format"] = d.format;
  j["family"] = d.family;
  j["families"] = d.families;
  j["parameter_size"] = d.parameter_size;
  j["quantization_level"] = d.quantization_level;
  return j;
}

// A PARAMETER's whole text as a number of type T; InvalidArgument saying it is not `what`.
template <typename T>
StatusOr<T> ParameterNumber(const std::string& name, const std::string& text, const char* what) {
  T v{};
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) {
    return InvalidArgumentError("the model's PARAMETER {} {}: not {}", name, text, what);
  }
  return v;
}

// A stored model's PARAMETERs as an `options` object (typed as the option's type), for
// api::ParseOptions: the Modelfile's values go through the same checks as a request's.
StatusOr<Json> ParametersJson(const std::map<std::string, std::vector<std::string>>& params) {
  Json j = Json::object();
  for (const auto& [name, values] : params) {
    if (values.empty()) continue;
    auto type = store::FindParameterType(name);
    if (!type) return InvalidArgumentError("the model's PARAMETER {}: unknown", name);
    const std::string& text = values.back();
    switch (*type) {
      case store::ParameterType::kStringList:
        j[name] = values;
        break;
      case store::ParameterType::kInt: {
        FERRY_ASSIGN_OR_RETURN(j[name], ParameterNumber<int64_t>(name, text, "an integer"));
        break;
      }
      case store::ParameterType::kFloat: {
        FERRY_ASSIGN_OR_RETURN(j[name], ParameterNumber<double>(name, text, "a number"));
        break;
      }
    }
  }
  return j;
}

// Go's %#v of a JSON value: strings quoted, numbers bare (Ollama's /api/show parameters).
std::string GoValue(const std::string& name, const std::string& text) {
  if (store::FindParameterType(name) == store::ParameterType::kStringList) {
    return Json(text).dump();
  }
  return text;
}

// Ollama's /api/show `parameters`: one "%-30s %#v" line per value.
std::string ParametersText(const std::map<std::string, std::vector<std::string>>& params) {
  std::string out;
  for (const auto& [name, values] : params) {
    for (const std::string& v : values) {
      if (!out.empty()) out += '\n';
      out += fmt::format("{:<30} {}", name, GoValue(name, v));
    }
  }
  return out;
}

// The options option_sources reports.
constexpr const char* kSourcedOptions[] = {
    "num_ctx", "num_predict", "temperature",    "top_k",     "top_p",   "min_p",
    "stop",    "seed",        "repeat_penalty", "num_batch", "num_gpu", "repeat_last_n"};

// Which route a request counts under in ferry_http_requests_total.
std::string EndpointLabel(const httplib::Request& req) {
  static const char* kKnown[] = {"/",
                                 "/api/generate",
                                 "/api/chat",
                                 "/api/tags",
                                 "/api/ps",
                                 "/api/show",
                                 "/api/version",
                                 "/api/pull",
                                 "/api/push",
                                 "/api/create",
                                 "/api/copy",
                                 "/api/delete",
                                 "/api/embed",
                                 "/api/embeddings",
                                 "/metrics",
                                 "/v1/chat/completions",
                                 "/v1/completions",
                                 "/v1/models",
                                 "/v1/embeddings"};
  for (const char* k : kKnown) {
    if (req.path == k) return k;
  }
  return "other";
}

std::string EscapeLabel(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

StatusOr<HostPort> ParseHostPort(std::string_view text) {
  HostPort hp;
  std::string_view t = text;
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (t.starts_with("http://")) t.remove_prefix(7);
  while (!t.empty() && t.back() == '/') t.remove_suffix(1);
  if (t.empty()) return InvalidArgumentError("FERRY_HOST: empty");
  std::string_view port_text;
  if (t.front() == '[') {  // [::1]:port
    size_t close = t.find(']');
    if (close == std::string_view::npos) return InvalidArgumentError("FERRY_HOST: \"{}\"", text);
    hp.host = std::string(t.substr(1, close - 1));
    std::string_view rest = t.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return InvalidArgumentError("FERRY_HOST: \"{}\"", text);
      port_text = rest.substr(1);
    }
  } else if (size_t colon = t.rfind(':'); colon != std::string_view::npos) {
    if (colon > 0) hp.host = std::string(t.substr(0, colon));
    port_text = t.substr(colon + 1);
  } else if (std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    port_text = t;
  } else {
    hp.host = std::string(t);
  }
  if (!port_text.empty()) {
    int port = -1;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || p != port_text.data() + port_text.size() || port < 0 || port > 65535) {
      return InvalidArgumentError("FERRY_HOST: \"{}\": bad port \"{}\"", text, port_text);
    }
    hp.port = port;
  }
  if (hp.host.empty()) return InvalidArgumentError("FERRY_HOST: \"{}\": empty host", text);
  return hp;
}

// ---------------------------------------------------------------------------------------------

void HttpMetrics::CountRequest(std::string_view endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{std::string(endpoint), status}];
}

void HttpMetrics::CountTokens(int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt_tokens;
  generated_tokens_ += generated_tokens;
}

HttpMetrics::Histogram::Histogram(std::vector<double> b)
    : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}

void HttpMetrics::Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

std::string HttpMetrics::Histogram::Render(std::string_view name, std::string_view help) const {
  std::string out = fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds[i], cumulative);
  }
  cumulative += counts.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum, name, count);
  return out;
}

void HttpMetrics::ObserveTimeToFirstToken(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.Observe(seconds);
}

void HttpMetrics::ObserveInterTokenLatency(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.Observe(seconds);
}

std::string HttpMetrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP ferry_http_requests_total HTTP requests answered, by endpoint and status.\n";
  out += "# TYPE ferry_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += fmt::format("ferry_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n",
                       EscapeLabel(key.first), key.second, n);
  }
  out += "# HELP ferry_prompt_tokens_total Prompt tokens evaluated (reused ones not counted).\n";
  out += "# TYPE ferry_prompt_tokens_total counter\n";
  out += fmt::format("ferry_prompt_tokens_total {}\n", prompt_tokens_);
  out += "# HELP ferry_generated_tokens_total Tokens generated.\n";
  out += "# TYPE ferry_generated_tokens_total counter\n";
  out += fmt::format("ferry_generated_tokens_total {}\n", generated_tokens_);
  out += ttft_.Render("ferry_time_to_first_token_seconds",
                      "From a generation request's arrival to its first streamed text.");
  out += itl_.Render("ferry_inter_token_latency_seconds",
                     "Between two streamed pieces of text of one answer.");
  return out;
}

std::string RenderSchedulerMetrics(const sched::SchedulerCounters& c) {
  std::string out;
  auto counter = [&](const char* name, const char* help, int64_t v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
  };
  counter("ferry_model_loads_total", "Models loaded that were not resident.", c.loads);
  counter("ferry_model_reloads_total", "Models reloaded because their placement had to change.",
          c.reloads);
  counter("ferry_kv_grows_total", "KV pools grown in place for a larger num_ctx.", c.grows);
  counter("ferry_model_evictions_total", "Idle models unloaded to make room.", c.evictions);
  counter("ferry_model_unloads_total", "Models unloaded by keep_alive or a request.", c.unloads);
  counter("ferry_preemptions_total", "Running requests preempted (KV freed, recomputed later).",
          c.preemptions);
  counter("ferry_rejections_total", "Requests refused at once (queue full, cannot fit).",
          c.rejections);
  out += "# HELP ferry_requests_waiting Requests waiting: the scheduler's queue and the runner's.\n";
  out += "# TYPE ferry_requests_waiting gauge\n";
  for (const auto& m : c.requests) {
    out += fmt::format("ferry_requests_waiting{{model=\"{}\"}} {}\n", EscapeLabel(m.model),
                       m.waiting);
  }
  out += "# HELP ferry_requests_running Requests being processed by the runner.\n";
  out += "# TYPE ferry_requests_running gauge\n";
  for (const auto& m : c.requests) {
    out += fmt::format("ferry_requests_running{{model=\"{}\"}} {}\n", EscapeLabel(m.model),
                       m.running);
  }
  out += "# HELP ferry_kv_blocks_used KV cache blocks in use (running and cached sequences).\n";
  out += "# TYPE ferry_kv_blocks_used gauge\n";
  for (const auto& m : c.kv_blocks) {
    out += fmt::format("ferry_kv_blocks_used{{model=\"{}\"}} {}\n", EscapeLabel(m.model), m.used);
  }
  out += "# HELP ferry_kv_blocks_total KV cache blocks of the loaded pool.\n";
  out += "# TYPE ferry_kv_blocks_total gauge\n";
  for (const auto& m : c.kv_blocks) {
    out += fmt::format("ferry_kv_blocks_total{{model=\"{}\"}} {}\n", EscapeLabel(m.model), m.total);
  }
  out += "# HELP ferry_kv_cache_utilization KV blocks used / total, 0..1.\n";
  out += "# TYPE ferry_kv_cache_utilization gauge\n";
  for (const auto& m : c.kv_blocks) {
    double u = m.total > 0 ? static_cast<double>(m.used) / static_cast<double>(m.total) : 0.0;
    out += fmt::format("ferry_kv_cache_utilization{{model=\"{}\"}} {}\n", EscapeLabel(m.model), u);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

namespace {

// An Ollama line (or the whole answer) carrying `text`.
Json OllamaLine(bool chat, const std::string& model, const std::string& text, bool done) {
  Json j;
  j["model"] = model;
  j["created_at"] = Now();
  if (chat) {
    j["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    j["response"] = text;
  }
  j["done"] = done;
  return j;
}

// Ollama's NDJSON: a line per piece, a final line with the stats, {"error": ...} on failure.
class OllamaWire final : public Wire {
 public:
  OllamaWire(bool chat, std::string model) : chat_(chat), model_(std::move(model)) {}
  void Fail(httplib::Response& res, int status, std::string_view message) const override {
    SendError(res, status, message);
  }
  const char* stream_content_type() const override { return kNdjson; }
  std::string Piece(const std::string& text) override {
    return api::Line(OllamaLine(chat_, model_, text, false));
  }
  std::string End(const GenerateStats& stats, int64_t total_ns) override {
    return api::Line(Final(stats, total_ns));
  }
  std::string StreamError(std::string_view message) override {
    return api::Line(Json{{"error", std::string(message)}});
  }
  Json Whole(const std::string& text, const GenerateStats& stats, int64_t total_ns) override {
    Json j = Final(stats, total_ns);
    if (chat_) {
      j["message"]["content"] = text;
    } else {
      j["response"] = text;
    }
    return j;
  }

 private:
  Json Final(const GenerateStats& stats, int64_t total_ns) const {
    Json j = OllamaLine(chat_, model_, "", true);
    api::FinalTimes t;
    t.total_ns = total_ns;
    t.load_ns = stats.queue_ns;
    api::AddFinalFields(stats, t, &j);
    if (!chat_) {
      // Ollama's (deprecated) context: the prompt's tokens and the answer's, for a later
      // request's `context`.
      std::vector<int32_t> context = prompt_tokens_;
      context.insert(context.end(), stats.tokens.begin(), stats.tokens.end());
      j["context"] = context;
    }
    if (truncated_messages_ > 0) {  // ferry's fields: what `truncate` dropped
      j["truncated_messages"] = truncated_messages_;
      j["truncated_tokens"] = truncated_tokens_;
    }
    return j;
  }

 public:
  // /api/generate: the prompt's tokens, the start of the answer's `context`.
  void SetPromptTokens(std::vector<int32_t> tokens) { prompt_tokens_ = std::move(tokens); }
  void SetTruncated(int64_t messages, int64_t tokens) override {
    truncated_messages_ = messages;
    truncated_tokens_ = tokens;
  }

 private:
  const bool chat_;
  const std::string model_;
  int64_t truncated_messages_ = 0;
  int64_t truncated_tokens_ = 0;
  std::vector<int32_t> prompt_tokens_;
};

}  // namespace

// One generation in flight: what the response needs.

std::shared_ptr<Server::Job> Server::NewJob(std::unique_ptr<Wire> wire, bool chat) {
  auto job = std::make_shared<Job>();
  job->chat = chat;
  job->start = Clock::now();
  job->wire = std::move(wire);
  return job;
}

Server::Server(ServerOptions options, sched::Scheduler* scheduler, ModelCatalog* catalog)
    : options_(std::move(options)),
      scheduler_(scheduler),
      catalog_(catalog),
      http_(std::make_unique<httplib::Server>()) {}

Server::~Server() { Shutdown(); }

StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options, sched::Scheduler* scheduler,
                                                 ModelCatalog* catalog) {
  std::unique_ptr<Server> s(new Server(std::move(options), scheduler, catalog));
  s->Routes();
  const HostPort& hp = s->options_.listen;
  if (hp.port == 0) {
    s->port_ = s->http_->bind_to_any_port(hp.host);
    if (s->port_ <= 0) return UnavailableError("cannot listen on {}: bind failed", hp.host);
  } else {
    if (!s->http_->bind_to_port(hp.host, hp.port)) {
      return UnavailableError(
          "cannot listen on {}:{} (in use, or not an address of this "
          "machine; set FERRY_HOST)",
          hp.host, hp.port);
    }
    s->port_ = hp.port;
  }
  return s;
}

Status Server::Listen() {
  if (shutting_down_.load()) return Status::Ok();
  if (!http_->listen_after_bind() && !shutting_down_.load()) {
    return UnavailableError("the HTTP server stopped unexpectedly");
  }
  return Status::Ok();
}

void Server::Shutdown() {
  if (shutting_down_.exchange(true)) return;
  {
    // httplib stops calling content providers once it stops listening, so the streams write
    // their final error lines first (each notices within one 100 ms wait).
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto& s : active_) s->Cancel();
    idle_.wait_for(lock, std::chrono::seconds(2), [this] { return active_.empty(); });
  }
  http_->stop();
}

void Server::Track(const std::shared_ptr<RequestStream>& s) {
  std::lock_guard<std::mutex> lock(mu_);
  active_.insert(s);
  if (shutting_down_.load()) s->Cancel();
}

void Server::Untrack(const std::shared_ptr<RequestStream>& s) {
  std::lock_guard<std::mutex> lock(mu_);
  active_.erase(s);
  if (active_.empty()) idle_.notify_all();
}

void Server::Routes() {
  httplib::Server& h = *http_;
  // Streams wait on the engine: enough threads that waiting clients never starve /metrics.
  h.new_task_queue = [] { return new httplib::ThreadPool(64); };
  h.set_payload_max_length(options_.max_body_bytes);
  // Idle keep-alive connections hold a worker until this passes, also at shutdown (httplib
  // does not close them on stop()): short enough that SIGTERM exits within 5 s.
  h.set_keep_alive_timeout(2);
  h.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (shutting_down_.load()) {
      SendErrorFor(req, res, 503, kShutdownMessage);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  h.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.CountRequest(EndpointLabel(req), res.status);
  });
  h.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      SendErrorFor(req, res, 413,
                   fmt::format("request body too large: the limit is {} bytes (FERRY_MAX_BODY)",
                               options_.max_body_bytes));
    } else if (res.status == 404) {
      SendErrorFor(req, res, 404, fmt::format("{} {}: no such endpoint", req.method, req.path));
    } else {
      SendErrorFor(req, res, res.status, fmt::format("HTTP error {}", res.status));
    }
  });
  h.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        log::Error("http handler error: {}", what);
        SendErrorFor(req, res, 500, fmt::format("internal error: {}", what));
      });

  auto running = [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ferry is running", "text/plain; charset=utf-8");
  };
  h.Get("/", running);
  // httplib answers HEAD with the GET handler's headers.
  h.Post("/api/generate",
         [this](const httplib::Request& q, httplib::Response& r) { Generate(q, r); });
  h.Post("/api/chat", [this](const httplib::Request& q, httplib::Response& r) { Chat(q, r); });
  h.Get("/api/tags", [this](const httplib::Request& q, httplib::Response& r) { Tags(q, r); });
  h.Get("/api/ps", [this](const httplib::Request& q, httplib::Response& r) { Ps(q, r); });
  h.Post("/api/show", [this](const httplib::Request& q, httplib::Response& r) { Show(q, r); });
  h.Get("/api/version", [this](const httplib::Request&, httplib::Response& r) {
    SendJson(r, Json{{"version", options_.version}});
  });
  auto no_registry = [this](const httplib::Request& req, httplib::Response& res) {
    SendError(res, 501,
              fmt::format("{}: ferry has no model registry. To add a model, put its GGUF file "
                          "in the models folder ({}; the file name without .gguf is the "
                          "model's name), or use `ferry create`",
                          req.path, catalog_->models_dir()));
  };
  h.Post("/api/pull", no_registry);
  h.Post("/api/push", no_registry);
  h.Post("/api/create", [this](const httplib::Request& q, httplib::Response& r) { Create(q, r); });
  h.Post("/api/copy", [this](const httplib::Request& q, httplib::Response& r) { Copy(q, r); });
  h.Delete("/api/delete",
           [this](const httplib::Request& q, httplib::Response& r) { Delete(q, r); });
  h.Get("/metrics", [this](const httplib::Request& q, httplib::Response& r) { Metrics(q, r); });
  OpenAIRoutes();
  EmbedRoutes();
}

// ---------------------------------------------------------------------------------------------

namespace {

// The model's entry, or the error to send (404 in Ollama's words).
StatusOr<std::shared_ptr<const CatalogModel>> OpenModel(ModelCatalog& catalog,
                                                        const std::string& name) {
  return catalog.Open(name);
}

// Ollama's use of a stored model's SYSTEM and MESSAGEs: the SYSTEM is the system message when
// the request has none; the MESSAGEs come before the request's messages.
std::vector<chat::Message> WithModelMessages(const CatalogModel& m,
                                             const std::vector<chat::Message>& request) {
  std::vector<chat::Message> out;
  if (!m.stored) return request;
  const bool has_system = std::any_of(request.begin(), request.end(),
                                      [](const chat::Message& x) { return x.role == "system"; });
  if (!has_system && m.stored->extras.system && !m.stored->extras.system->empty()) {
    out.push_back({"system", *m.stored->extras.system});
  }
  for (const store::ModelfileMessage& msg : m.stored->extras.messages) {
    out.push_back({msg.role, msg.content});
  }
  out.insert(out.end(), request.begin(), request.end());
  return out;
}

// Renders `msgs` with the model's template: the stored Go TEMPLATE, else the GGUF's.
StatusOr<std::string> RenderWithModelTemplate(const CatalogModel& m,
                                              const std::vector<chat::Message>& msgs) {
  if (m.go_template) return chat::RenderChat(*m.go_template, msgs);
  return m.chat_template->Render(msgs, true);
}

int64_t DefaultNumCtx(const CatalogModel& m, int64_t configured) {
  int64_t train = m.shape.n_ctx_train;
  return train > 0 ? std::min(configured, train) : configured;
}

}  // namespace

Status Server::EffectiveOptions(const CatalogModel& m, const Json& request_options,
                                RequestOptions* o,
                                std::map<std::string, std::string>* sources) const {
  o->num_ctx = DefaultNumCtx(m, options_.default_num_ctx);
  Json params = Json::object();
  if (m.stored) {
    FERRY_ASSIGN_OR_RETURN(params, ParametersJson(m.stored->extras.parameters));
    if (Status s = api::ParseOptions(params, o); !s.ok()) {
      return s.WithPrefix("the model's PARAMETERs");
    }
  }
  FERRY_RETURN_IF_ERROR(api::ParseOptions(request_options, o));
  // Above the trained context: capped there, as `ferry run` and Ollama do.
  if (const int64_t capped = CapNumCtxAtTrained(m.shape, o->num_ctx); capped != o->num_ctx) {
    log::Warn("num_ctx {} is above the {} tokens {} was trained on: using {}", o->num_ctx,
              m.shape.n_ctx_train, m.name, capped);
    o->num_ctx = capped;
  }
  if (sources != nullptr) {
    for (const char* key : kSourcedOptions) {
      if (request_options.is_object() && request_options.contains(key) &&
          !request_options[key].is_null()) {
        (*sources)[key] = "request";
      } else if (params.contains(key)) {
        (*sources)[key] = "modelfile";
      } else if (std::string_view(key) == "num_ctx" && options_.num_ctx_from_environment) {
        (*sources)[key] = "environment";
      } else {
        (*sources)[key] = "default";
      }
    }
  }
  return Status::Ok();
}

Status Server::Prepare(const api::CommonParams& common, Job& job) {
  job.model = common.model;
  job.stream = common.stream;
  FERRY_ASSIGN_OR_RETURN(std::string name, api::NormalizeModelName(common.model));
  job.sched_name = name;
  FERRY_ASSIGN_OR_RETURN(job.entry, OpenModel(*catalog_, name));
  RequestOptions o;
  std::map<std::string, std::string> sources;
  FERRY_RETURN_IF_ERROR(EffectiveOptions(*job.entry, common.options, &o, &sources));
  {
    std::lock_guard<std::mutex> lock(mu_);
    num_ctx_source_[name] = {o.num_ctx, sources["num_ctx"]};
  }
  job.request.model = name;
  job.request.keep_alive = common.keep_alive;
  job.request.request.options = o;
  return Status::Ok();
}

Status Server::RenderPrompt(const api::GenerateParams& p, Job& job) {
  const CatalogModel& m = *job.entry;
  const std::string& prompt = p.prompt;
  const std::string& system = p.system;
  const bool raw = p.raw;
  std::optional<chat::GoTemplate> request_template;
  if (p.template_text && !raw) {
    auto t = chat::GoTemplate::Parse(*p.template_text);
    if (!t.ok()) return InvalidArgumentError("template: {}", t.status().message());
    request_template = std::move(*t);
  }
  const chat::GoTemplate* go = request_template ? &*request_template
                               : m.go_template  ? &*m.go_template
                                                : nullptr;
  std::string text;
  const std::string& own_system =
      system.empty() && m.stored && m.stored->extras.system ? *m.stored->extras.system : system;
  if (!p.suffix.empty()) {
    if (raw) return InvalidArgumentError("suffix: not with raw (the template places it)");
    if (go == nullptr || !go->UsesSuffix()) {
      return InvalidArgumentError(
          "suffix: the model's template has no {{{{ .Suffix }}}} (no fill-in-the-middle); send "
          "a template that places it");
    }
    auto r = chat::RenderInfill(*go, prompt, p.suffix);
    if (!r.ok()) return InvalidArgumentError("suffix: {}", r.status().message());
    text = *r;
  } else if (raw || (!m.chat_template && go == nullptr)) {
    // Ollama's default template "{{ .Prompt }}"; a system message goes in front.
    text = own_system.empty() || raw ? prompt : own_system + "\n\n" + prompt;
  } else {
    if (!request_template && !m.template_error.ok()) return m.template_error;
    std::vector<chat::Message> msgs;
    if (!system.empty()) msgs.push_back({"system", system});
    msgs.push_back({"user", prompt});
    auto r = request_template ? chat::RenderChat(*request_template, WithModelMessages(m, msgs))
                              : RenderWithModelTemplate(m, WithModelMessages(m, msgs));
    if (!r.ok()) return InvalidArgumentError("prompt: {}", r.status().message());
    text = *r;
  }
  const int64_t n_vocab = m.model->hparams().n_vocab;
  for (size_t i = 0; i < p.context.size(); ++i) {
    if (p.context[i] >= n_vocab) {
      return InvalidArgumentError("context[{}]: token {} is outside the vocabulary of {} tokens",
                                  i, p.context[i], n_vocab);
    }
  }
  // After a context the prompt continues it: no second BOS. A prompt that cannot fit num_ctx
  // is refused as soon as that is known (ferry never truncates a prompt), not tokenized whole.
  const int64_t num_ctx = job.request.request.options.num_ctx;
  auto encoded = m.tokenizer->Encode(
      text, /*add_special=*/p.context.empty(), /*parse_special=*/true,
      std::max<int64_t>(0, num_ctx - static_cast<int64_t>(p.context.size())));
  if (!encoded.ok()) {
    return encoded.status().WithPrefix(
        fmt::format("the prompt does not fit: num_ctx is {} (ferry never truncates a prompt; "
                    "raise options.num_ctx)", num_ctx));
  }
  std::vector<int32_t> tokens = std::move(*encoded);
  job.request.request.prompt = p.context;
  job.request.request.prompt.insert(job.request.request.prompt.end(), tokens.begin(),
                                    tokens.end());
  return Status::Ok();
}

namespace {

// The tokens of a conversation as the model's template renders it (or, without a template, the
// contents one after another, a newline before each new user or system message: an answer
// continues its prompt, so a conversation's next turn extends the previous one and the cached
// prefix is reused).
StatusOr<std::vector<int32_t>> ChatTokens(const CatalogModel& m,
                                          const std::vector<chat::Message>& msgs) {
  std::string text;
  if (!m.template_error.ok()) return m.template_error;
  if (!m.chat_template && !m.go_template) {
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (i > 0 && msgs[i].role != "assistant") text += "\n";
      text += msgs[i].content;
    }
  } else {
    auto r = RenderWithModelTemplate(m, msgs);
    if (!r.ok()) return InvalidArgumentError("messages: {}", r.status().message());
    text = *r;
  }
  return m.tokenizer->Encode(text, /*add_special=*/true, /*parse_special=*/true);
}

}  // namespace

Status Server::RenderChat(const std::vector<api::ChatMessage>& messages, bool truncate,
                          Job& job) {
  const CatalogModel& m = *job.entry;
  std::vector<chat::Message> msgs;
  for (const api::ChatMessage& msg : messages) msgs.push_back({msg.role, msg.content});
  msgs = WithModelMessages(m, msgs);
  FERRY_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ChatTokens(m, msgs));
  const int64_t num_ctx = job.request.request.options.num_ctx;
  if (truncate && static_cast<int64_t>(tokens.size()) > num_ctx) {
    // Drop the oldest message that is neither a system message nor the last one, until the
    // conversation fits or nothing more may go (then the 400 below names both numbers).
    const int64_t full = static_cast<int64_t>(tokens.size());
    int64_t dropped = 0;
    while (static_cast<int64_t>(tokens.size()) > num_ctx) {
      size_t victim = msgs.size();
      for (size_t i = 0; i + 1 < msgs.size(); ++i) {
        if (msgs[i].role != "system") {
          victim = i;
          break;
        }
      }
      if (victim == msgs.size()) break;
      msgs.erase(msgs.begin() + static_cast<std::ptrdiff_t>(victim));
      ++dropped;
      FERRY_ASSIGN_OR_RETURN(tokens, ChatTokens(m, msgs));
    }
    if (dropped > 0 && static_cast<int64_t>(tokens.size()) <= num_ctx) {
      const int64_t fewer = full - static_cast<int64_t>(tokens.size());
      log::Info("request truncated: {} oldest messages ({} tokens) dropped to fit num_ctx {}",
                dropped, fewer, num_ctx);
      job.wire->SetTruncated(dropped, fewer);
    }
  }
  job.request.request.prompt = std::move(tokens);
  if (job.request.request.prompt.empty()) return InvalidArgumentError("messages: no tokens");
  return Status::Ok();
}

void Server::Generate(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto p = api::ParseGenerate(*body);
  if (!p.ok()) return SendStatus(res, p.status());
  auto job = NewJob(std::make_unique<OllamaWire>(false, p->common.model), /*chat=*/false);
  if (Status s = Prepare(p->common, *job); !s.ok()) return SendStatus(res, s);
  if (p->prompt.empty()) {
    const bool unload = p->common.keep_alive && p->common.keep_alive->duration.count() == 0;
    return LoadOrUnload(job, unload, res);
  }
  if (Status s = RenderPrompt(*p, *job); !s.ok()) {
    return SendStatus(res, s);
  }
  static_cast<OllamaWire&>(*job->wire).SetPromptTokens(job->request.request.prompt);
  Run(job, res);
}

void Server::Chat(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto p = api::ParseChat(*body);
  if (!p.ok()) return SendStatus(res, p.status());
  auto job = NewJob(std::make_unique<OllamaWire>(true, p->common.model), /*chat=*/true);
  if (Status s = Prepare(p->common, *job); !s.ok()) return SendStatus(res, s);
  if (p->messages.empty()) {
    const bool unload = p->common.keep_alive && p->common.keep_alive->duration.count() == 0;
    return LoadOrUnload(job, unload, res);
  }
  job->may_truncate = true;
  if (Status s = RenderChat(p->messages, p->common.truncate, *job); !s.ok()) {
    return SendStatus(res, s);
  }
  Run(job, res);
}

void Server::LoadOrUnload(std::shared_ptr<Job> job, bool unload, httplib::Response& res) {
  Json j = OllamaLine(job->chat, job->model, "", true);
  if (unload) {
    Status s = scheduler_->Unload(job->sched_name);
    if (!s.ok() && s.code() != StatusCode::kNotFound) return SendStatus(res, s);
    j["done_reason"] = "unload";
    return SendJson(res, j);
  }
  // Load: evaluate one token (BOS, or token 0) and generate nothing.
  const tokenizer::Vocab& vocab = job->entry->tokenizer->vocab();
  job->request.request.prompt = {vocab.bos() >= 0 ? vocab.bos() : 0};
  job->request.request.options.num_predict = 0;
  auto stream = scheduler_->Submit(std::move(job->request));
  if (!stream.ok()) return SendStatus(res, stream.status());
  Track(*stream);
  auto drained = (*stream)->Drain();
  Untrack(*stream);
  if (!drained.ok()) return SendStatus(res, drained.status());
  if (drained->second.done_reason == DoneReason::kCancelled) {
    return SendError(res, 503, kShutdownMessage);
  }
  j["done_reason"] = "load";
  SendJson(res, j);
}

void Server::Run(std::shared_ptr<Job> job, httplib::Response& res) {
  Wire& wire = *job->wire;
  const int64_t n_prompt = static_cast<int64_t>(job->request.request.prompt.size());
  const int64_t num_ctx = job->request.request.options.num_ctx;
  if (n_prompt > num_ctx) {
    return wire.Fail(res, 400,
                     fmt::format("the prompt is {} tokens, more than num_ctx {}: raise "
                                 "options.num_ctx or shorten the prompt{} (ferry never "
                                 "truncates silently)",
                                 n_prompt, num_ctx,
                                 job->may_truncate ? ", or send \"truncate\": true to drop the oldest "
                                             "messages (system messages and the last one stay)"
                                           : ""));
  }
  auto stream = scheduler_->Submit(std::move(job->request));
  if (!stream.ok()) {
    const Status s = SubmitFailure(stream.status());
    return wire.Fail(res, api::HttpStatusFor(s), s.message());
  }
  job->events = *stream;
  Track(job->events);

  if (!job->stream) {
    auto drained = job->events->Drain();
    Untrack(job->events);
    if (!drained.ok()) {
      return wire.Fail(res, api::HttpStatusFor(drained.status()), drained.status().message());
    }
    const GenerateStats& stats = drained->second;
    if (stats.done_reason == DoneReason::kCancelled) return wire.Fail(res, 503, kShutdownMessage);
    metrics_.CountTokens(stats.prompt_eval_count, stats.eval_count);
    if (stats.eval_count > 0) {  // not streamed: the engine's time to the first token
      metrics_.ObserveTimeToFirstToken(
          static_cast<double>(stats.queue_ns + stats.prompt_eval_ns) * 1e-9);
    }
    return SendJson(res, wire.Whole(drained->first, stats, NsSince(job->start)));
  }

  res.status = 200;
  res.set_chunked_content_provider(
      wire.stream_content_type(),
      [this, job](size_t /*offset*/, httplib::DataSink& sink) {
        auto write = [&](const std::string& bytes) {
          if (!sink.write(bytes.data(), bytes.size())) {
            job->events->Cancel();  // the client went away: free its KV at the next step
            return false;
          }
          return true;
        };
        auto end_with_error = [&](std::string_view message) {
          bool ok = write(job->wire->StreamError(message));
          sink.done();
          Untrack(job->events);
          return ok;
        };
        if (shutting_down_.load()) {
          job->events->Cancel();
          return end_with_error(kShutdownMessage);
        }
        if (!sink.is_writable()) {
          job->events->Cancel();
          return false;
        }
        std::optional<StreamEvent> ev = job->events->Next(std::chrono::milliseconds(100));
        if (!ev) return true;  // nothing yet: called again
        switch (ev->kind) {
          case StreamEvent::Kind::kText: {
            const Clock::time_point now = Clock::now();
            if (job->last_piece == Clock::time_point()) {
              metrics_.ObserveTimeToFirstToken(Seconds(now - job->start));
            } else {
              metrics_.ObserveInterTokenLatency(Seconds(now - job->last_piece));
            }
            job->last_piece = now;
            return write(job->wire->Piece(ev->text));
          }
          case StreamEvent::Kind::kError:
            return end_with_error(ev->error.message());
          case StreamEvent::Kind::kDone:
            if (ev->stats.done_reason == DoneReason::kCancelled) {
              return end_with_error(shutting_down_.load() ? kShutdownMessage : "request cancelled");
            }
            {
              metrics_.CountTokens(ev->stats.prompt_eval_count, ev->stats.eval_count);
              bool ok = write(job->wire->End(ev->stats, NsSince(job->start)));
              sink.done();
              Untrack(job->events);
              return ok;
            }
        }
        return false;
      },
      [this, job](bool /*success*/) {
        if (!job->events->finished()) job->events->Cancel();
        Untrack(job->events);
      });
}

// ---------------------------------------------------------------------------------------------

std::vector<std::pair<CatalogEntry, std::shared_ptr<const CatalogModel>>> Server::ServableModels() {
  std::vector<std::pair<CatalogEntry, std::shared_ptr<const CatalogModel>>> out;
  for (CatalogEntry& e : catalog_->List()) {
    if (e.stored) {
      // The store read its manifest and config; opening would hash its blobs (the first
      // Resolve verifies them), gigabytes for a listing. Its first use verifies them.
      out.emplace_back(std::move(e), nullptr);
      continue;
    }
    auto opened = catalog_->Open(e.name);
    if (!opened.ok()) {
      log::Warn("models: {}: {}", e.path, opened.status().message());
      continue;  // a file ferry cannot read is not a model it can serve
    }
    out.emplace_back(std::move(e), std::move(*opened));
  }
  return out;
}

void Server::Tags(const httplib::Request&, httplib::Response& res) {
  Json models = Json::array();
  for (const auto& [e, opened] : ServableModels()) {
    Json m;
    m["name"] = e.name;
    m["model"] = e.name;
    m["modified_at"] = api::FormatRfc3339Nano(e.modified);
    m["size"] = e.size;
    if (e.stored) {
      m["digest"] =
          e.stored->digest.starts_with("sha256:") ? e.stored->digest.substr(7) : e.stored->digest;
      m["details"] = Details(e.stored->details);
    } else {
      m["details"] = Details(opened->info);
    }
    models.push_back(std::move(m));
  }
  SendJson(res, Json{{"models", models}});
}

void Server::Ps(const httplib::Request&, httplib::Response& res) {
  Json models = Json::array();
  const auto now_steady = Clock::now();
  const auto now_sys = std::chrono::system_clock::now();
  for (const sched::ResidentModel& r : scheduler_->Resident()) {
    Json m;
    m["name"] = r.model;
    m["model"] = r.model;
    m["size"] = r.total_bytes;
    if (auto e = catalog_->Open(r.model); e.ok()) {
      const CatalogModel& cm = **e;
      if (cm.stored) {
        m["digest"] = cm.stored->digest.starts_with("sha256:") ? cm.stored->digest.substr(7)
                                                               : cm.stored->digest;
        m["details"] = Details(cm.stored->details);
      } else {
        m["details"] = Details(cm.info);
      }
    }
    std::chrono::system_clock::time_point expires;
    if (r.expires_at) {
      expires = now_sys + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              *r.expires_at - now_steady);
    } else if (r.keep_alive.forever()) {
      expires = now_sys + std::chrono::hours(24 * 365 * 100);
    } else {
      // Busy: at least keep_alive after its requests end.
      expires = now_sys + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              r.keep_alive.duration);
    }
    m["expires_at"] = api::FormatRfc3339Nano(expires);
    m["size_vram"] = r.gpu_bytes;
    m["context_length"] = r.num_ctx;
    // ferry's additions.
    m["num_parallel"] = r.num_parallel;
    m["kv_blocks_used"] = r.kv_blocks_used;
    m["kv_blocks_total"] = r.kv_blocks_total;
    m["requests_waiting"] = r.waiting;
    m["requests_running"] = r.running;
    Json alloc = Json::array();
    for (const DeviceAllocation& a : r.allocated) {
      Json purposes = Json::object();
      for (const auto& [purpose, bytes] : a.bytes_by_purpose) purposes[purpose] = bytes;
      alloc.push_back(
          Json{{"device", a.device}, {"bytes", a.total_bytes()}, {"purposes", purposes}});
    }
    m["allocated"] = alloc;
    m["plan"] = r.plan_summary;
    m["plan_bytes"] = r.plan_bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = num_ctx_source_.find(r.model);
      m["option_sources"] =
          Json{{"num_ctx", it != num_ctx_source_.end() && it->second.first == r.num_ctx
                               ? it->second.second
                               : std::string("request")}};
    }
    models.push_back(std::move(m));
  }
  SendJson(res, Json{{"models", models}});
}

void Server::Show(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  std::string model;
  for (const char* key : {"model", "name"}) {
    auto it = body->find(key);
    if (it == body->end() || it->is_null()) continue;
    if (!it->is_string()) {
      return SendStatus(res, InvalidArgumentError("{}: expected a string", key));
    }
    model = it->get<std::string>();
    break;
  }
  if (model.empty()) return SendStatus(res, InvalidArgumentError("model: missing"));
  bool verbose = false;
  if (auto it = body->find("verbose"); it != body->end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return SendStatus(res, InvalidArgumentError("verbose: expected true or false"));
    }
    verbose = it->get<bool>();
  }
  auto name = api::NormalizeModelName(model);
  if (!name.ok()) return SendStatus(res, name.status());
  auto entry = catalog_->Open(*name);
  if (!entry.ok()) return SendStatus(res, entry.status());
  const CatalogModel& m = **entry;
  RequestOptions o;
  std::map<std::string, std::string> sources;
  Json request_options = Json::object();
  if (auto it = body->find("options"); it != body->end() && !it->is_null()) {
    request_options = *it;
  }
  if (Status s = EffectiveOptions(m, request_options, &o, &sources); !s.ok()) {
    return SendStatus(res, s);
  }

  Json j;
  if (m.stored) {
    std::string licenses;
    for (const std::string& l : m.stored->extras.licenses) {
      licenses += (licenses.empty() ? "" : "\n") + l;
    }
    j["license"] = licenses;
    j["modelfile"] = store::FormatModelfile(store::Modelfile{m.path, m.stored->extras});
    j["parameters"] = ParametersText(m.stored->extras.parameters);
    j["template"] = m.stored->extras.template_text
                        ? *m.stored->extras.template_text
                        : (m.jinja.empty() ? std::string("{{ .Prompt }}") : m.jinja);
    if (m.stored->extras.system) j["system"] = *m.stored->extras.system;
    if (!m.stored->extras.messages.empty()) {
      Json msgs = Json::array();
      for (const store::ModelfileMessage& msg : m.stored->extras.messages) {
        msgs.push_back(Json{{"role", msg.role}, {"content", msg.content}});
      }
      j["messages"] = msgs;
    }
    j["details"] = Details(m.stored->details);
  } else {
    j["license"] = "";
    j["modelfile"] = fmt::format("FROM {}\n", m.path);
    j["parameters"] = "";
    // The GGUF's Jinja text, or Ollama's default when there is none.
    j["template"] = m.jinja.empty() ? std::string("{{ .Prompt }}") : m.jinja;
    j["details"] = Details(m.info);
  }
  Json info = Json::object();
  for (const gguf::KeyValue& kv : m.model->file().metadata()) {
    if (kv.value.type() == gguf::ValueType::kArray && !verbose) {
      info[kv.key] = nullptr;  // as Ollama: long arrays only with verbose
    } else if (kv.key == "tokenizer.chat_template") {
      continue;  // it is `template`
    } else {
      info[kv.key] = api::GgufValueToJson(kv.value);
    }
  }
  info["general.parameter_count"] = m.info.parameter_count;
  j["model_info"] = info;
  j["capabilities"] = Json::array({"completion"});
  if (auto listed = catalog_->List(); true) {
    for (const CatalogEntry& e : listed) {
      if (e.name == m.name || (e.stored && m.stored && e.stored->name == m.stored->name)) {
        j["modified_at"] = api::FormatRfc3339Nano(e.modified);
      }
    }
  }
  // ferry: where each effective option came from.
  Json effective = Json::object();
  effective["num_ctx"] = o.num_ctx;
  effective["num_predict"] = o.num_predict;
  effective["temperature"] = o.sampling.temperature;
  effective["top_k"] = o.sampling.top_k;
  effective["top_p"] = o.sampling.top_p;
  effective["stop"] = o.stop;
  effective["seed"] = o.sampling.seed ? Json(*o.sampling.seed) : Json(nullptr);
  j["options"] = effective;
  Json src = Json::object();
  for (const auto& [k, v] : sources) src[k] = v;
  j["option_sources"] = src;
  // ferry: the plan of the effective options, and where each came from.
  LoadOptions lo;
  lo.num_ctx = o.num_ctx;
  lo.num_parallel = options_.num_parallel;
  lo.kv_type = options_.kv_type;
  lo.num_batch = std::min(o.num_batch, o.num_ctx);
  lo.num_gpu = o.num_gpu;
  Json plan;
  plan["num_ctx"] = o.num_ctx;
  plan["num_ctx_source"] =
      sources["num_ctx"] != "default" && sources["num_ctx"] != "environment"
          ? sources["num_ctx"]
          : (m.shape.n_ctx_train > 0 && m.shape.n_ctx_train < options_.default_num_ctx
                 ? "model's trained context"
                 : "default (FERRY_CONTEXT_LENGTH)");
  plan["num_parallel"] = options_.num_parallel;
  plan["kv_cache_type"] = std::string(DTypeName(options_.kv_type));
  auto made = MakePlan(m.shape, options_.devices, lo);
  if (made.ok()) {
    plan["summary"] = made->Summary();
    plan["total_bytes"] = made->total_bytes();
  } else {
    plan["error"] = made.status().message();
  }
  if (m.chat_template) {
    plan["chat_template"] = std::string(chat::TemplateKindName(m.chat_template->kind()));
    plan["chat_template_source"] = m.chat_template->source();
  } else {
    plan["chat_template"] = nullptr;
  }
  j["plan"] = plan;
  SendJson(res, j);
}

// ---------------------------------------------------------------------------------------------
// The store's routes.

namespace {

// A string field of `body` ("" when absent); InvalidArgument naming it when not a string.
StatusOr<std::string> StringField(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgumentError("{}: expected a string", key);
  return it->get<std::string>();
}

StatusOr<store::ModelName> NameField(const Json& body, std::initializer_list<const char*> keys) {
  std::string text;
  const char* used = *keys.begin();
  for (const char* key : keys) {
    FERRY_ASSIGN_OR_RETURN(text, StringField(body, key));
    used = key;
    if (!text.empty()) break;
  }
  if (text.empty()) return InvalidArgumentError("{}: missing", *keys.begin());
  auto name = store::ParseModelName(text);
  if (!name.ok()) return name.status().WithPrefix(fmt::format("{}: \"{}\"", used, text));
  return name;
}

// The Modelfile of a create request: the `modelfile` text, else the fields `from`, `template`,
// `system`, `parameters`, `messages`, `license` (which also override the text's).
StatusOr<store::Modelfile> CreateModelfile(const Json& body) {
  store::Modelfile mf;
  FERRY_ASSIGN_OR_RETURN(std::string text, StringField(body, "modelfile"));
  if (!text.empty()) {
    auto parsed = store::ParseModelfile(text);
    if (!parsed.ok()) return parsed.status().WithPrefix("modelfile");
    mf = std::move(*parsed);
  }
  FERRY_ASSIGN_OR_RETURN(std::string from, StringField(body, "from"));
  if (!from.empty()) mf.from = from;
  if (mf.from.empty()) return InvalidArgumentError("from: missing (a model name or a GGUF path)");
  if (auto it = body.find("template"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return InvalidArgumentError("template: expected a string");
    mf.extras.template_text = it->get<std::string>();
  }
  if (auto it = body.find("system"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return InvalidArgumentError("system: expected a string");
    mf.extras.system = it->get<std::string>();
  }
  if (auto it = body.find("license"); it != body.end() && !it->is_null()) {
    mf.extras.licenses.clear();
    if (it->is_string()) {
      mf.extras.licenses.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const Json& l : *it) {
        if (!l.is_string()) return InvalidArgumentError("license: expected strings");
        mf.extras.licenses.push_back(l.get<std::string>());
      }
    } else {
      return InvalidArgumentError("license: expected a string or an array of strings");
    }
  }
  if (auto it = body.find("parameters"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return InvalidArgumentError("parameters: expected an object");
    for (const auto& [name, value] : it->items()) {
      std::vector<std::string> values;
      auto add = [&](const Json& v) -> Status {
        std::string t;
        if (v.is_string()) {
          t = v.get<std::string>();
        } else if (v.is_number_integer() || v.is_number_unsigned()) {
          t = v.dump();
        } else if (v.is_number_float()) {
          t = fmt::format("{}", v.get<double>());
        } else {
          return InvalidArgumentError("parameters.{}: expected a number or a string", name);
        }
        Status s = store::ValidateParameter(name, t);
        if (!s.ok()) return s.WithPrefix(fmt::format("parameters.{}", name));
        values.push_back(std::move(t));
        return Status::Ok();
      };
      if (value.is_array()) {
        for (const Json& v : value) FERRY_RETURN_IF_ERROR(add(v));
      } else {
        FERRY_RETURN_IF_ERROR(add(value));
      }
      mf.extras.parameters[name] = std::move(values);
    }
  }
  if (auto it = body.find("messages"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return InvalidArgumentError("messages: expected an array");
    mf.extras.messages.clear();
    for (const Json& m : *it) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string()) {
        return InvalidArgumentError("messages: each needs a string role and content");
      }
      std::string role = m["role"].get<std::string>();
      if (role != "system" && role != "user" && role != "assistant") {
        return InvalidArgumentError("messages: role \"{}\": expected system, user or assistant",
                                    role);
      }
      mf.extras.messages.push_back({role, m["content"].get<std::string>()});
    }
  }
  if (mf.extras.template_text) {
    auto t = chat::GoTemplate::Parse(*mf.extras.template_text);
    if (!t.ok()) return t.status();  // "template: line L, byte B: ..."
  }
  return mf;
}

bool StreamField(const Json& body) {
  auto it = body.find("stream");
  return it == body.end() || !it->is_boolean() || it->get<bool>();
}

}  // namespace

void Server::Create(const httplib::Request& req, httplib::Response& res) {
  store::Store* st = catalog_->store();
  if (st == nullptr) return SendError(res, 500, "this server has no model store");
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto name = NameField(*body, {"model", "name"});
  if (!name.ok()) return SendStatus(res, name.status());
  auto mf = CreateModelfile(*body);
  if (!mf.ok()) return SendStatus(res, mf.status());
  std::vector<std::string> steps = {"parsing modelfile"};
  // FROM: a GGUF file on the server (a path, or a bare NAME.gguf of the models folder), else a
  // stored model.
  auto from = FindModelIn(catalog_->models_dir(), st, mf->from, /*allow_paths=*/true);
  if (!from.ok()) {
    return SendStatus(res, from.status().WithPrefix(fmt::format("from: \"{}\"", mf->from)));
  }
  StatusOr<store::ResolvedModel> made = from->stored
                                            ? st->CreateFrom(*name, from->stored->name, mf->extras)
                                            : st->CreateFromGguf(*name, from->path, mf->extras);
  if (!made.ok()) return SendStatus(res, made.status());
  steps.push_back(from->stored ? "using existing layer " + from->stored->model_digest
                               : "creating model layer " + made->model_digest);
  steps.push_back("writing manifest");
  steps.push_back("success");
  if (!StreamField(*body)) return SendJson(res, Json{{"status", "success"}});
  std::string out;
  for (const std::string& step : steps) out += api::Line(Json{{"status", step}});
  res.status = 200;
  res.set_content(out, kNdjson);
}

void Server::Copy(const httplib::Request& req, httplib::Response& res) {
  store::Store* st = catalog_->store();
  if (st == nullptr) return SendError(res, 500, "this server has no model store");
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto src = NameField(*body, {"source"});
  if (!src.ok()) return SendStatus(res, src.status());
  auto dst = NameField(*body, {"destination"});
  if (!dst.ok()) return SendStatus(res, dst.status());
  if (Status s = st->Copy(*src, *dst); !s.ok()) {
    if (s.code() == StatusCode::kNotFound) {
      return SendError(res, 404, api::ModelNotFoundMessage(src->DisplayName()));
    }
    return SendStatus(res, s);
  }
  res.status = 200;
}

void Server::Delete(const httplib::Request& req, httplib::Response& res) {
  store::Store* st = catalog_->store();
  if (st == nullptr) return SendError(res, 500, "this server has no model store");
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto name = NameField(*body, {"model", "name"});
  if (!name.ok()) return SendStatus(res, name.status());
  if (Status s = st->Delete(*name); !s.ok()) {
    if (s.code() == StatusCode::kNotFound) {
      return SendError(res, 404, api::ModelNotFoundMessage(name->DisplayName()));
    }
    // A model only in the read-only Ollama store: the request cannot be honoured as sent.
    if (s.code() == StatusCode::kFailedPrecondition) return SendError(res, 400, s.message());
    return SendStatus(res, s);
  }
  res.status = 200;
}

void Server::Metrics(const httplib::Request&, httplib::Response& res) {
  std::string text = RenderSchedulerMetrics(scheduler_->Counters());
  text += metrics_.Render();
  res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace ferry::server
