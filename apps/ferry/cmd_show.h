// `ferry show`: describes a GGUF model without loading its weights.
#ifndef FERRY_APPS_FERRY_CMD_SHOW_H_
#define FERRY_APPS_FERRY_CMD_SHOW_H_

#include <string>

#include <CLI/CLI.hpp>

#include "settings.h"

namespace ferry::app {

struct ShowOptions {
  std::string model;
  bool json = false;
  bool tensors = false;
  bool metadata = false;
};

void AddShowCommand(CLI::App& app, ShowOptions& options);
// Returns the process exit code.
int RunShow(const Settings& settings, const ShowOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_SHOW_H_
