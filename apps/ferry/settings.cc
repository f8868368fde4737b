#include "settings.h"

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "backend/device.h"
#include "base/bytes.h"

namespace ferry::app {
namespace {

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

StatusOr<int64_t> EnvInt(const char* name, std::string_view text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < lo || v > hi) {
    return InvalidArgumentError("{}: \"{}\" is not an integer in {}..{}", name, text, lo, hi);
  }
  return v;
}

}  // namespace

StatusOr<Settings> ReadSettings() {
  Settings s;
  if (const char* v = Env("FERRY_HOST")) s.host = v;
  if (const char* v = Env("FERRY_KEEP_ALIVE")) s.keep_alive = v;
  if (const char* v = Env("FERRY_NUM_PARALLEL")) {
    FERRY_ASSIGN_OR_RETURN(s.num_parallel, EnvInt("FERRY_NUM_PARALLEL", v, 1, 1024));
  }
  if (const char* v = Env("FERRY_MAX_LOADED_MODELS")) {
    FERRY_ASSIGN_OR_RETURN(s.max_loaded_models, EnvInt("FERRY_MAX_LOADED_MODELS", v, 0, 1024));
  }
  if (const char* v = Env("FERRY_MAX_QUEUE")) {
    FERRY_ASSIGN_OR_RETURN(s.max_queue, EnvInt("FERRY_MAX_QUEUE", v, 1, 1 << 20));
  }
  if (const char* v = Env("FERRY_KV_CACHE_TYPE")) s.kv_cache_type = v;
  if (const char* v = Env("FERRY_MAX_BODY")) {
    auto b = ParseBytes(v);
    if (!b.ok()) return b.status().WithPrefix("FERRY_MAX_BODY");
    if (*b == 0) return InvalidArgumentError("FERRY_MAX_BODY: must be above 0");
    s.max_body_bytes = *b;
  }
  if (const char* v = Env("FERRY_CONTEXT_LENGTH")) {
    FERRY_ASSIGN_OR_RETURN(s.context_length,
                           EnvInt("FERRY_CONTEXT_LENGTH", v, 1, int64_t{1} << 24));
  }
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
  return NotFoundError(
      "model '{}' not found: no file '{}' and nothing named '{}' or '{}.gguf' "
      "in the models folder {} (set FERRY_MODELS, or run scripts/fetch-models)",
      name, name, name, name, settings.models_dir);
}

}  // namespace ferry::app
