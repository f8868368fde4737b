// Server: ferry's HTTP server (cpp-httplib). It speaks Ollama's API (docs/serving.md): it
// parses and validates requests, renders chat templates, tokenizes (ModelCatalog), hands
// tokenized requests to the scheduler and streams the results back as NDJSON. It never touches
// weights or KV: those belong to the runners behind the scheduler.
//
// Thread-safety: Create and Listen on one thread (Listen blocks, serving on httplib's worker
// threads); Shutdown may be called from any thread (a signal-handling thread), once or more.
#ifndef FERRY_SERVER_SERVER_H_
#define FERRY_SERVER_SERVER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/ollama.h"
#include "backend/device.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "runtime/request.h"
#include "sched/scheduler.h"
#include "server/model_catalog.h"
#include "tensor/dtype.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace ferry::server {

struct HostPort {
  std::string host = "127.0.0.1";
  int port = 11434;
};

// FERRY_HOST as Ollama reads OLLAMA_HOST: "127.0.0.1:11434", "0.0.0.0:8080", "8080" and
// ":8080" (the default host 127.0.0.1), "localhost" (the default port), "[::1]:8080", an
// optional "http://" in front. InvalidArgument naming the text otherwise.
StatusOr<HostPort> ParseHostPort(std::string_view text);

struct ServerOptions {
  HostPort listen;
  // Largest request body (FERRY_MAX_BODY, default 32 MiB); more is refused with 413.
  uint64_t max_body_bytes = uint64_t{32} << 20;
  // num_ctx of a request that does not set it (FERRY_CONTEXT_LENGTH; Ollama's 4096), capped at
  // the model's trained context.
  int64_t default_num_ctx = 4096;
  // Whether default_num_ctx was set by FERRY_CONTEXT_LENGTH (option_sources says
  // "environment" then, else "default").
  bool num_ctx_from_environment = false;
  // What the scheduler plans with, for /api/show's plan of the effective options.
  DeviceInventory devices;
  int32_t num_parallel = 1;
  DType kv_type = DType::kF16;
  std::string version = "0.1.0";
};

// Counters of the HTTP side, for /metrics. Thread-safe.
class HttpMetrics {
 public:
  void CountRequest(std::string_view endpoint, int status);
  void CountTokens(int64_t prompt_tokens, int64_t generated_tokens);
  // Time from a generation request's arrival to its first streamed text, and between two
  // streamed pieces of one answer (seconds).
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  // Prometheus text for these counters (HELP/TYPE lines included).
  std::string Render() const;

  // A Prometheus histogram: cumulative counts per upper bound, their sum and count.
  struct Histogram {
    explicit Histogram(std::vector<double> bounds);
    void Observe(double v);
    // `name`_bucket{le=...} lines (+Inf last), `name`_sum, `name`_count.
    std::string Render(std::string_view name, std::string_view help) const;
    std::vector<double> bounds;   // ascending upper bounds, seconds
    std::vector<int64_t> counts;  // [bounds.size() + 1]: per bucket (not cumulative), +Inf last
    double sum = 0.0;
    int64_t count = 0;
  };

