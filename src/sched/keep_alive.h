// KeepAlive: how long a model stays loaded after its last request ends (Ollama's keep_alive).
//
// Thread-safety: plain values and pure functions.
#ifndef FERRY_SCHED_KEEP_ALIVE_H_
#define FERRY_SCHED_KEEP_ALIVE_H_

#include <chrono>
#include <string>
#include <string_view>

#include "base/status.h"

namespace ferry::sched {

struct KeepAlive {
  // Negative: forever (the model is never unloaded for idleness). Zero: unloaded as soon as
  // its last request ends. Positive: unloaded this long after its last request ends.
  std::chrono::nanoseconds duration{std::chrono::minutes(5)};

  static KeepAlive Forever() { return KeepAlive{std::chrono::nanoseconds(-1)}; }
  bool forever() const { return duration.count() < 0; }
  bool operator==(const KeepAlive&) const = default;
};

// Parses a keep_alive as Ollama takes it: a Go duration string ("5m", "1h30m", "10s", "250ms",
// "1.5h", "-1m"; units ns, us, µs, ms, s, m, h; a sign in front) or a plain number of seconds
// ("300", "-1", "2.5": what OLLAMA_KEEP_ALIVE and a JSON number mean). Any negative value
// means forever. Surrounding whitespace is ignored. InvalidArgument (naming the text) for
// anything else: empty, a unit missing ("5m3"), an unknown unit ("5d"), a non-number, or a
// value beyond ~292 years.
StatusOr<KeepAlive> ParseKeepAlive(std::string_view text);

// From a JSON number of seconds: negative = forever. InvalidArgument for NaN or beyond ~292
// years.
StatusOr<KeepAlive> KeepAliveFromSeconds(double seconds);

// "forever", "0s", "5m0s", "1h30m0s", "250ms": Go's time.Duration formatting, for logs.
std::string FormatKeepAlive(const KeepAlive& keep_alive);

}  // namespace ferry::sched

#endif  // FERRY_SCHED_KEEP_ALIVE_H_
