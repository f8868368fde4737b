#include "runtime/request.h"

#include <utility>

namespace ferry {

Status ValidateRequestOptions(const RequestOptions& o) {
  if (o.num_ctx < 1 || o.num_ctx > (int64_t{1} << 24)) {
    return InvalidArgumentError("num_ctx {} is out of range (1 .. 16777216)", o.num_ctx);
  }
  if (o.num_predict < -1) {
    return InvalidArgumentError("num_predict {} must be -1 (no limit) or >= 0", o.num_predict);
  }
  if (o.num_batch < 1 || o.num_batch > 65536) {
    return InvalidArgumentError("num_batch {} is out of range (1 .. 65536)", o.num_batch);
  }
  if (o.num_thread < 0 || o.num_thread > 1024) {
    return InvalidArgumentError("num_thread {} is out of range (0 .. 1024)", o.num_thread);
  }
  if (o.num_gpu < -1) {
    return InvalidArgumentError("num_gpu {} must be -1 (as many as fit) or >= 0", o.num_gpu);
  }
  for (const std::string& s : o.stop) {
    if (s.empty()) return InvalidArgumentError("stop strings must not be empty");
  }
  return ValidateSamplingOptions(o.sampling);
}

std::string_view DoneReasonName(DoneReason reason) {
  switch (reason) {
    case DoneReason::kStop: return "stop";
    case DoneReason::kLength: return "length";
    case DoneReason::kCancelled: return "cancelled";
    case DoneReason::kLoad: return "load";
  }
  return "stop";
}

void RequestStream::Push(StreamEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_pushed_) return;
    if (event.kind != StreamEvent::Kind::kText) final_pushed_ = true;
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

void RequestStream::PushText(std::string text) {
  if (text.empty()) return;
  StreamEvent e;
  e.kind = StreamEvent::Kind::kText;
  e.text = std::move(text);
  Push(std::move(e));
}

void RequestStream::PushDone(GenerateStats stats) {
  StreamEvent e;
  e.kind = StreamEvent::Kind::kDone;
  e.stats = std::move(stats);
  Push(std::move(e));
}

void RequestStream::PushError(Status error) {
  StreamEvent e;
  e.kind = StreamEvent::Kind::kError;
  e.error = error.ok() ? InternalError("a stream ended with an OK error") : std::move(error);
  Push(std::move(e));
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return final_pushed_;
}

std::optional<StreamEvent> RequestStream::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (final_taken_) return std::nullopt;
  cv_.wait(lock, [&] { return !events_.empty(); });
  StreamEvent e = std::move(events_.front());
  events_.pop_front();
  if (e.kind != StreamEvent::Kind::kText) final_taken_ = true;
  return e;
}

std::optional<StreamEvent> RequestStream::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (final_taken_) return std::nullopt;
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent e = std::move(events_.front());
  events_.pop_front();
  if (e.kind != StreamEvent::Kind::kText) final_taken_ = true;
  return e;
}

StatusOr<std::pair<std::string, GenerateStats>> RequestStream::Drain() {
  std::string text;
  while (std::optional<StreamEvent> e = Next()) {
    switch (e->kind) {
      case StreamEvent::Kind::kText: text += e->text; break;
      case StreamEvent::Kind::kDone: return std::make_pair(std::move(text), std::move(e->stats));
      case StreamEvent::Kind::kError: return e->error;
    }
  }
  return FailedPreconditionError("the stream's final event was already taken");
}

}  // namespace ferry
