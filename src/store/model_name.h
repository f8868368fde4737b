// ModelName: a model's name as Ollama parses it, `[[host/]namespace/]name[:tag]`.
//
// Defaults: host `registry.ollama.ai`, namespace `library`, tag `latest`, so `gemma3` means
// `registry.ollama.ai/library/gemma3:latest`. A parsed name is safe to use as a relative path
// under a store's `manifests/` directory: every part is non-empty, starts with a letter, digit
// or `_`, and holds only letters, digits, `_`, `-` and `.` (the host may also hold `:` for a
// port), and no part contains `..`. Names are compared as written (case-sensitive).
//
// Thread-safety: values; ParseModelName may be called from any thread.
#ifndef FERRY_STORE_MODEL_NAME_H_
#define FERRY_STORE_MODEL_NAME_H_

#include <string>
#include <string_view>

#include "base/status.h"

namespace ferry::store {

inline constexpr std::string_view kDefaultHost = "registry.ollama.ai";
inline constexpr std::string_view kDefaultNamespace = "library";
inline constexpr std::string_view kDefaultTag = "latest";

inline constexpr size_t kMaxHostLength = 350;
inline constexpr size_t kMaxNamespaceLength = 80;
inline constexpr size_t kMaxModelLength = 80;
inline constexpr size_t kMaxTagLength = 128;

struct ModelName {
  std::string host;
  std::string name_space;  // `namespace` is a keyword
  std::string model;
  std::string tag;

  // `host/namespace/model:tag`, every part spelled out.
  std::string FullName() const;
  // The short form Ollama prints: `model:tag` for the default host and namespace,
  // `namespace/model:tag` for the default host, else the full name.
  std::string DisplayName() const;
  // `host/namespace/model/tag`: the manifest's path relative to `manifests/`.
  std::string ManifestPath() const;

  bool operator==(const ModelName&) const = default;
  auto operator<=>(const ModelName&) const = default;
};

// Parses `name`, `name:tag`, `namespace/name:tag` or `host/namespace/name:tag`.
// InvalidArgument, naming the problem, for an empty name or part, more than three `/`-parts,
// more than one tag separator (`a:b:c`), an absolute path, `..`, a part that starts with
// anything but a letter, digit or `_`, a character outside the allowed set, or a part longer
// than its limit (host 350, namespace 80, name 80, tag 128).
StatusOr<ModelName> ParseModelName(std::string_view text);

}  // namespace ferry::store

#endif  // FERRY_STORE_MODEL_NAME_H_
