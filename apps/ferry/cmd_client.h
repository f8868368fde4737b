// `ferry ps` and `ferry stop`: clients of a running `ferry serve` (FERRY_HOST), over HTTP.
#ifndef FERRY_APPS_FERRY_CMD_CLIENT_H_
#define FERRY_APPS_FERRY_CMD_CLIENT_H_

#include <string>

#include <CLI/CLI.hpp>

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

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_CLIENT_H_
