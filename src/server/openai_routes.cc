// OpenAI's API on ferry's server: /v1/chat/completions, /v1/completions, /v1/models. The
// requests go the same way as Ollama's (Prepare, RenderChat/RenderPrompt, Run); only the wire
// format differs (OpenAIWire: JSON answers and server-sent events, errors in OpenAI's shape).
#include <fmt/format.h>
#include <httplib.h>

#include <chrono>
#include <ctime>

#include "api/openai.h"
#include "server/replies.h"
#include "server/server.h"

namespace ferry::server {
namespace {

namespace openai = api::openai;
using api::Json;

constexpr char kEventStream[] = "text/event-stream";

int64_t UnixSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// OpenAI's answers: chat.completion / text_completion objects, or SSE chunks ending with
// finish_reason, the usage chunk when asked for, and [DONE].
class OpenAIWire final : public Wire {
 public:
  OpenAIWire(bool chat, std::string model, bool include_usage)
      : chat_(chat), include_usage_(include_usage) {
    head_.id = openai::NewId(chat ? "chatcmpl-" : "cmpl-");
    head_.created = UnixSeconds(std::chrono::system_clock::now());
    head_.model = std::move(model);
  }
  void Fail(httplib::Response& res, int status, std::string_view message) const override {
    SendOpenAIError(res, status, message);
  }
  const char* stream_content_type() const override { return kEventStream; }
  std::string Piece(const std::string& text) override {
    if (!chat_) return openai::Sse(openai::CompletionChunk(head_, text, std::nullopt));
    return openai::Sse(openai::ChatChunk(head_, Delta(text), std::nullopt));
  }
  std::string End(const GenerateStats& stats, int64_t /*total_ns*/) override {
    std::string out;
    if (chat_) {
      if (!role_sent_) out += openai::Sse(openai::ChatChunk(head_, Delta(""), std::nullopt));
      out += openai::Sse(openai::ChatChunk(head_, Json::object(), stats.done_reason));
    } else {
      out += openai::Sse(openai::CompletionChunk(head_, "", stats.done_reason));
    }
    if (include_usage_) out += openai::Sse(openai::UsageChunk(head_, chat_, stats));
    out += openai::kSseDone;
    return out;
  }
  std::string StreamError(std::string_view message) override {
    return openai::Sse(openai::Error(500, message)) + std::string(openai::kSseDone);
  }
  Json Whole(const std::string& text, const GenerateStats& stats, int64_t /*total_ns*/) override {
    return chat_ ? openai::ChatCompletion(head_, text, stats)
                 : openai::Completion(head_, text, stats);
  }

 private:
  // The first delta names the role.
  Json Delta(const std::string& text) {
    Json d = Json::object();
    if (!role_sent_) d["role"] = "assistant";
    role_sent_ = true;
    d["content"] = text;
    return d;
  }

  const bool chat_;
  const bool include_usage_;
  openai::ResponseHead head_;
  bool role_sent_ = false;
};

}  // namespace

void Server::OpenAIRoutes() {
  httplib::Server& h = *http_;
  h.Post("/v1/chat/completions",
         [this](const httplib::Request& q, httplib::Response& r) { ChatCompletions(q, r); });
  h.Post("/v1/completions",
         [this](const httplib::Request& q, httplib::Response& r) { Completions(q, r); });
  h.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) { Models(q, r); });
  h.Get(R"(/v1/models/(.+))",
        [this](const httplib::Request& q, httplib::Response& r) { Model(q, r); });
}

void Server::ChatCompletions(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendOpenAIStatus(res, body.status());
  auto p = openai::ParseChatCompletion(*body);
  if (!p.ok()) return SendOpenAIStatus(res, p.status());
  auto job = NewJob(std::make_unique<OpenAIWire>(true, p->common.model, p->include_usage),
                    /*chat=*/true);
  if (Status s = Prepare(p->common, *job); !s.ok()) return SendOpenAIStatus(res, s);
  if (Status s = RenderChat(p->messages, /*truncate=*/false, *job); !s.ok()) {
    return SendOpenAIStatus(res, s);
  }
  Run(job, res);
}

void Server::Completions(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendOpenAIStatus(res, body.status());
  auto p = openai::ParseCompletion(*body);
  if (!p.ok()) return SendOpenAIStatus(res, p.status());
  auto job = NewJob(std::make_unique<OpenAIWire>(false, p->common.model, p->include_usage),
                    /*chat=*/false);
  if (Status s = Prepare(p->common, *job); !s.ok()) return SendOpenAIStatus(res, s);
  // As Ollama's /v1/completions: the prompt goes through the model's template, if it has one.
  api::GenerateParams g;
  g.prompt = p->prompt;
  if (Status s = RenderPrompt(g, *job); !s.ok()) {
    return SendOpenAIStatus(res, s);
  }
  Run(job, res);
}

void Server::Models(const httplib::Request&, httplib::Response& res) {
  Json data = Json::array();
  for (const auto& [e, opened] : ServableModels()) {
    data.push_back(openai::ModelObject(e.name, UnixSeconds(e.modified)));
  }
  SendJson(res, Json{{"object", "list"}, {"data", data}});
}

void Server::Model(const httplib::Request& req, httplib::Response& res) {
  const std::string id = req.matches[1];
  auto name = api::NormalizeModelName(id);
  if (!name.ok()) return SendOpenAIStatus(res, name.status());
  for (const auto& [e, opened] : ServableModels()) {
    auto listed = api::NormalizeModelName(e.name);
    if (listed.ok() && *listed == *name) return SendJson(res, openai::ModelObject(id, UnixSeconds(e.modified)));
  }
  SendOpenAIError(res, 404, api::ModelNotFoundMessage(id));
}

}  // namespace ferry::server
