// Store: ferry's model store, in Ollama's on-disk layout, plus read-only use of an Ollama store.
//
// Layout under a root directory (FERRY_MODELS; Ollama's `~/.ollama/models` is the same):
//   manifests/<host>/<namespace>/<model>/<tag>   a Docker manifest v2 (JSON): config + layers
//   blobs/sha256-<64 hex>                         content-addressed blobs (the GGUF, template,
//                                                 system prompt, params JSON, messages JSON,
//                                                 licenses, the config JSON)
// Every blob's SHA-256 is checked when it is written or adopted and on the first Resolve of a
// model in this process (verified digests are cached per blob path); a mismatch is DataLoss
// naming the blob and both digests. Manifests are written to a temporary file and renamed, so a
// reader sees the old or the new manifest, never half of one. See docs/store.md.
//
// Thread-safety: every method may be called from any thread. Writes (Create*, Copy, Delete)
// are serialized by an internal mutex; the verified-digest cache is guarded by it too. Two
// processes writing one store at the same time are not coordinated (a Delete's blob collection
// may remove a blob another process is about to reference).
#ifndef FERRY_STORE_STORE_H_
#define FERRY_STORE_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/model_name.h"
#include "store/modelfile.h"

namespace ferry::store {

inline constexpr std::string_view kManifestMediaType =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kConfigMediaType =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kModelMediaType = "application/vnd.ollama.image.model";
inline constexpr std::string_view kTemplateMediaType = "application/vnd.ollama.image.template";
inline constexpr std::string_view kSystemMediaType = "application/vnd.ollama.image.system";
inline constexpr std::string_view kParamsMediaType = "application/vnd.ollama.image.params";
inline constexpr std::string_view kMessagesMediaType = "application/vnd.ollama.image.messages";
inline constexpr std::string_view kLicenseMediaType = "application/vnd.ollama.image.license";

// InvalidArgument unless `digest` is `sha256:` followed by 64 lowercase hex digits. Only a
// digest that passes is ever turned into a path.
Status ValidateDigest(std::string_view digest);

// What /api/tags and /api/show report about a model (Ollama's `details`), from its config blob.
struct ModelDetails {
  std::string format;  // "gguf"
  std::string family;  // general.architecture, e.g. "llama"
  std::vector<std::string> families;
  std::string parameter_size;      // e.g. "292.9K", "7.2B"
  std::string quantization_level;  // from general.file_type, e.g. "Q4_K_M", "F32"
};

struct StoreEntry {
  ModelName name;
  std::string digest;  // "sha256:<hex>" of the manifest file's bytes (Ollama's model digest)
  uint64_t size = 0;   // bytes of all layers and the config
  std::chrono::system_clock::time_point modified;  // the manifest's mtime
  std::string model_path;                          // the GGUF blob
  ModelDetails details;
  bool read_only = false;  // true when it comes from the Ollama store
};

struct ResolvedModel {
  ModelName name;
  std::string digest;      // of the manifest, as in StoreEntry
  std::string model_path;  // the GGUF blob, verified
  std::string model_digest;
  ModelExtras extras;  // template, system, parameters, messages, licenses
  ModelDetails details;
  bool read_only = false;
};

class Store {
 public:
  // Opens (creating `root`, `root/manifests` and `root/blobs` if needed) the store at `root`.
  // `ollama_root`, when given, is an Ollama models directory used read-only; NotFound if it
  // is not a directory.
  static StatusOr<Store> Open(std::string root, std::optional<std::string> ollama_root = {});

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  // Every model in both stores, sorted by name; ferry's own wins a name clash. Manifests that
  // cannot be read are skipped with a warning.
  StatusOr<std::vector<StoreEntry>> List() const;

  // The model `name`: NotFound if neither store has it; DataLoss for a corrupt manifest or a
  // blob whose bytes do not match its digest (checked on the first Resolve in this process).
  StatusOr<ResolvedModel> Resolve(const ModelName& name) const;

  // Creates (or replaces) `name` from the GGUF file at `gguf_path` (validated as GGUF first):
  // copies it into a blob, hashing while copying, writes the extras as layers, then the
  // manifest. Returns the new model.
  StatusOr<ResolvedModel> CreateFromGguf(const ModelName& name, const std::string& gguf_path,
                                         const ModelExtras& extras);
  // Creates (or replaces) `name` from the stored model `base`: its weights and config; its
  // template / system when `extras` sets none; its parameters overlaid by `extras.parameters`
  // (per name); its messages / licenses unless `extras` has some. Blobs of a base in the
  // Ollama store are hard-linked (or copied) into ferry's store.
  StatusOr<ResolvedModel> CreateFrom(const ModelName& name, const ModelName& base,
                                     const ModelExtras& extras);
  // Makes `dst` name the same manifest as `src` (replacing `dst` if it exists).
  Status Copy(const ModelName& src, const ModelName& dst);
  // Removes `name`'s manifest and then every blob no manifest references any more.
  // FailedPrecondition for a model that exists only in the read-only Ollama store.
  Status Delete(const ModelName& name);

  // Checks that the blob `digest` (in ferry's store, else the Ollama store) hashes to its
  // name. InvalidArgument for a malformed digest, NotFound, DataLoss on a mismatch.
  Status VerifyBlob(std::string_view digest) const;

  const std::string& root() const;

 private:
  struct State;
  explicit Store(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ferry::store

#endif  // FERRY_STORE_STORE_H_
