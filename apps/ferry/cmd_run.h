// `ferry run` (generate text) and `ferry perplexity` (score a text file).
#ifndef FERRY_APPS_FERRY_CMD_RUN_H_
#define FERRY_APPS_FERRY_CMD_RUN_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/request.h"
#include "settings.h"

namespace ferry::app {

// Request options, each also a flag with dashes (--num-ctx ...), Ollama's names: the
// library's one RequestOptions, plus the load options a command line may set.
struct RequestFlags {
  RequestOptions options;
  std::string kv_type = "f16";
  // Ollama's option name -> its flag, to tell which ones the command line gave.
  std::map<std::string, const CLI::Option*> flags;
};

struct RunOptions {
  std::string model;
  std::optional<std::string> prompt;
  bool raw = false;
  bool verbose = false;
  bool local = false;  // run in this process even when a server answers on FERRY_HOST
  std::string system;
  std::string template_name;  // --template: a built-in chat format for a file without one
  RequestFlags request;
};

struct PerplexityOptions {
  std::string model;
  std::string file;
  RequestFlags request;
};

// Sets Ollama parameter `name` (a Modelfile PARAMETER, /set parameter) from its text values:
// InvalidArgument for an unknown name or a value of the wrong type. stop takes every value.
Status ApplyParameter(const std::string& name, const std::vector<std::string>& values,
                      RequestOptions& options);

void AddRunCommand(CLI::App& app, RunOptions& options);
void AddPerplexityCommand(CLI::App& app, PerplexityOptions& options);
int RunRun(const Settings& settings, const RunOptions& options);
int RunPerplexity(const Settings& settings, const PerplexityOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_RUN_H_
