// `ferry serve`: the HTTP server (Ollama's API, /metrics) in front of the scheduler, configured
// from FERRY_* settings (docs/serving.md). Runs until SIGINT or SIGTERM.
#ifndef FERRY_APPS_FERRY_CMD_SERVE_H_
#define FERRY_APPS_FERRY_CMD_SERVE_H_

#include <CLI/CLI.hpp>

#include "settings.h"

namespace ferry::app {

struct ServeOptions {};

void AddServeCommand(CLI::App& app, ServeOptions& options);
// Returns the process exit code: 0 after a signal's clean shutdown, 1 when it cannot start.
int RunServe(const Settings& settings, const ServeOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_SERVE_H_
