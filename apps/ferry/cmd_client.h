// `ferry ps` and `ferry stop`: clients of a running `ferry serve` (FERRY_HOST), over HTTP.
#ifndef FERRY_APPS_FERRY_CMD_CLIENT_H_
#define FERRY_APPS_FERRY_CMD_CLIENT_H_

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cmd_run.h"
#include "settings.h"

namespace ferry::app {

struct ClientCommandOptions {
  CLI::App* ps = nullptr;
  CLI::App* stop = nullptr;
  std::string model;  // stop
};

void AddClientCommands(CLI::App& app, ClientCommandOptions& options);
// Runs ps or stop when one was given: returns true and sets *exit_code (0, 1 on an error).
bool RunClientCommand(const Settings& settings, const ClientCommandOptions& options,
                      int* exit_code);

// `ferry run` through a running server: when `ferry serve` answers on FERRY_HOST (`GET /`
// within a second), sends the prompt (or each line of the interactive session) to /api/chat
// (/api/generate with --raw) with the options the command line gave, streams the answer to
// stdout, and returns true with *exit_code set (1 on an error, naming it). False when no
// server answers: the caller runs the model in-process.
bool RunThroughServer(const Settings& settings, const RunOptions& options, int* exit_code);

// The body of a 200 answer to GET `path` from a ferry serve answering on FERRY_HOST (one second
// to connect), or nullopt when none answers (or it answers another status).
std::optional<std::string> GetFromRunningServer(const Settings& settings, const std::string& path);

// Seconds since the epoch of an RFC 3339 UTC time ("2026-01-02T03:04:05.123Z"); nullopt when
// the text is not one.
std::optional<double> ParseRfc3339(const std::string& text);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_CLIENT_H_
