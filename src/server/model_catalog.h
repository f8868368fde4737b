// ModelCatalog: the models the server knows (the *.gguf files of the models folder, named by
// file stem, then the models of the store: ferry's and the read-only Ollama store) and, per model,
// what the HTTP threads need to prepare a request: the tokenizer, the chat template and the
// metadata. It opens each file once (Model::Load maps it; no weight is read here: weights and KV
// belong to the runners the scheduler loads).
//
// Thread-safety: every method may be called from any thread (the HTTP threads, and the
// scheduler's thread through the resolver). Opened models are immutable and shared.
#ifndef FERRY_SERVER_MODEL_CATALOG_H_
#define FERRY_SERVER_MODEL_CATALOG_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "chat/chat_template.h"
#include "chat/go_template.h"
#include "model/model.h"
#include "model/model_info.h"
#include "planner/plan.h"
#include "store/store.h"
#include "tokenizer/tokenizer.h"

namespace ferry::server {

// One opened model. Immutable.
struct CatalogModel {
  std::string name;  // file stem, or the store name as asked for
  std::string path;
  std::unique_ptr<Model> model;  // metadata and the mapped file, for tokenizer and show
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  ModelInfo info;
  ModelShape shape;   // for /api/show's plan
  std::string jinja;  // tokenizer.chat_template, "" when the file has none
  // The chat template; nullopt when the file has none and its architecture has no default:
  // prompts are used as they are (Ollama's "{{ .Prompt }}").
  std::optional<chat::ChatTemplate> chat_template;
  // Set when the file has a template ferry does not recognise: chat and templated generate
  // fail with it (raw generate still works).
  Status template_error;
  // Set for a model of the store: its TEMPLATE, SYSTEM, PARAMETERs, MESSAGEs, LICENSEs.
  std::optional<store::ResolvedModel> stored;
  // The stored TEMPLATE, parsed (it then replaces chat_template).
  std::optional<chat::GoTemplate> go_template;
};

struct CatalogEntry {
  std::string name;  // file stem, or the store's display name ("x:latest")
  std::string path;
  uint64_t size = 0;
  std::chrono::system_clock::time_point modified;
  std::optional<store::StoreEntry> stored;  // set for a model of the store
};

// Where a name leads: a bare GGUF file, or a model of the store.
struct FoundModel {
  std::string path;  // the GGUF file
  std::optional<store::ResolvedModel> stored;
};

// The one model lookup of the CLI and the server: `name_or_path` is, in this order, an existing
// file path (only when `allow_paths`); `models_dir/NAME` or `models_dir/NAME.gguf`; a model of
// `st` (may be null: no store; the store checks blob digests on first use: DataLoss on a
// mismatch). InvalidArgument for a name that is neither a file nor a valid model name (or a
// path when !allow_paths); NotFound, in Ollama's words, otherwise.
StatusOr<FoundModel> FindModelIn(const std::string& models_dir, const store::Store* st,
                                 const std::string& name_or_path, bool allow_paths);

class ModelCatalog {
 public:
  // `store` (may be null) outlives the catalog.
  explicit ModelCatalog(std::string models_dir, store::Store* store = nullptr)
      : models_dir_(std::move(models_dir)), store_(store) {}

  const std::string& models_dir() const { return models_dir_; }
  store::Store* store() const { return store_; }

  // The GGUF path of model `name` (a normalized name: no ":latest"): models_dir/NAME.gguf, else
  // the store's model NAME. NotFound in Ollama's words ("model \"x\" not found, try pulling it
  // first"); a name that is no file and no valid model name is InvalidArgument.
  StatusOr<std::string> Resolve(std::string_view name) const;
  StatusOr<FoundModel> Find(std::string_view name) const;

  // The *.gguf files of the folder, sorted by name, then the store's models.
  std::vector<CatalogEntry> List() const;

  // Opens `name` once (cached by name and the stored model's digest) and returns it. Errors:
  // Resolve's, the file's.
  StatusOr<std::shared_ptr<const CatalogModel>> Open(std::string_view name);

 private:
  const std::string models_dir_;
  store::Store* const store_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const CatalogModel>> opened_ FERRY_GUARDED_BY(mu_);
};

}  // namespace ferry::server

#endif  // FERRY_SERVER_MODEL_CATALOG_H_
