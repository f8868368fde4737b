// The model store on the command line: `ferry list`, `ferry create`, `ferry cp`, `ferry rm`
// (Ollama's commands of the same names; see docs/store.md).
#ifndef FERRY_APPS_FERRY_CMD_STORE_H_
#define FERRY_APPS_FERRY_CMD_STORE_H_

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "settings.h"

namespace ferry::app {

struct StoreCommandOptions {
  CLI::App* list = nullptr;
  CLI::App* create = nullptr;
  CLI::App* cp = nullptr;
  CLI::App* rm = nullptr;
  std::string name;                     // create
  std::string modelfile = "Modelfile";  // create -f
  std::string src, dst;                 // cp
  std::vector<std::string> names;       // rm
};

void AddStoreCommands(CLI::App& app, StoreCommandOptions& options);
// Runs whichever of the store commands was given; false (and *exit_code untouched) when none.
bool RunStoreCommand(const Settings& settings, const StoreCommandOptions& options, int* exit_code);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_STORE_H_
