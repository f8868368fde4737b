#include "cmd_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chat/go_template.h"
#include "cmd_client.h"
#include "store/model_name.h"
#include "store/modelfile.h"
#include "store/store.h"

namespace ferry::app {
namespace {

namespace fs = std::filesystem;

int Fail(const Status& s) {
  std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
  return 1;
}

// Ollama's format.HumanBytes: decimal units, one decimal below 10.
std::string HumanBytes(uint64_t b) {
  constexpr double kKilo = 1000.0;
  const char* unit = "B";
  double value = static_cast<double>(b);
  for (const char* u : {"KB", "MB", "GB", "TB"}) {
    if (value < kKilo) break;
    value /= kKilo;
    unit = u;
  }
  if (unit[0] == 'B') return fmt::format("{} B", b);
  if (value >= 10 || value == std::trunc(value)) {
    return fmt::format("{} {}", static_cast<int64_t>(value), unit);
  }
  return fmt::format("{:.1f} {}", value, unit);
}

// Ollama's format.HumanTime: "Less than a second ago", "5 minutes ago", "2 weeks ago".
std::string HumanTime(std::chrono::system_clock::time_point t) {
  using std::chrono::duration;
  const double secs = duration<double>(std::chrono::system_clock::now() - t).count();
  const bool future = secs < 0;
  const double d = std::abs(secs);
  std::string text;
  const int64_t seconds = static_cast<int64_t>(d);
  const int64_t minutes = static_cast<int64_t>(d / 60);
  const int64_t hours = static_cast<int64_t>(std::round(d / 3600));
  if (seconds < 1) {
    text = "Less than a second";
  } else if (seconds == 1) {
    text = "1 second";
  } else if (seconds < 60) {
    text = fmt::format("{} seconds", seconds);
  } else if (minutes == 1) {
    text = "About a minute";
  } else if (minutes < 60) {
    text = fmt::format("{} minutes", minutes);
  } else if (hours == 1) {
    text = "About an hour";
  } else if (hours < 48) {
    text = fmt::format("{} hours", hours);
  } else if (hours < 24 * 7 * 2) {
    text = fmt::format("{} days", hours / 24);
  } else if (hours < 24 * 30 * 2) {
    text = fmt::format("{} weeks", hours / 24 / 7);
  } else if (hours < 24 * 365 * 2) {
    text = fmt::format("{} months", hours / 24 / 30);
  } else {
    text = fmt::format("{} years", static_cast<int64_t>(d / 3600 / 24 / 365));
  }
  return text + (future ? " from now" : " ago");
}

struct ListRow {
  std::string name, id, size, modified, note;
  std::chrono::system_clock::time_point when;
};

int PrintList(std::vector<ListRow>& rows);

// The models of a running server's GET /api/tags, as `ferry list` rows.
std::vector<ListRow> ServerRows(const std::string& body) {
  std::vector<ListRow> rows;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("models") || !j["models"].is_array()) return rows;
  for (const auto& m : j["models"]) {
    if (!m.is_object()) continue;
    const std::string name = m.value("name", std::string());
    const std::string digest = m.value("digest", std::string());
    const uint64_t size = m.contains("size") && m["size"].is_number_unsigned()
                              ? m["size"].get<uint64_t>()
                              : 0;
    const double at = ParseRfc3339(m.value("modified_at", std::string())).value_or(0.0);
    const auto when = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::duration<double>(at)));
    rows.push_back({name, digest.empty() ? "-" : digest.substr(0, 12), HumanBytes(size),
                    HumanTime(when), "", when});
  }
  return rows;
}

int RunList(const Settings& settings) {
  std::vector<ListRow> rows;
  if (auto body = GetFromRunningServer(settings, "/api/tags")) {
    // A running server lists what it serves (Ollama's `list` asks its server).
    rows = ServerRows(*body);
    return PrintList(rows);
  }
  auto st = OpenStore(settings);
  if (!st.ok()) return Fail(st.status());
  auto entries = st->List();
  if (!entries.ok()) return Fail(entries.status());
  for (const store::StoreEntry& e : *entries) {
    const std::string_view hex = std::string_view(e.digest).substr(e.digest.find(':') + 1);
    rows.push_back({e.name.DisplayName(), std::string(hex.substr(0, 12)), HumanBytes(e.size),
                    HumanTime(e.modified), e.read_only ? "(Ollama's store, read-only)" : "",
                    e.modified});
  }
  for (const std::string& f : BareModelFiles(settings)) {
    std::error_code ec1, ec2;
    const uint64_t size = fs::file_size(f, ec1);
    const auto mtime = fs::last_write_time(f, ec2);
    if (ec1 || ec2) continue;
    const auto when = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
        std::chrono::file_clock::to_sys(mtime));
    rows.push_back(
        {fs::path(f).stem().string(), "-", HumanBytes(size), HumanTime(when), "(GGUF file)", when});
  }
  return PrintList(rows);
}

int PrintList(std::vector<ListRow>& rows) {
  // Newest first, as `ollama list`.
  std::stable_sort(rows.begin(), rows.end(),
                   [](const ListRow& a, const ListRow& b) { return a.when > b.when; });
  size_t wn = 4, wi = 2, ws = 4, wm = 8;
  for (const ListRow& r : rows) {
    wn = std::max(wn, r.name.size());
    wi = std::max(wi, r.id.size());
    ws = std::max(ws, r.size.size());
    wm = std::max(wm, r.modified.size());
  }
  auto line = [&](const std::string& n, const std::string& i, const std::string& s,
                  const std::string& m, const std::string& note) {
    std::string out = fmt::format("{:<{}}    {:<{}}    {:<{}}    {}", n, wn, i, wi, s, ws, m);
    if (!note.empty()) out += fmt::format("{:<{}}    {}", "", wm - m.size(), note);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::printf("%s\n", out.c_str());
  };
  line("NAME", "ID", "SIZE", "MODIFIED", "");
  for (const ListRow& r : rows) line(r.name, r.id, r.size, r.modified, r.note);
  return 0;
}

StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("{}: cannot read the Modelfile", path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return InvalidArgumentError("{}: read error", path);
  return ss.str();
}

Status Create(const Settings& settings, const StoreCommandOptions& o) {
  FERRY_ASSIGN_OR_RETURN(store::ModelName name, store::ParseModelName(o.name));
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadText(o.modelfile));
  auto parsed = store::ParseModelfile(text);
  if (!parsed.ok()) return parsed.status().WithPrefix(o.modelfile);
  const store::Modelfile& mf = *parsed;
  if (mf.extras.template_text) {
    // Unknown constructs fail now, not when a request renders the template.
    auto t = chat::GoTemplate::Parse(*mf.extras.template_text);
    if (!t.ok()) return t.status().WithPrefix(fmt::format("{}: TEMPLATE", o.modelfile));
  }
  // FROM: a file (relative to the working directory, else to the Modelfile's folder), a bare
  // GGUF in the models folder, or a stored model.
  std::string from = mf.from;
  std::error_code ec;
  if (!fs::path(from).is_absolute() && !fs::exists(from, ec)) {
    const fs::path beside = fs::path(o.modelfile).parent_path() / from;
    if (fs::is_regular_file(beside, ec)) from = beside.string();
  }
  auto found = FindModel(settings, from);
  if (!found.ok()) return found.status().WithPrefix(fmt::format("{}: FROM", o.modelfile));
  FERRY_ASSIGN_OR_RETURN(store::Store st, OpenStore(settings));
  StatusOr<store::ResolvedModel> created = found->stored
                                               ? st.CreateFrom(name, found->stored->name, mf.extras)
                                               : st.CreateFromGguf(name, found->path, mf.extras);
  FERRY_RETURN_IF_ERROR(created.status());
  std::printf("created %s\n", created->name.DisplayName().c_str());
  return Status::Ok();
}

Status Copy(const Settings& settings, const StoreCommandOptions& o) {
  FERRY_ASSIGN_OR_RETURN(store::ModelName src, store::ParseModelName(o.src));
  FERRY_ASSIGN_OR_RETURN(store::ModelName dst, store::ParseModelName(o.dst));
  FERRY_ASSIGN_OR_RETURN(store::Store st, OpenStore(settings));
  FERRY_RETURN_IF_ERROR(st.Copy(src, dst));
  std::printf("copied '%s' to '%s'\n", o.src.c_str(), o.dst.c_str());
  return Status::Ok();
}

Status Remove(const Settings& settings, const StoreCommandOptions& o) {
  FERRY_ASSIGN_OR_RETURN(store::Store st, OpenStore(settings));
  for (const std::string& text : o.names) {
    FERRY_ASSIGN_OR_RETURN(store::ModelName name, store::ParseModelName(text));
    Status s = st.Delete(name);
    if (s.code() == StatusCode::kNotFound) {
      std::error_code ec;
      const std::string file = settings.models_dir + "/" + text + ".gguf";
      if (fs::is_regular_file(file, ec)) {
        return NotFoundError(
            "\"{}\" is the GGUF file {}, not a stored model; ferry rm removes "
            "stored models only",
            text, file);
      }
    }
    FERRY_RETURN_IF_ERROR(s);
    std::printf("deleted '%s'\n", text.c_str());
  }
  return Status::Ok();
}

}  // namespace

void AddStoreCommands(CLI::App& app, StoreCommandOptions& o) {
  o.list = app.add_subcommand("list",
                              "List the models: the store, bare GGUF files in the models "
                              "folder, and Ollama's store (read-only)");
  o.list->alias("ls");
  o.create = app.add_subcommand("create", "Create a model in the store from a Modelfile");
  o.create->add_option("name", o.name, "The new model's name (name, name:tag, ns/name:tag)")
      ->required();
  o.create->add_option("-f,--file", o.modelfile, "The Modelfile (default: ./Modelfile)");
  o.cp = app.add_subcommand("cp", "Copy a model to a new name");
  o.cp->add_option("source", o.src, "Existing model")->required();
  o.cp->add_option("destination", o.dst, "New name")->required();
  o.rm = app.add_subcommand("rm", "Remove models from the store (and blobs no model uses)");
  o.rm->add_option("names", o.names, "Models to remove")->required();
}

bool RunStoreCommand(const Settings& settings, const StoreCommandOptions& o, int* exit_code) {
  if (o.list->parsed()) {
    *exit_code = RunList(settings);
  } else if (o.create->parsed()) {
    Status s = Create(settings, o);
    *exit_code = s.ok() ? 0 : Fail(s);
  } else if (o.cp->parsed()) {
    Status s = Copy(settings, o);
    *exit_code = s.ok() ? 0 : Fail(s);
  } else if (o.rm->parsed()) {
    Status s = Remove(settings, o);
    *exit_code = s.ok() ? 0 : Fail(s);
  } else {
    return false;
  }
  return true;
}

}  // namespace ferry::app
