#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>

namespace ferry::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};

std::atomic<bool> g_color{true};

spdlog::logger& Logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt(
        "ferry", g_color.load() ? spdlog::color_mode::automatic : spdlog::color_mode::never);
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    l->set_level(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

}  // namespace

void SetLevel(Level level) { g_level.store(level); }

void SetColor(bool enabled) {
  g_color.store(enabled);
  for (auto& sink : Logger().sinks()) {
    if (auto* c = dynamic_cast<spdlog::sinks::stderr_color_sink_mt*>(sink.get())) {
      c->set_color_mode(enabled ? spdlog::color_mode::automatic : spdlog::color_mode::never);
    }
  }
}
Level GetLevel() { return g_level.load(); }

void Write(Level level, std::string_view message) {
  switch (level) {
    case Level::kDebug: Logger().debug("{}", message); break;
    case Level::kInfo: Logger().info("{}", message); break;
    case Level::kWarn: Logger().warn("{}", message); break;
    case Level::kError: Logger().error("{}", message); break;
    case Level::kOff: break;
  }
}

}  // namespace ferry::log
