// Embeddings on ferry's server: Ollama's POST /api/embed and the older POST /api/embeddings,
// OpenAI's POST /v1/embeddings. The inputs go to the scheduler as embedding requests
// (GenerateRequest::embedding): the runner evaluates each whole input and pools its final
// hidden states; normalizing and cutting to `dimensions` happen here.
#include <fmt/format.h>
#include <httplib.h>

#include <chrono>
#include <cmath>

#include "api/ollama.h"
#include "api/openai.h"
#include "base/log.h"
#include "server/replies.h"
#include "server/server.h"

namespace ferry::server {
namespace {

using api::Json;
using Clock = std::chrono::steady_clock;

// The pooling of a model's embeddings: what its GGUF says, mean when it says nothing (or
// "none": ferry always returns one vector per input).
StatusOr<Pooling> PoolingOf(const Model& m) {
  switch (m.hparams().pooling_type) {
    case -1:
    case 0:
    case 1: return Pooling::kMean;
    case 2: return Pooling::kCls;
    case 3: return Pooling::kLast;
    default:
      return InvalidArgumentError("this model's pooling type {} (rank: a reranker) gives no "
                                  "embeddings",
                                  m.hparams().pooling_type);
  }
}

// v scaled to unit length (a zero vector stays zero), as Ollama returns embeddings.
void Normalize(std::vector<float>& v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  if (sum <= 0.0) return;
  const double inv = 1.0 / std::sqrt(sum);
  for (float& x : v) x = static_cast<float>(x * inv);
}

}  // namespace

StatusOr<Server::Embedded> Server::EmbedTexts(const api::CommonParams& common,
                                              const std::vector<std::string>& inputs,
                                              bool truncate, int64_t dimensions,
                                              bool normalize) {
  auto job = NewJob(nullptr, /*chat=*/false);
  FERRY_RETURN_IF_ERROR(Prepare(common, *job));
  const CatalogModel& m = *job->entry;
  FERRY_ASSIGN_OR_RETURN(const Pooling pooling, PoolingOf(*m.model));
  const int64_t n_embd = m.model->hparams().n_embd;
  if (dimensions > n_embd) {
    return InvalidArgumentError("dimensions: {} is more than the model's {}", dimensions, n_embd);
  }
  const int64_t num_ctx = job->request.request.options.num_ctx;
  std::vector<std::shared_ptr<RequestStream>> streams;
  Embedded out;
  auto cancel_all = [&] {
    for (auto& s : streams) {
      s->Cancel();
      Untrack(s);
    }
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    FERRY_ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                           m.tokenizer->Encode(inputs[i], /*add_special=*/true,
                                               /*parse_special=*/false));
    if (tokens.empty()) {
      cancel_all();
      return InvalidArgumentError("input[{}]: no tokens", i);
    }
    if (static_cast<int64_t>(tokens.size()) > num_ctx) {
      if (!truncate) {
        cancel_all();
        return InvalidArgumentError(
            "input[{}] is {} tokens, more than num_ctx {}: raise options.num_ctx, shorten it, or "
            "send \"truncate\": true to keep its first {} tokens",
            i, tokens.size(), num_ctx, num_ctx);
      }
      log::Info("embed input {} truncated from {} to num_ctx {} tokens", i, tokens.size(),
                num_ctx);
      tokens.resize(static_cast<size_t>(num_ctx));
    }
    sched::SchedRequest r = job->request;
    r.request.prompt = std::move(tokens);
    r.request.embedding = pooling;
    r.request.options.num_predict = 0;
    auto stream = scheduler_->Submit(std::move(r));
    if (!stream.ok()) {
      cancel_all();
      return SubmitFailure(stream.status());
    }
    Track(*stream);
    streams.push_back(*stream);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    auto drained = streams[i]->Drain();
    Untrack(streams[i]);
    if (!drained.ok() || drained->second.done_reason == DoneReason::kCancelled) {
      for (size_t j = i + 1; j < streams.size(); ++j) {
        streams[j]->Cancel();
        Untrack(streams[j]);
      }
      if (!drained.ok()) return drained.status();
      return UnavailableError("server is shutting down");
    }
    GenerateStats& stats = drained->second;
    std::vector<float> v = std::move(stats.embedding);
    if (static_cast<int64_t>(v.size()) != n_embd) {
      return InternalError("input[{}]: an embedding of {} values, want {}", i, v.size(), n_embd);
    }
    if (normalize) Normalize(v);
    if (dimensions > 0) {
      v.resize(static_cast<size_t>(dimensions));
      Normalize(v);
    }
    out.vectors.push_back(std::move(v));
    out.prompt_tokens += stats.prompt_eval_count;
    out.load_ns = std::max(out.load_ns, stats.queue_ns);
  }
  metrics_.CountTokens(out.prompt_tokens, 0);
  return out;
}

