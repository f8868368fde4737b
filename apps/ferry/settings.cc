#include "settings.h"

#include <cstdlib>
#include <filesystem>

#include "backend/device.h"
#include "base/bytes.h"

namespace ferry::app {

StatusOr<Settings> ReadSettings() {
  Settings s;
  if (const char* o = std::getenv("FERRY_GPU_OVERHEAD"); o != nullptr && *o != '\0') {
    auto b = ParseBytes(o);
    if (!b.ok()) return b.status().WithPrefix("FERRY_GPU_OVERHEAD");
    s.gpu_overhead_bytes = *b;
  }
  if (const char* f = std::getenv("FERRY_CPU_FLOPS"); f != nullptr && *f != '\0') {
    const std::string v = f;
    if (v == "off" || v == "0") {
      s.cpu_matmul_flops = 0.0;
    } else {
      auto flops = ParseFlops(v);
      if (!flops.ok()) return flops.status().WithPrefix("FERRY_CPU_FLOPS");
      s.cpu_matmul_flops = *flops;
    }
  }
  if (const char* m = std::getenv("FERRY_MODELS"); m != nullptr && *m != '\0') {
    s.models_dir = m;
  } else {
    const char* home = std::getenv("HOME");
    s.models_dir = std::string(home != nullptr ? home : ".") + "/.ferry/models";
  }
  return s;
}

StatusOr<std::string> ResolveModel(const Settings& settings, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (name.empty()) return InvalidArgumentError("empty model name");
  if (fs::is_regular_file(name, ec)) return name;
  bool looks_like_path = name.find('/') != std::string::npos;
  if (!looks_like_path) {
    for (const std::string& candidate :
         {settings.models_dir + "/" + name, settings.models_dir + "/" + name + ".gguf"}) {
      if (fs::is_regular_file(candidate, ec)) return candidate;
    }
  }
  if (fs::exists(name, ec)) return InvalidArgumentError("{}: not a regular file", name);
  if (looks_like_path) return NotFoundError("{}: no such file", name);
  return NotFoundError("model '{}' not found: no file '{}' and nothing named '{}' or '{}.gguf' "
                       "in the models folder {} (set FERRY_MODELS, or run scripts/fetch-models)",
                       name, name, name, name, settings.models_dir);
}

}  // namespace ferry::app
