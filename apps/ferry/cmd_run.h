// `ferry run` (generate text) and `ferry perplexity` (score a text file).
#ifndef FERRY_APPS_FERRY_CMD_RUN_H_
#define FERRY_APPS_FERRY_CMD_RUN_H_

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "settings.h"

namespace ferry::app {

// Request options, each also a flag with dashes (--num-ctx ...), Ollama's names.
struct RequestFlags {
  int64_t num_ctx = 2048;
  int64_t num_predict = -1;
  int64_t num_batch = 512;
  int num_thread = 0;
  std::string kv_type = "f16";
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.9f;
  float min_p = 0.0f;
  float repeat_penalty = 1.1f;
  int repeat_last_n = 64;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
};

struct RunOptions {
  std::string model;
  std::optional<std::string> prompt;
  bool raw = false;
  bool verbose = false;
  std::string system;
  RequestFlags request;
};

struct PerplexityOptions {
  std::string model;
  std::string file;
  RequestFlags request;
};

void AddRunCommand(CLI::App& app, RunOptions& options);
void AddPerplexityCommand(CLI::App& app, PerplexityOptions& options);
int RunRun(const Settings& settings, const RunOptions& options);
int RunPerplexity(const Settings& settings, const PerplexityOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_RUN_H_