void Server::EmbedRoutes() {
  httplib::Server& h = *http_;
  h.Post("/api/embed", [this](const httplib::Request& q, httplib::Response& r) { Embed(q, r); });
  h.Post("/api/embeddings",
         [this](const httplib::Request& q, httplib::Response& r) { EmbeddingsLegacy(q, r); });
  h.Post("/v1/embeddings",
         [this](const httplib::Request& q, httplib::Response& r) { OpenAIEmbeddings(q, r); });
}

void Server::Embed(const httplib::Request& req, httplib::Response& res) {
  const Clock::time_point start = Clock::now();
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto p = api::ParseEmbed(*body);
  if (!p.ok()) return SendStatus(res, p.status());
  auto e = EmbedTexts(p->common, p->inputs, p->truncate, p->dimensions, /*normalize=*/true);
  if (!e.ok()) return SendStatus(res, e.status());
  Json j;
  j["model"] = p->common.model;
  j["embeddings"] = e->vectors;
  j["total_duration"] =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  j["load_duration"] = e->load_ns;
  j["prompt_eval_count"] = e->prompt_tokens;
  SendJson(res, j);
}

void Server::EmbeddingsLegacy(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendStatus(res, body.status());
  auto p = api::ParseEmbeddingsLegacy(*body);
  if (!p.ok()) return SendStatus(res, p.status());
  // The older endpoint returns the pooled vector as it is, not normalized (as Ollama does).
  auto e = EmbedTexts(p->common, p->inputs, p->truncate, p->dimensions, /*normalize=*/false);
  if (!e.ok()) return SendStatus(res, e.status());
  SendJson(res, Json{{"embedding", e->vectors[0]}});
}

void Server::OpenAIEmbeddings(const httplib::Request& req, httplib::Response& res) {
  auto body = api::ParseBody(req.body);
  if (!body.ok()) return SendOpenAIStatus(res, body.status());
  auto p = api::openai::ParseEmbeddings(*body);
  if (!p.ok()) return SendOpenAIStatus(res, p.status());
  // OpenAI's endpoint has no truncate: an over-long input is an error.
  auto e = EmbedTexts(p->common, p->inputs, /*truncate=*/false, p->dimensions,
                      /*normalize=*/true);
  if (!e.ok()) return SendOpenAIStatus(res, e.status());
  Json data = Json::array();
  for (size_t i = 0; i < e->vectors.size(); ++i) {
    Json item{{"object", "embedding"}, {"index", i}};
    if (p->base64) {
      item["embedding"] = api::openai::Base64Floats(e->vectors[i]);
    } else {
      item["embedding"] = e->vectors[i];
    }
    data.push_back(std::move(item));
  }
  SendJson(res, Json{{"object", "list"},
                     {"data", data},
                     {"model", p->common.model},
                     {"usage", {{"prompt_tokens", e->prompt_tokens},
                                {"total_tokens", e->prompt_tokens}}}});
}

}  // namespace ferry::server
