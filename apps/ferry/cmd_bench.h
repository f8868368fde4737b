// `ferry bench`: prompt-processing and generation speed of a model, in llama-bench's spirit.
//
// For each --parallel value P the model is loaded once (on the CPU, P sequences, no inference
// thread) and, for each -p value, P distinct random prompts of that many tokens are evaluated
// together (pp: num_predict 0), then P sequences generate -n tokens each from a distinct
// one-token prompt (tg, greedy). Each measurement runs once to warm up and then -r times; the
// figures are the aggregate tokens per second over all P sequences, mean and sample standard
// deviation. Prompts never share a first token, so the runner's prompt reuse never applies
// (checked: prompt_reused_count is 0).
//
// Depths (-d 0,4096,16384, llama-bench's -d): for depth D > 0 the model is loaded for that
// context, each of the P sequences first evaluates a distinct D-token prefix (untimed; a
// progress line on stderr), and every timed request is its prefix plus new tokens: the runner
// reuses the prefix's K/V (checked: prompt_reused_count is D), so pp and tg run with D tokens
// already in the cache. Each row also reports the load's plan (KV and compute bytes, the
// predicted single-stream decode speed) and the process's resident memory after the row.
#ifndef FERRY_APPS_FERRY_CMD_BENCH_H_
#define FERRY_APPS_FERRY_CMD_BENCH_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "settings.h"

namespace ferry::app {

struct BenchOptions {
  std::string model;
  std::vector<int64_t> n_prompt{512};  // -p: prompt tokens per sequence (one row each)
  int64_t n_gen = 128;                 // -n: generated tokens per sequence
  int repetitions = 5;                 // -r
  int num_thread = 0;                  // 0: all cores
  std::string kv_type = "f16";
  std::vector<int32_t> parallel{1};  // sequences decoded together (one load each)
  std::vector<int64_t> depth{0};     // -d: tokens already in the KV cache (one load each)
  std::vector<int> num_gpu{-1};      // --num-gpu: layers on the GPU (one load each; -1: as
                                     // many as fit)
  int64_t num_ctx = 0;               // 0: what the largest test needs
  int64_t num_batch = 512;
  bool json = false;
  // --gap-prompt N: also report the longest gap between two tokens of a running stream while
  // another request's N-token prompt is processed (0: not measured).
  int64_t gap_prompt = 0;
};

void AddBenchCommand(CLI::App& app, BenchOptions& options);
int RunBench(const Settings& settings, const BenchOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_BENCH_H_
