// Logging facade. Library code logs through these functions (never to stdout); the app decides
// where logs go (stderr by default) and the level. Messages are "event key=value ..." lines.
//
// Thread-safety: all functions may be called from any thread.
#ifndef FERRY_BASE_LOG_H_
#define FERRY_BASE_LOG_H_

#include <string_view>

#include <fmt/format.h>

namespace ferry::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void SetLevel(Level level);
// Colour in the level names: only when stderr is a terminal (spdlog's automatic mode), and
// never after SetColor(false) (the binary calls it for NO_COLOR). Call before logging from
// more than one thread.
void SetColor(bool enabled);
Level GetLevel();
void Write(Level level, std::string_view message);

template <typename... Args>
void Debug(fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kDebug) Write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Info(fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kInfo) Write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Warn(fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kWarn) Write(Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Error(fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kError) Write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ferry::log

#endif  // FERRY_BASE_LOG_H_
