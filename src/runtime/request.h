// What one generation request is, and the stream its results come back through.
//
// RequestOptions is the one definition of what a request may set (Ollama's `options` names):
// the CLI's flags, the HTTP server's JSON and the scheduler all fill this struct, and the
// runner reads it. GenerateRequest is a tokenized request as the runner takes it.
// RequestStream carries a request's results from the model's inference thread to whoever
// waits for them (the CLI, an HTTP thread), and the caller's cancellation back.
//
// Thread-safety: RequestOptions and GenerateRequest are plain values. RequestStream is
// thread-safe: one producer (the inference thread) pushes, any thread may read, cancel or
// inspect it.
#ifndef FERRY_RUNTIME_REQUEST_H_
#define FERRY_RUNTIME_REQUEST_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "sampling/sampler.h"

namespace ferry {

// Everything a request may set. Defaults are Ollama's.
struct RequestOptions {
  // Tokens of context the request needs (prompt + generation), 1 .. 2^24. A loaded model whose
  // sequences hold at least this many serves it as is; a larger one grows the KV pool.
  int64_t num_ctx = 2048;
  // Tokens to generate: -1 until EOS / a stop string / the context is full; 0 only evaluates
  // the prompt (the model is loaded, nothing is generated).
  int64_t num_predict = -1;
  // Most prompt tokens per forward step (1 .. 65536). A loaded model with a smaller step
  // serves the request with its own (the value only trades speed for compute memory).
  int64_t num_batch = 512;
  // CPU threads of the inference thread's pool: 0 all cores. Applies when the model is loaded.
  int num_thread = 0;
  // Layers on GPUs: -1 as many as fit, 0 none (Ollama's num_gpu). A different value than the
  // loaded model's changes placement: reload.
  int num_gpu = -1;
  // Sampling (temperature, top_k, top_p, min_p, penalties, seed).
  SamplingOptions sampling;
  // Stop strings: generation ends before the first occurrence (not included in the text).
  std::vector<std::string> stop;
  // Keep generating after an end-of-generation token (llama.cpp server's ignore_eos): for
  // benchmarks that must generate exactly num_predict tokens. Default false.
  bool ignore_eos = false;
};

// Checks the ranges above and the sampling options. InvalidArgument names the option.
Status ValidateRequestOptions(const RequestOptions& options);

// Why a generation ended.
enum class DoneReason {
  kStop,       // EOS/EOT or a stop string
  kLength,     // num_predict reached, or the context is full
  kCancelled,  // the caller cancelled
  kLoad,       // num_predict 0: only the prompt was evaluated (Ollama's "load")
};
// "stop", "length", "cancelled", "load": Ollama's done_reason strings.
std::string_view DoneReasonName(DoneReason reason);

// A tokenized request as the runner takes it.
// How an embedding request pools its tokens' final hidden states (GGUF's
// `<arch>.pooling_type` values 1..3): their mean, the first token's (CLS), the last token's.
enum class Pooling { kNone = 0, kMean = 1, kCls = 2, kLast = 3 };

struct GenerateRequest {
  std::vector<int32_t> prompt;  // token ids (BOS included if wanted); at least one
  RequestOptions options;
  // Not kNone: an embedding request. The whole prompt is evaluated (no cached prefix is reused:
  // every token's hidden state is needed), its final hidden states are pooled into
  // GenerateStats::embedding (not normalized), nothing is generated, and its K/V are freed.
  Pooling embedding = Pooling::kNone;
};

// The final record of a generation.
struct GenerateStats {
  DoneReason done_reason = DoneReason::kStop;
  std::vector<int32_t> tokens;     // generated token ids (EOS excluded)
  int64_t prompt_eval_count = 0;   // prompt tokens evaluated (prompt minus reused)
  int64_t prompt_reused_count = 0; // prompt tokens whose K/V were reused from a cached prefix
  int64_t prompt_eval_ns = 0;      // from admission to the prompt's last chunk
  int64_t eval_count = 0;          // tokens sampled (EOS included)
  int64_t eval_ns = 0;             // from the first sampled token to the end
  int64_t queue_ns = 0;            // from Submit to admission
  int64_t preemptions = 0;         // times the request was preempted and recomputed
  std::vector<float> embedding;    // embedding requests: [n_embd], pooled, not normalized
};

// One event of a stream: text (complete UTF-8, stop strings held back and cut), then exactly
// one final event: done (with the stats) or an error.
struct StreamEvent {
  enum class Kind { kText, kDone, kError };
  Kind kind = Kind::kText;
  std::string text;     // kText
  GenerateStats stats;  // kDone
  Status error;         // kError
};

// The result channel of one request. The producer pushes events; Push after a final event is
// ignored. Cancel() asks the producer to stop: the inference thread checks it once per step
// and then ends the stream with a done event whose reason is kCancelled (the sequence's KV
// blocks are freed in that step).
class RequestStream {
 public:
  RequestStream() = default;
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  // Producer side.
  void PushText(std::string text);
  void PushDone(GenerateStats stats);
  void PushError(Status error);

  // Consumer side. Blocks until an event is there and takes it; after the final event has been
  // taken, returns nullopt at once. With a timeout: nullopt also when it passes first.
  std::optional<StreamEvent> Next();
  std::optional<StreamEvent> Next(std::chrono::milliseconds timeout);
  // Reads events until the final one: the whole text and the stats, or the error.
  StatusOr<std::pair<std::string, GenerateStats>> Drain();

  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // True once the final event was pushed.
  bool finished() const;

 private:
  void Push(StreamEvent event);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_ FERRY_GUARDED_BY(mu_);
  bool final_pushed_ FERRY_GUARDED_BY(mu_) = false;
  bool final_taken_ FERRY_GUARDED_BY(mu_) = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_REQUEST_H_
