// Settings read from the environment (FERRY_* variables). This is the one place ferry calls
// getenv; libraries under src/ receive values, never read the environment.
#ifndef FERRY_APPS_FERRY_SETTINGS_H_
#define FERRY_APPS_FERRY_SETTINGS_H_

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "server/model_catalog.h"
#include "store/store.h"

namespace ferry::app {

struct Settings {
  // FERRY_MODELS, default ~/.ferry/models: the model store's root (manifests/, blobs/), and
  // the folder where a bare NAME.gguf file is found by NAME.
  std::string models_dir;
  // FERRY_OLLAMA_MODELS, default ~/.ollama/models when that directory exists: an Ollama model
  // store, used read-only. Unset: none.
  std::optional<std::string> ollama_models_dir;
  // FERRY_GPU_OVERHEAD: bytes to leave free on every GPU (e.g. "1GiB"); 0 when unset.
  uint64_t gpu_overhead_bytes = 0;
  // FERRY_CPU_FLOPS: the CPU's mat-vec throughput for the speed model instead of measuring it
  // at discovery ("200GFLOPS", see ParseFlops); "off" or "0": no compute term (bandwidth
  // only). Unset: measured (DiscoverOptions::cpu_matmul_flops).
  std::optional<double> cpu_matmul_flops;
  // FERRY_CPU_BANDWIDTH: the CPU's memory read bandwidth for the speed model instead of
  // measuring it at discovery ("20GB/s", see ParseBandwidth). Unset: measured
  // (DiscoverOptions::cpu_bandwidth).
  std::optional<double> cpu_bandwidth;
  // FERRY_GPU_BANDWIDTH: every GPU's memory bandwidth for the speed model instead of measuring
  // it at discovery with a device-to-device copy ("3.3TB/s"). Unset: measured
  // (DiscoverOptions::cuda_bandwidth).
  std::optional<double> gpu_bandwidth;

  // NO_COLOR (https://no-color.org/): set and not empty, terminal output has no colour or
  // dimming. Colour is used only when the stream is a terminal anyway.
  bool no_color = false;

  // `ferry serve` (docs/serving.md). Each is checked here; a bad value stops ferry with a
  // message naming the variable.
  std::string host = "127.0.0.1:11434";          // FERRY_HOST
  std::string keep_alive = "5m";                 // FERRY_KEEP_ALIVE: Go duration or seconds
  int num_parallel = 1;                          // FERRY_NUM_PARALLEL (>= 1)
  int max_loaded_models = 0;                     // FERRY_MAX_LOADED_MODELS (0: 3 per GPU, >= 3)
  int max_queue = 512;                           // FERRY_MAX_QUEUE (>= 1)
  std::string kv_cache_type = "f16";             // FERRY_KV_CACHE_TYPE: f16, q8_0, q4_0
  uint64_t max_body_bytes = uint64_t{32} << 20;  // FERRY_MAX_BODY ("32MiB", "4096")
  int64_t context_length = 4096;                 // FERRY_CONTEXT_LENGTH: default num_ctx
  bool context_length_set = false;               // whether FERRY_CONTEXT_LENGTH was set
};

// Errors: a FERRY_* value that does not parse (named in the message).
StatusOr<Settings> ReadSettings();

// Opens the store at models_dir with the Ollama store (if any) beside it, read-only.
StatusOr<store::Store> OpenStore(const Settings& settings);

// A model found by FindModel: the GGUF file, plus what the store holds for it (template,
// system, parameters, ...; verified). One definition with the server's lookup.
using FoundModel = server::FoundModel;

// Finds `name_or_path`, in this order: an existing file path; `models_dir/NAME` or
// `models_dir/NAME.gguf` (a bare GGUF file in the models folder); a model in the store
// (`Store::Resolve`, which checks the blobs' digests on first use: DataLoss on a mismatch):
// server::FindModelIn, which `ferry serve` uses too.
// InvalidArgument for a name that is neither a file nor a valid model name; NotFound lists the
// models that exist.
StatusOr<FoundModel> FindModel(const Settings& settings, const std::string& name_or_path);

// FindModel's GGUF path.
StatusOr<std::string> ResolveModel(const Settings& settings, const std::string& name_or_path);

// The bare `*.gguf` files directly in models_dir (what `models_dir/NAME.gguf` finds), sorted.
std::vector<std::string> BareModelFiles(const Settings& settings);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_SETTINGS_H_
