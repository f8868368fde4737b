// `ferry show`: describes a GGUF model without loading its weights, or prints a stored
// model's Modelfile, parameters or template.
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
  // Instead of the GGUF description: the model's Modelfile, its PARAMETERs or its TEMPLATE
  // (Ollama's `show --modelfile/--parameters/--template`); at most one.
  bool modelfile = false;
  bool parameters = false;
  bool template_text = false;
};

void AddShowCommand(CLI::App& app, ShowOptions& options);
// Returns the process exit code.
int RunShow(const Settings& settings, const ShowOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_SHOW_H_
