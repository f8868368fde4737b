#include "server/model_catalog.h"

#include <algorithm>
#include <filesystem>

#include "api/ollama.h"
#include "runtime/loader.h"

namespace ferry::server {

namespace fs = std::filesystem;

StatusOr<std::string> ModelCatalog::Resolve(std::string_view name) const {
  if (name.empty()) return InvalidArgumentError("model: empty");
  if (name.find('/') != std::string_view::npos || name.find('\\') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos || name == "." || name == "..") {
    return InvalidArgumentError("model: \"{}\" is not a valid model name", name);
  }
  std::error_code ec;
  const std::string path = models_dir_ + "/" + std::string(name) + ".gguf";
  if (fs::is_regular_file(path, ec)) return path;
  return NotFoundError("{}", api::ModelNotFoundMessage(name));
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
  return out;
}

StatusOr<std::shared_ptr<const CatalogModel>> ModelCatalog::Open(std::string_view name) {
  FERRY_ASSIGN_OR_RETURN(std::string path, Resolve(name));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = opened_.find(path);
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
  m->model = std::move(files.model);
  m->tokenizer = std::move(files.tokenizer);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = opened_.emplace(path, std::move(m));
  return it->second;
}

}  // namespace ferry::server
