#include "settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <system_error>

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
  s.no_color = Env("NO_COLOR") != nullptr;
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
    s.context_length_set = true;
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
  if (const char* b = std::getenv("FERRY_CPU_BANDWIDTH"); b != nullptr && *b != '\0') {
    auto bandwidth = ParseBandwidth(b);
    if (!bandwidth.ok()) return bandwidth.status().WithPrefix("FERRY_CPU_BANDWIDTH");
    if (*bandwidth <= 0.0) {
      return InvalidArgumentError("FERRY_CPU_BANDWIDTH: '{}' is not a bandwidth above zero", b);
    }
    s.cpu_bandwidth = *bandwidth;
  }
  if (const char* b = std::getenv("FERRY_GPU_BANDWIDTH"); b != nullptr && *b != '\0') {
    auto bandwidth = ParseBandwidth(b);
    if (!bandwidth.ok()) return bandwidth.status().WithPrefix("FERRY_GPU_BANDWIDTH");
    if (*bandwidth <= 0.0) {
      return InvalidArgumentError("FERRY_GPU_BANDWIDTH: '{}' is not a bandwidth above zero", b);
    }
    s.gpu_bandwidth = *bandwidth;
  }
  if (const char* k = std::getenv("FERRY_CPU_KERNELS"); k != nullptr && *k != '\0') {
    const std::string_view v = k;
    if (v != "best" && v != "avx512" && v != "avx2" && v != "portable") {
      return InvalidArgumentError(
          "FERRY_CPU_KERNELS: '{}' is not one of best, avx512, avx2, portable", v);
    }
  }
  const char* home_env = std::getenv("HOME");
  const std::string home = home_env != nullptr ? home_env : ".";
  if (const char* m = std::getenv("FERRY_MODELS"); m != nullptr && *m != '\0') {
    s.models_dir = m;
  } else {
    s.models_dir = home + "/.ferry/models";
  }
  if (const char* o = std::getenv("FERRY_OLLAMA_MODELS"); o != nullptr && *o != '\0') {
    s.ollama_models_dir = o;
  } else {
    std::error_code ec;
    const std::string ollama = home + "/.ollama/models";
    if (std::filesystem::is_directory(ollama, ec)) s.ollama_models_dir = ollama;
  }
  return s;
}

StatusOr<store::Store> OpenStore(const Settings& settings) {
  auto opened = store::Store::Open(settings.models_dir, settings.ollama_models_dir);
  if (!opened.ok()) {
    return opened.status().WithPrefix(settings.ollama_models_dir
                                          ? "the model store (FERRY_MODELS, FERRY_OLLAMA_MODELS)"
                                          : "the model store (FERRY_MODELS)");
  }
  return opened;
}

std::vector<std::string> BareModelFiles(const Settings& settings) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(settings.models_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code ec2;
    if (it->path().extension() == ".gguf" && it->is_regular_file(ec2)) {
      files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

namespace {

// ` available: a, b:latest (ferry list)`, or how to add a model when there is none.
std::string Available(const Settings& settings, const store::Store* st) {
  std::vector<std::string> names;
  for (const std::string& f : BareModelFiles(settings)) {
    names.push_back(std::filesystem::path(f).stem().string());
  }
  if (st != nullptr) {
    if (auto list = st->List(); list.ok()) {
      for (const store::StoreEntry& e : *list) names.push_back(e.name.DisplayName());
    }
  }
  if (names.empty()) {
    return fmt::format(
        "; there are no models in {} (add one with `ferry create NAME -f "
        "Modelfile`, or run scripts/fetch-models)",
        settings.models_dir);
  }
  std::string joined;
  for (const std::string& n : names) joined += (joined.empty() ? "" : ", ") + n;
  return fmt::format("; available: {} (ferry list)", joined);
}

}  // namespace

StatusOr<FoundModel> FindModel(const Settings& settings, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (name.empty()) return InvalidArgumentError("empty model name");
  if (fs::is_regular_file(name, ec)) return FoundModel{name, std::nullopt};
  const bool looks_like_path = name.find('/') != std::string::npos;
  FERRY_ASSIGN_OR_RETURN(store::Store st, OpenStore(settings));
  auto found = server::FindModelIn(settings.models_dir, &st, name, /*allow_paths=*/true);
  if (found.ok()) return found;
  const StatusCode code = found.status().code();
  if (code != StatusCode::kNotFound && code != StatusCode::kInvalidArgument) return found;
  if (fs::exists(name, ec)) return InvalidArgumentError("{}: not a regular file", name);
  if (code == StatusCode::kInvalidArgument || found.status().message().starts_with(name + ":")) {
    return found;
  }
  if (looks_like_path) {
    return NotFoundError("{}: no such file, and no model of that name{}", name,
                         Available(settings, &st));
  }
  return NotFoundError("model \"{}\" not found{}", name, Available(settings, &st));
}

StatusOr<std::string> ResolveModel(const Settings& settings, const std::string& name) {
  FERRY_ASSIGN_OR_RETURN(FoundModel found, FindModel(settings, name));
  return std::move(found.path);
}

}  // namespace ferry::app
