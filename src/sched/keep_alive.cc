#include "sched/keep_alive.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

namespace ferry::sched {
namespace {

// The most nanoseconds a KeepAlive holds (int64).
constexpr double kMaxNanos = 9.2e18;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Reads an unsigned decimal number ("12", "1.5", ".5", "3."), advancing `s`. False if there is
// no digit.
bool ReadNumber(std::string_view& s, double& value) {
  size_t i = 0;
  bool digits = false;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  }
  if (!digits) return false;
  value = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
  s.remove_prefix(i);
  return true;
}

// Nanoseconds per unit, 0 for an unknown unit.
double UnitNanos(std::string_view unit) {
  if (unit == "ns") return 1;
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1e3;  // µs, μs
  if (unit == "ms") return 1e6;
  if (unit == "s") return 1e9;
  if (unit == "m") return 60e9;
  if (unit == "h") return 3600e9;
  return 0;
}

}  // namespace

StatusOr<KeepAlive> KeepAliveFromSeconds(double seconds) {
  if (std::isnan(seconds)) return InvalidArgumentError("keep_alive: not a number");
  if (seconds < 0) return KeepAlive::Forever();
  const double nanos = seconds * 1e9;
  if (nanos > kMaxNanos) return InvalidArgumentError("keep_alive: {} seconds is too long", seconds);
  return KeepAlive{std::chrono::nanoseconds(static_cast<int64_t>(std::llround(nanos)))};
}

StatusOr<KeepAlive> ParseKeepAlive(std::string_view text) {
  const std::string_view s = Trim(text);
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        "keep_alive \"{}\": {} (want a duration like \"5m\", \"1h30m\", \"250ms\" or a number of "
        "seconds; negative = forever)",
        text, why);
  };
  if (s.empty()) return bad("empty");
  std::string_view rest = s;
  bool negative = false;
  if (rest.front() == '-' || rest.front() == '+') {
    negative = rest.front() == '-';
    rest.remove_prefix(1);
  }
  // A plain number: seconds.
  {
    std::string_view r = rest;
    double v = 0;
    if (ReadNumber(r, v) && r.empty()) return KeepAliveFromSeconds(negative ? -v : v);
  }
  // A Go duration: one or more (number, unit) pairs.
  double nanos = 0;
  if (rest.empty()) return bad("no number");
  while (!rest.empty()) {
    double v = 0;
    if (!ReadNumber(rest, v)) return bad("expected a number");
    size_t n = 0;
    while (n < rest.size() && !std::isdigit(static_cast<unsigned char>(rest[n])) &&
           rest[n] != '.') {
      ++n;
    }
    if (n == 0) return bad("a number without a unit");
    const double unit = UnitNanos(rest.substr(0, n));
    if (unit == 0) return bad(fmt::format("unknown unit \"{}\"", rest.substr(0, n)));
    nanos += v * unit;
    if (nanos > kMaxNanos) return bad("too long");
    rest.remove_prefix(n);
  }
  if (negative && nanos > 0) return KeepAlive::Forever();
  return KeepAlive{std::chrono::nanoseconds(static_cast<int64_t>(std::llround(nanos)))};
}

std::string FormatKeepAlive(const KeepAlive& keep_alive) {
  if (keep_alive.forever()) return "forever";
  const int64_t ns = keep_alive.duration.count();
  if (ns == 0) return "0s";
  if (ns < 1'000'000'000) {
    if (ns % 1'000'000 == 0) return fmt::format("{}ms", ns / 1'000'000);
    if (ns % 1'000 == 0) return fmt::format("{}us", ns / 1'000);
    return fmt::format("{}ns", ns);
  }
  const int64_t h = ns / 3'600'000'000'000;
  const int64_t m = ns / 60'000'000'000 % 60;
  const double sec = static_cast<double>(ns % 60'000'000'000) / 1e9;
  std::string out;
  if (h > 0) out += fmt::format("{}h", h);
  if (h > 0 || m > 0) out += fmt::format("{}m", m);
  out += fmt::format("{:g}s", sec);
  return out;
}

}  // namespace ferry::sched
