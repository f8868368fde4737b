// Settings read from the environment (FERRY_* variables). This is the one place ferry calls
// getenv; libraries under src/ receive values, never read the environment.
#ifndef FERRY_APPS_FERRY_SETTINGS_H_
#define FERRY_APPS_FERRY_SETTINGS_H_

#include <optional>
#include <string>

#include "base/status.h"

namespace ferry::app {

struct Settings {
  // FERRY_MODELS, default ~/.ferry/models: where `ferry show NAME` looks for NAME.
  std::string models_dir;
  // FERRY_GPU_OVERHEAD: bytes to leave free on every GPU (e.g. "1GiB"); 0 when unset.
  uint64_t gpu_overhead_bytes = 0;
  // FERRY_CPU_FLOPS: the CPU's mat-vec throughput for the speed model instead of measuring it
  // at discovery ("200GFLOPS", see ParseFlops); "off" or "0": no compute term (bandwidth
  // only). Unset: measured (DiscoverOptions::cpu_matmul_flops).
  std::optional<double> cpu_matmul_flops;
};

// Errors: a FERRY_* value that does not parse (named in the message).
StatusOr<Settings> ReadSettings();

// A path if `name_or_path` is an existing file; otherwise `models_dir/NAME` or
// `models_dir/NAME.gguf`. NotFound lists where it looked.
StatusOr<std::string> ResolveModel(const Settings& settings, const std::string& name_or_path);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_SETTINGS_H_
