#include "server/model_catalog.h"

#include <algorithm>
#include <filesystem>

#include "api/ollama.h"
#include "base/log.h"
#include "runtime/loader.h"

namespace ferry::server {

namespace fs = std::filesystem;

StatusOr<FoundModel> FindModelIn(const std::string& models_dir, const store::Store* st,
                                 const std::string& name, bool allow_paths) {
  std::error_code ec;
  if (name.empty()) return InvalidArgumentError("model: empty");
  if (name.find('\0') != std::string::npos) {
    return InvalidArgumentError("model: \"{}\" is not a valid model name", name);
  }
  if (allow_paths && fs::is_regular_file(name, ec)) return FoundModel{name, std::nullopt};
  const bool looks_like_path = name.find('/') != std::string::npos ||
                               name.find('\\') != std::string::npos || name == "." || name == "..";
  if (!looks_like_path) {
    for (const std::string& candidate :
         {models_dir + "/" + name + ".gguf", models_dir + "/" + name}) {
      if (fs::is_regular_file(candidate, ec)) return FoundModel{candidate, std::nullopt};
    }
  }
  auto parsed = store::ParseModelName(name);
  if (!parsed.ok()) {
    if (allow_paths && looks_like_path) {
      return NotFoundError("{}: no such file, and not a model name ({})", name,
                           parsed.status().message());
    }
    return InvalidArgumentError("model: \"{}\" is not a valid model name ({})", name,
                                parsed.status().message());
  }
  if (st != nullptr) {
    auto resolved = st->Resolve(*parsed);
    if (resolved.ok()) {
      std::string path = resolved->model_path;
      return FoundModel{std::move(path), std::move(*resolved)};
    }
    if (resolved.status().code() != StatusCode::kNotFound) return resolved.status();
  }
  return NotFoundError("{}", api::ModelNotFoundMessage(name));
}

StatusOr<FoundModel> ModelCatalog::Find(std::string_view name) const {
  return FindModelIn(models_dir_, store_, std::string(name), /*allow_paths=*/false);
}

StatusOr<std::string> ModelCatalog::Resolve(std::string_view name) const {
  FERRY_ASSIGN_OR_RETURN(FoundModel found, Find(name));
  return std::move(found.path);
}

std::vector<CatalogEntry> ModelCatalog::List() const {
  std::vector<CatalogEntry> out;
  std::error_code ec;
  for (fs::directory_iterator it(models_dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != ".gguf") continue;
    std::error_code e2;
    if (!fs::is_regular_file(p, e2)) continue;  // follows symlinks
    CatalogEntry entry;
    entry.name = p.stem().string();
    entry.path = p.string();
    entry.size = fs::file_size(p, e2);
    auto mtime = fs::last_write_time(p, e2);
    if (!e2) {
      entry.modified = std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           mtime - fs::file_time_type::clock::now());
    }
    out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(),
            [](const CatalogEntry& a, const CatalogEntry& b) { return a.name < b.name; });
  if (store_ != nullptr) {
    auto listed = store_->List();
    if (!listed.ok()) {
      log::Warn("the model store: {}", listed.status().message());
      return out;
    }
    for (store::StoreEntry& e : *listed) {
      CatalogEntry entry;
      entry.name = e.name.DisplayName();
      entry.path = e.model_path;
      entry.size = e.size;
      entry.modified = e.modified;
      entry.stored = std::move(e);
      out.push_back(std::move(entry));
    }
  }
  return out;
}

StatusOr<std::shared_ptr<const CatalogModel>> ModelCatalog::Open(std::string_view name) {
  FERRY_ASSIGN_OR_RETURN(FoundModel found, Find(name));
  const std::string path = found.path;
  // A stored model is keyed by its manifest's digest too: create/copy may change what a name
  // means while the server runs.
  const std::string key = std::string(name) + "\n" +
                          (found.stored ? found.stored->digest : std::string()) + "\n" + path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = opened_.find(key);
    if (it != opened_.end()) return it->second;
  }
  // Opened without the lock: two threads may open the same file at once; the first stored wins.
  FERRY_ASSIGN_OR_RETURN(ModelFiles files, OpenModelFiles(path));
  auto m = std::make_shared<CatalogModel>();
  m->name = std::string(name);
  m->path = path;
  FERRY_ASSIGN_OR_RETURN(m->info, ReadModelInfo(files.model->file()));
  m->shape = ShapeFromModel(*files.model);
  if (const gguf::Value* v = files.model->file().Find("tokenizer.chat_template")) {
    if (auto s = v->AsString(); s.ok()) m->jinja = std::string(*s);
  }
  auto t = chat::ChatTemplate::Detect(m->jinja, files.model->hparams().arch,
                                      files.tokenizer->vocab().Find("<|start_header_id|>") >= 0);
  if (t.ok()) {
    m->chat_template = *t;
  } else if (!m->jinja.empty()) {
    m->template_error = t.status();
  }
  if (found.stored && found.stored->extras.template_text) {
    auto go = chat::GoTemplate::Parse(*found.stored->extras.template_text);
    if (go.ok()) {
      m->go_template = std::move(*go);
      m->template_error = Status::Ok();
    } else {
      m->template_error = go.status().WithPrefix("the model's TEMPLATE");
    }
  }
  m->stored = std::move(found.stored);
  m->model = std::move(files.model);
  m->tokenizer = std::move(files.tokenizer);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = opened_.emplace(key, std::move(m));
  return it->second;
}

}  // namespace ferry::server
