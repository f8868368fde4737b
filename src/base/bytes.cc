#include "base/bytes.h"

#include <cctype>
#include <cmath>
#include <string>

namespace ferry {

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024.0 && unit < 5) {
    v /= 1024.0;
    ++unit;
  }
  if (v >= 100.0) return fmt::format("{:.0f} {}", v, kUnits[unit]);
  if (v >= 10.0) return fmt::format("{:.1f} {}", v, kUnits[unit]);
  return fmt::format("{:.2f} {}", v, kUnits[unit]);
}

std::string FormatCount(uint64_t count) {
  double v = static_cast<double>(count);
  if (count >= 1000000000ULL) return fmt::format("{:.2f} B", v / 1e9);
  if (count >= 1000000ULL) return fmt::format("{:.2f} M", v / 1e6);
  if (count >= 1000ULL) return fmt::format("{:.1f} K", v / 1e3);
  return fmt::format("{}", count);
}

StatusOr<uint64_t> ParseBytes(std::string_view text) {
  std::string s(text);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  s = s.substr(start);
  if (s.empty()) return InvalidArgumentError("empty byte size");
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) {
    if (s[i] == '.') {
      if (seen_dot) return InvalidArgumentError("byte size '{}' has two decimal points", text);
      seen_dot = true;
    } else {
      seen_digit = true;
    }
    ++i;
  }
  if (!seen_digit) return InvalidArgumentError("byte size '{}' does not start with a number", text);
  std::string number = s.substr(0, i);
  std::string suffix;
  for (char c : s.substr(i)) {
    if (!std::isspace(static_cast<unsigned char>(c))) suffix += static_cast<char>(std::tolower(c));
  }
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "b") {
    mult = 1;
  } else {
    char p = suffix[0];
    std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "b" || rest == "ib")) {
      return InvalidArgumentError("byte size '{}' has an unknown unit '{}'", text, suffix);
    }
    switch (p) {
      case 'k': mult = kKiB; break;
      case 'm': mult = kMiB; break;
      case 'g': mult = kGiB; break;
      case 't': mult = 1024 * kGiB; break;
      default: return InvalidArgumentError("byte size '{}' has an unknown unit '{}'", text, suffix);
    }
  }
  long double v = std::strtold(number.c_str(), nullptr) * static_cast<long double>(mult);
  if (!(v < 18446744073709551615.0L)) {
    return OutOfRangeError("byte size '{}' does not fit in 64 bits", text);
  }
  return static_cast<uint64_t>(v + 0.5L);
}

}  // namespace ferry
