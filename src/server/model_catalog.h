// ModelCatalog: the models the server knows (the *.gguf files of the models folder, named by
// file stem) and, per model, what the HTTP threads need to prepare a request: the tokenizer, the
// chat template and the metadata. It opens each file once (Model::Load maps it; no weight is
// read here: weights and KV belong to the runners the scheduler loads).
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
#include "model/model.h"
#include "model/model_info.h"
#include "planner/plan.h"
#include "tokenizer/tokenizer.h"

namespace ferry::server {

// One opened model. Immutable.
struct CatalogModel {
  std::string name;  // file stem
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
};

struct CatalogEntry {
  std::string name;  // file stem
  std::string path;
  uint64_t size = 0;
  std::chrono::system_clock::time_point modified;
};

class ModelCatalog {
 public:
  explicit ModelCatalog(std::string models_dir) : models_dir_(std::move(models_dir)) {}

  const std::string& models_dir() const { return models_dir_; }

  // The path of model `name` (a normalized name: no ":latest"): models_dir/NAME.gguf.
  // NotFound in Ollama's words ("model \"x\" not found, try pulling it first"); a name that
  // could leave the folder ('/', "..", a NUL) is InvalidArgument.
  StatusOr<std::string> Resolve(std::string_view name) const;

  // The *.gguf files of the folder, sorted by name.
  std::vector<CatalogEntry> List() const;

  // Opens `name` once (cached by path) and returns it. Errors: Resolve's, the file's.
  StatusOr<std::shared_ptr<const CatalogModel>> Open(std::string_view name);

 private:
  const std::string models_dir_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const CatalogModel>> opened_ FERRY_GUARDED_BY(mu_);
};

}  // namespace ferry::server

#endif  // FERRY_SERVER_MODEL_CATALOG_H_