 private:
  mutable std::mutex mu_;
  Histogram ttft_ FERRY_GUARDED_BY(mu_){{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram itl_ FERRY_GUARDED_BY(mu_){
      {0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5}};
  std::map<std::pair<std::string, int>, int64_t> requests_ FERRY_GUARDED_BY(mu_);
  int64_t prompt_tokens_ FERRY_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ FERRY_GUARDED_BY(mu_) = 0;
};

// Prometheus text for the scheduler's counters and gauges (ferry_model_loads_total, ...,
// ferry_kv_cache_utilization{model=...}).
std::string RenderSchedulerMetrics(const sched::SchedulerCounters& counters);

// How a generation's answer goes on the wire: Ollama's NDJSON (/api/generate, /api/chat) or
// OpenAI's server-sent events (/v1/chat/completions, /v1/completions). Server::Run drives one
// per request, from one thread at a time.
class Wire {
 public:
  virtual ~Wire() = default;
  // An error answer before anything was sent.
  virtual void Fail(httplib::Response& res, int status, std::string_view message) const = 0;
  // Streaming: the content type, the bytes of a piece of text, of the end (the stats), of an
  // error after streaming began (the stream's last bytes).
  virtual const char* stream_content_type() const = 0;
  virtual std::string Piece(const std::string& text) = 0;
  virtual std::string End(const GenerateStats& stats, int64_t total_ns) = 0;
  virtual std::string StreamError(std::string_view message) = 0;
  // The whole answer of a request that does not stream.
  virtual api::Json Whole(const std::string& text, const GenerateStats& stats,
                          int64_t total_ns) = 0;
  // Records that `messages` messages of `tokens` tokens were dropped to fit num_ctx
  // (`truncate`); a wire that reports it adds it to its final answer.
  virtual void SetTruncated(int64_t /*messages*/, int64_t /*tokens*/) {}
};

class Server {
 public:
  // Binds the socket (InvalidArgument/Unavailable when it cannot). `scheduler` and `catalog`
  // outlive the server.
  static StatusOr<std::unique_ptr<Server>> Create(ServerOptions options,
                                                  sched::Scheduler* scheduler,
                                                  ModelCatalog* catalog);
  ~Server();

  // The port bound (the one asked for, or the one the OS chose for port 0).
  int port() const { return port_; }
  // Serves until Shutdown. Error when httplib's loop fails.
  Status Listen();
  // Stops accepting, cancels every running request (each stream ends with an error line, each
  // waiting non-streaming request with a 503), and makes Listen return once they have ended.
  void Shutdown();

 private:
  Server(ServerOptions options, sched::Scheduler* scheduler, ModelCatalog* catalog);
  void Routes();

  // Routes.
  void Generate(const httplib::Request& req, httplib::Response& res);
  void Chat(const httplib::Request& req, httplib::Response& res);
  void Tags(const httplib::Request& req, httplib::Response& res);
  void Ps(const httplib::Request& req, httplib::Response& res);
  void Show(const httplib::Request& req, httplib::Response& res);
  void Metrics(const httplib::Request& req, httplib::Response& res);
  // The store's routes (docs/serving.md): create, copy, delete.
  void Create(const httplib::Request& req, httplib::Response& res);
  void Copy(const httplib::Request& req, httplib::Response& res);
  void Delete(const httplib::Request& req, httplib::Response& res);
  // OpenAI's API (openai_routes.cc).
  // Embeddings (embed_routes.cc): /api/embed, /api/embeddings, /v1/embeddings.
  void EmbedRoutes();
  void Embed(const httplib::Request& req, httplib::Response& res);
  void EmbeddingsLegacy(const httplib::Request& req, httplib::Response& res);
  void OpenAIEmbeddings(const httplib::Request& req, httplib::Response& res);
  struct Embedded {
    std::vector<std::vector<float>> vectors;  // one per input, in input order
    int64_t prompt_tokens = 0;                // summed over the inputs
    int64_t load_ns = 0;                      // the longest wait for the model
  };
  // Each input tokenized (BOS as the model adds it), cut to num_ctx when `truncate` (else an
  // InvalidArgument naming both numbers), submitted together as embedding requests pooled as
  // the model says (mean when it does not), then L2-normalized when `normalize`; dimensions
  // > 0 keeps that many leading values (normalized again). Errors as HTTP statuses map them.
  StatusOr<Embedded> EmbedTexts(const api::CommonParams& common,
                                const std::vector<std::string>& inputs, bool truncate,
                                int64_t dimensions, bool normalize);
  void OpenAIRoutes();
  void ChatCompletions(const httplib::Request& req, httplib::Response& res);
  void Completions(const httplib::Request& req, httplib::Response& res);
  void Models(const httplib::Request& req, httplib::Response& res);
  void Model(const httplib::Request& req, httplib::Response& res);

  struct Job {  // one generation in flight
    bool chat = false;
    std::string model;       // the name as the client sent it (echoed back)
    std::string sched_name;  // normalized
    std::chrono::steady_clock::time_point start;
    // Streaming: when the last piece was sent (the epoch: none yet).
    std::chrono::steady_clock::time_point last_piece;
    bool stream = true;
    bool may_truncate = false;  // the API has `truncate` (Ollama's chat)
    std::shared_ptr<const CatalogModel> entry;
    sched::SchedRequest request;
    std::shared_ptr<RequestStream> events;
    std::unique_ptr<Wire> wire;
  };

  // A job answering through `wire`, its clock started.
  std::shared_ptr<Job> NewJob(std::unique_ptr<Wire> wire, bool chat);
  // Shared by generate and chat after the prompt is known.
  void Run(std::shared_ptr<Job> job, httplib::Response& res);
  void LoadOrUnload(std::shared_ptr<Job> job, bool unload, httplib::Response& res);
  // What generate and chat share: the model (opened in the catalog), the options, keep_alive.
  // Errors as the HTTP status they map to (400 bad options, 404 unknown model).
  Status Prepare(const api::CommonParams& common, Job& job);
  // The effective options of `request_options` for `m` (the default num_ctx, then the
  // model's PARAMETERs, then the request's: Ollama's merge) and where each came from.
  Status EffectiveOptions(const CatalogModel& m, const api::Json& request_options,
                          RequestOptions* o, std::map<std::string, std::string>* sources) const;
  // After Prepare: the prompt, rendered with the model's chat template (or without one as
  // Ollama does) and tokenized into the job. InvalidArgument for what cannot be rendered.
  // `truncate`: a rendering longer than the job's num_ctx drops the oldest messages (the
  // system messages and the last message are kept) until it fits.
  Status RenderChat(const std::vector<api::ChatMessage>& messages, bool truncate, Job& job);
  // /api/generate's prompt: `template` (a Go template for this request), `suffix` (rendered
  // with the template's .Suffix: 400 when it has none), `context` (an earlier answer's tokens,
  // each checked against the vocabulary, before this prompt's).
  Status RenderPrompt(const api::GenerateParams& p, Job& job);
  // The models /api/tags and /v1/models list: the catalog's files that open, and the store's
  // models (not opened: nullptr; their blobs are verified on first use).
  std::vector<std::pair<CatalogEntry, std::shared_ptr<const CatalogModel>>> ServableModels();
  void Track(const std::shared_ptr<RequestStream>& s);
  void Untrack(const std::shared_ptr<RequestStream>& s);

  const ServerOptions options_;
  sched::Scheduler* const scheduler_;
  ModelCatalog* const catalog_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  HttpMetrics metrics_;
  std::atomic<bool> shutting_down_{false};
  std::mutex mu_;
  std::condition_variable idle_;  // active_ became empty
  std::set<std::shared_ptr<RequestStream>> active_ FERRY_GUARDED_BY(mu_);
  // Per scheduler model name: the num_ctx of its last request and where that came from
  // (/api/ps's option_sources.num_ctx when the loaded model has that num_ctx).
  std::map<std::string, std::pair<int64_t, std::string>> num_ctx_source_ FERRY_GUARDED_BY(mu_);
};

}  // namespace ferry::server

#endif  // FERRY_SERVER_SERVER_H_
